"""`flowrun test`: tests that live next to flows (`<flow>.test.yaml`).

A test file (its schema: schemas/flow-test.schema.json, checked by `flowrun validate`):

    tests:
      - name: reminder, then the order converts
        start: 2026-03-02T10:00:00Z          # optional
        until: 3d                            # optional: stop the clock here
        timeline:
          - {at: 0s, event: ../examples/events/shopify/checkouts/create.json, source: shopify, topic: checkouts/create}
          - at: 3h
            event: {type: order.created, data: {customer: {email: a@example.com}, order: {total_price: 80}}}
        stubs:                               # optional: results instead of the providers' answers
          - {step: fetch-preset, result: {json: {preset: square}}}
          - {action: http, result: {status: 200}}
        expect:
          - flow: abandoned-checkout
            status: converted
            actions:
              - {at: 1h, type: email, params: {subject: "You left something behind, Ada"}}
              - {step: fetch-preset, result: {json: {preset: square}}}

`params` and `result` (the step's answer: stubbed, else simulated) match on the keys
given, at any depth (lists must be equal);
`step` is the step's `name:` (or its path); `actions` must match in count and order; `at`
is an offset. Runs of flows the expectation does not name are ignored, unless the case
says `exhaustive: true`; extra runs of a named flow always count as differences.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowrun.dryrun.report import as_json
from flowrun.dryrun.session import Derive, load_all_flows, parse_start, simulate, with_segments
from flowrun.dryrun.stubs import check_stub
from flowrun.dryrun.timeline import parse_entries, resolve_at
from flowrun.durations import DurationSyntaxError, format_duration, parse_duration
from flowrun.errors import EventFileError, FlowrunError, Problem, UsageError
from flowrun.flow.loader import TEST_SUFFIXES
from flowrun.flow.model import Flow
from flowrun.jsonout import plain
from flowrun.templating import DEFAULT_LOCALE
from flowrun.testfile import ExpectedAction, ExpectedRun, TestCase, TestFile, load_test_file


@dataclass
class CaseResult:
    file: str
    name: str
    diff: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.diff


@dataclass
class Outcome:
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def failed(self) -> int:
        return len(self.cases) - self.passed


def discover_tests(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if p.name.endswith(TEST_SUFFIXES))
        elif path.name.endswith(TEST_SUFFIXES):
            found.append(path)
        else:
            raise UsageError(f"{path} is not a test file (*.test.yaml) or a folder")
    return found


def run_tests(paths: Iterable[Path], derive: Derive | None = None) -> Outcome:
    """`derive`: the project's settings (locale, derivations, guardrails), as dry-run -c takes them."""
    outcome = Outcome()
    flow_cache: dict[Path, list[Flow]] = {}
    for test_file in discover_tests(paths):
        folder = test_file.parent
        if folder not in flow_cache:
            flow_cache[folder] = load_all_flows([folder], locale=derive.locale if derive else DEFAULT_LOCALE)
        outcome.cases.extend(run_file(test_file, flow_cache[folder], with_segments(derive, [folder])))
    return outcome


def reference_problems(test: TestFile, flows: Sequence[Flow]) -> list[Problem]:
    """Names in a test file that point at nothing: a flow `expect` names, a stubbed step."""
    found = []
    flow_ids = {f.id for f in flows}
    for case in test.cases:
        for i, stub in enumerate(case.stubs):
            for where, message, hint in check_stub(stub, flows, (*case.path, "stubs", i)):
                found.append(test.doc.problem(where, message, hint))
        for j, run in enumerate(case.expect):
            if run.flow not in flow_ids:
                from flowrun.flow.diagnose import suggest

                hint = suggest(run.flow, sorted(flow_ids)) or f"flows here: {', '.join(sorted(flow_ids))}"
                found.append(test.doc.problem((*case.path, "expect", j, "flow"), f"no flow {run.flow!r}", hint))
    return found


def run_file(test_file: Path, flows: list[Flow], derive: Derive | None = None) -> list[CaseResult]:
    test = load_test_file(test_file)
    problems = reference_problems(test, flows)
    if problems:
        raise EventFileError(problems)
    return [_run_case(test, case, flows, derive) for case in test.cases]


