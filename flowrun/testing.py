"""`flowrun test`: tests that live next to flows (`<flow>.test.yaml`).

A test file:

    tests:
      - name: reminder, then the order converts
        start: 2026-03-02T10:00:00Z          # optional
        until: 3d                            # optional: stop the clock here
        timeline:
          - {at: 0s, event: ../examples/events/shopify/checkouts-create.json, source: shopify, topic: checkouts/create}
          - at: 3h
            event: {type: order.created, data: {customer: {email: a@example.com}, order: {total_price: 80}}}
        expect:
          - flow: abandoned-checkout
            status: converted
            actions:
              - {at: 1h, type: email, params: {subject: "You left something behind, Ada"}}

`params` and `result` (the action's simulated answer) are subset matches; `actions` must
match in count and order; `at` is an offset.
Runs of flows the expectation does not name are ignored, unless the case says
`exhaustive: true`; extra runs of a named flow always count as differences.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowrun.dryrun.report import as_json
from flowrun.dryrun.session import load_all_flows, parse_start, simulate
from flowrun.dryrun.timeline import parse_entries, resolve_at
from flowrun.durations import DurationSyntaxError, format_duration, parse_duration
from flowrun.errors import EventFileError, FlowrunError, UsageError
from flowrun.flow.loader import TEST_SUFFIXES
from flowrun.jsonout import plain
from flowrun.yamlsource import YamlSyntaxError, load_document


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


def run_tests(paths: Iterable[Path]) -> Outcome:
    outcome = Outcome()
    flow_cache: dict[Path, list[Any]] = {}
    for test_file in discover_tests(paths):
        folder = test_file.parent
        if folder not in flow_cache:
            flow_cache[folder] = load_all_flows([folder])
        outcome.cases.extend(run_file(test_file, flow_cache[folder]))
    return outcome


def run_file(test_file: Path, flows: list[Any]) -> list[CaseResult]:
    try:
        doc = load_document(test_file.read_text(encoding="utf-8"), str(test_file))
    except YamlSyntaxError as exc:
        raise EventFileError([exc.problem]) from None
    cases = doc.data.get("tests") if isinstance(doc.data, dict) else None
    if not isinstance(cases, list):
        raise EventFileError([doc.problem((), "a test file needs `tests:`, a list of cases")])
    results = []
    for i, case in enumerate(cases):
        name = str(case.get("name", f"case {i + 1}"))
        result = CaseResult(str(test_file), name)
        try:
            start = parse_start(str(case["start"]) if case.get("start") else None)
            scheduled = parse_entries(case.get("timeline", []), doc, test_file.parent, start, ("tests", i, "timeline"))
            until = resolve_at(case["until"], start) if case.get("until") else None
            played = as_json(simulate(flows, scheduled, start, until))
            result.diff = compare(case.get("expect", []), played["runs"], exhaustive=bool(case.get("exhaustive")))
        except FlowrunError as exc:
            result.diff = [f"error: {exc}"]
        results.append(result)
    return results


def compare(expected: list[Mapping[str, Any]], runs: list[dict[str, Any]], *, exhaustive: bool = False) -> list[str]:
    """Lines describing each difference; empty when the runs match the expectation."""
    diff: list[str] = []
    named = {e["flow"] for e in expected}
    if exhaustive:
        for flow_id in sorted({r["flow"] for r in runs} - named):
            diff.append(f"+ unexpected run of {flow_id} ({_statuses(runs, flow_id)})")
    remaining = [r for r in runs if r["flow"] in named]
    for want in expected:
        match = next((r for r in remaining if r["flow"] == want["flow"]), None)
        if match is None:
            diff.append(f"- expected a run of {want['flow']}, none started")
            continue
        remaining.remove(match)
        label = f"{want['flow']}"
        if "status" in want and want["status"] != match["status"]:
            diff.append(f"  {label}: status")
            diff.append(f"-   {want['status']}")
            diff.append(f"+   {match['status']}  ({match['reason']})" if match["reason"] else f"+   {match['status']}")
        if "reason" in want and str(want["reason"]) not in match["reason"]:
            diff.append(f"  {label}: reason should contain {want['reason']!r}, was {match['reason']!r}")
        if "actions" in want:
            diff.extend(_compare_actions(label, want["actions"], match["actions"], match["steps"]))
    for extra in remaining:
        diff.append(
            f"+ unexpected extra run of {extra['flow']} ({extra['status']}, trigger {extra['trigger']['type']})"
        )
    return diff


def _compare_actions(
    label: str, want: list[Mapping[str, Any]], got: list[dict[str, Any]], steps: list[dict[str, Any]]
) -> list[str]:
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
        if "type" in w and w["type"] != g["type"]:
            problems.append(f"type: expected {w['type']}, got {g['type']}")
        if "at" in w:
            try:
                due = int(parse_duration(str(w["at"])).total_seconds())
            except DurationSyntaxError:
                due = None
            if due != g["offset_s"]:
                problems.append(f"at: expected +{w['at']}, got +{format_duration(_seconds(g['offset_s']))}")
        for part in ("params", "result"):
            for key, value in (w.get(part) or {}).items():
                actual = (g.get(part) or {}).get(key, "<absent>")
                if plain(value) != actual:
                    problems.append(f"{part}.{key}: expected {value!r}, got {actual!r}")
        if problems:
            diff.append(f"  {label} action {index + 1} ({g['type']} at +{format_duration(_seconds(g['offset_s']))}):")
            diff.extend(f"    {p}" for p in problems)
    return diff


def _seconds(value: int) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)


def _describe(action: dict[str, Any]) -> str:
    return f"{action['type']} at +{format_duration(_seconds(action['offset_s']))}"


def _describe_expected(action: Mapping[str, Any]) -> str:
    return f"{action.get('type', '?')} at +{action.get('at', '?')}"


def _statuses(runs: list[dict[str, Any]], flow_id: str) -> str:
    return ", ".join(r["status"] for r in runs if r["flow"] == flow_id)