def _run_case(test: TestFile, case: TestCase, flows: list[Flow], derive: Derive | None) -> CaseResult:
    result = CaseResult(str(test.path), case.name)
    try:
        start = parse_start(case.start)
        scheduled = parse_entries(list(case.timeline), test.doc, test.path.parent, start, (*case.path, "timeline"))
        until = resolve_at(case.until, start) if case.until is not None else None
        if case.until is not None and until is None:
            raise EventFileError(
                [test.doc.problem((*case.path, "until"), f"{case.until!r} is neither an offset nor an ISO time")]
            )
        played = as_json(simulate(flows, scheduled, start, until, derive, case.stubs), flows, scheduled)
        result.diff = compare(case.expect, played["runs"], exhaustive=case.exhaustive)
    except FlowrunError as exc:
        result.diff = [f"error: {exc}"]
    return result


def compare(expected: Sequence[ExpectedRun], runs: list[dict[str, Any]], *, exhaustive: bool = False) -> list[str]:
    """Lines describing each difference; empty when the runs match the expectation."""
    diff: list[str] = []
    named = {e.flow for e in expected}
    if exhaustive:
        for flow_id in sorted({r["flow"] for r in runs} - named):
            diff.append(f"+ unexpected run of {flow_id} ({_statuses(runs, flow_id)})")
    remaining = [r for r in runs if r["flow"] in named]
    for want in expected:
        match = next((r for r in remaining if r["flow"] == want.flow), None)
        if match is None:
            diff.append(f"- expected a run of {want.flow}, none started")
            continue
        remaining.remove(match)
        label = want.flow
        if want.status is not None and want.status != match["status"]:
            diff.append(f"  {label}: status")
            diff.append(f"-   {want.status}")
            diff.append(f"+   {match['status']}  ({match['reason']})" if match["reason"] else f"+   {match['status']}")
        if want.reason is not None and want.reason not in match["reason"]:
            diff.append(f"  {label}: reason should contain {want.reason!r}, was {match['reason']!r}")
        if want.actions is not None:
            diff.extend(_compare_actions(label, want.actions, match["actions"]))
    for extra in remaining:
        diff.append(
            f"+ unexpected extra run of {extra['flow']} ({extra['status']}, trigger {extra['trigger']['type']})"
        )
    return diff


def _compare_actions(label: str, want: Sequence[ExpectedAction], got: list[dict[str, Any]]) -> list[str]:
    diff: list[str] = []
    for index in range(max(len(want), len(got))):
        w = want[index] if index < len(want) else None
        g = got[index] if index < len(got) else None
        if w is None and g is not None:
            diff.append(f"+ {label} action {index + 1}: {_describe(g)}  (not expected)")
            continue
        if g is None and w is not None:
            diff.append(f"- {label} action {index + 1}: {_describe_expected(w)}  (never happened)")
            continue
        assert w is not None and g is not None
        problems = []
        if w.type is not None and w.type != g["type"]:
            problems.append(f"type: expected {w.type}, got {g['type']}")
        if w.step is not None and w.step not in (g.get("name"), g["step"]):
            problems.append(f"step: expected {w.step}, got {g.get('name') or g['step']}")
        if w.at is not None:
            try:
                due: int | None = int(parse_duration(w.at).total_seconds())
            except DurationSyntaxError:
                due = None
            if due != g["offset_s"]:
                problems.append(f"at: expected +{w.at}, got +{format_duration(_seconds(g['offset_s']))}")
        for part, wanted in (("params", w.params), ("result", w.result)):
            for key, value in wanted.items():
                actual = (g.get(part) or {}).get(key, "<absent>")
                if not _matches(plain(value), actual):
                    problems.append(f"{part}.{key}: expected {value!r}, got {actual!r}")
        if problems:
            diff.append(f"  {label} action {index + 1} ({g['type']} at +{format_duration(_seconds(g['offset_s']))}):")
            diff.extend(f"    {p}" for p in problems)
    return diff


def _matches(wanted: Any, actual: Any) -> bool:
    """Objects match on the keys given (at any depth); everything else must be equal."""
    if isinstance(wanted, dict) and isinstance(actual, dict):
        return all(k in actual and _matches(v, actual[k]) for k, v in wanted.items())
    return bool(wanted == actual)


def _seconds(value: int) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)


def _describe(action: dict[str, Any]) -> str:
    return f"{action['type']} at +{format_duration(_seconds(action['offset_s']))}"


def _describe_expected(action: ExpectedAction) -> str:
    return f"{action.type or action.step or '?'} at +{action.at or '?'}"


def _statuses(runs: list[dict[str, Any]], flow_id: str) -> str:
    return ", ".join(r["status"] for r in runs if r["flow"] == flow_id)
