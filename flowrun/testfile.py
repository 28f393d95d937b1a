"""The `*.test.yaml` format: its schema (published as schemas/flow-test.schema.json) and
its parsed form. A key the schema does not have (`expected:` for `expect:`) is an error,
never a case that passes without checking anything."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from flowrun.dryrun.stubs import STUB_SCHEMA, Stub, parse_stubs
from flowrun.dryrun.timeline import OFFSET, TIMELINE_ENTRY
from flowrun.errors import EventFileError, Problem, YamlPath
from flowrun.flow.diagnose import explain
from flowrun.yamlsource import Document, read_document

SCHEMA_ID = "https://flowrun.dev/schemas/flow-test.schema.json"
STATUSES = ["completed", "converted", "skipped", "failed", "waiting", "cancelled"]
EXPECTED_ACTION: dict[str, Any] = {
    "type": "object",
    "description": "one action of the run, in order",
    "properties": {
        "at": OFFSET,
        "type": {"type": "string", "description": "the action type: email, sms, http, ..."},
        "step": {"type": "string", "description": "the step's `name:` (or its path, steps[0])"},
        "params": {"type": "object", "description": "rendered parameters: each one given must match"},
        "result": {"type": "object", "description": "the step's result: each field given must match"},
    },
    "additionalProperties": False,
}
EXPECTED_RUN: dict[str, Any] = {
    "type": "object",
    "properties": {
        "flow": {"type": "string"},
        "status": {"enum": STATUSES},
        "reason": {"type": "string", "description": "text the run's reason must contain"},
        "actions": {"type": "array", "items": {"$ref": "#/$defs/expected_action"}},
    },
    "required": ["flow"],
    "additionalProperties": False,
}
CASE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "start": {"type": "string", "description": "the simulated start (ISO 8601); default 2026-01-05T09:00Z"},
        "until": {**OFFSET, "description": "stop the clock here; runs left show `waiting`"},
        "timeline": {"type": "array", "items": {"$ref": "#/$defs/timeline_entry"}},
        "stubs": {"type": "array", "items": {"$ref": "#/$defs/stub"}},
        "expect": {"type": "array", "items": {"$ref": "#/$defs/expected_run"}},
        "exhaustive": {"type": "boolean", "description": "runs of flows `expect` does not name are differences too"},
    },
    "required": ["name", "expect"],
    "additionalProperties": False,
}


@lru_cache(maxsize=1)
def test_file_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "flowrun flow tests",
        "description": "Cases for `flowrun test`: events on a simulated clock and the runs expected.",
        "type": "object",
        "properties": {"tests": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/case"}}},
        "required": ["tests"],
        "additionalProperties": False,
        "$defs": {
            "case": CASE,
            "timeline_entry": TIMELINE_ENTRY,
            "stub": STUB_SCHEMA,
            "expected_run": EXPECTED_RUN,
            "expected_action": EXPECTED_ACTION,
        },
    }


@dataclass(frozen=True)
class ExpectedAction:
    at: str | None
    type: str | None
    step: str | None
    params: Mapping[str, Any]
    result: Mapping[str, Any]


@dataclass(frozen=True)
class ExpectedRun:
    flow: str
    status: str | None
    reason: str | None
    actions: tuple[ExpectedAction, ...] | None


@dataclass(frozen=True)
class TestCase:
    name: str
    path: YamlPath
    start: str | None
    until: str | None
    timeline: tuple[Any, ...]  # entries, parsed against the clock when the case runs
    stubs: tuple[Stub, ...]
    expect: tuple[ExpectedRun, ...]
    exhaustive: bool


@dataclass(frozen=True)
class TestFile:
    path: Path
    doc: Document
    cases: tuple[TestCase, ...]


def schema_problems(data: Any, doc: Document) -> list[Problem]:
    schema = test_file_schema()
    findings = [f for error in Draft202012Validator(schema).iter_errors(data) for f in explain(error, schema)]
    # `expected:` for `expect:` is one mistake: the unknown key says it, not also the missing one.
    suggested = {(path[:-1], hint) for path, message, hint, _ in findings if message.startswith("unknown key")}
    found = {
        doc.problem(path, message, hint, key=at_key)
        for path, message, hint, at_key in findings
        if not (
            message.startswith("missing required key")
            and any(p == path and f"did you mean {message.split()[-1]}" in h for p, h in suggested)
        )
    }
    return sorted(found, key=lambda p: (p.line, p.column, p.message))


def load_test_file(path: Path) -> TestFile:
    """Read, schema-check and parse one test file; EventFileError carries every problem."""
    doc = read_document(path, "test file", EventFileError)
    problems = schema_problems(doc.data, doc)
    if problems:
        raise EventFileError(problems)
    cases = tuple(_case(case, ("tests", i)) for i, case in enumerate(doc.data["tests"]))
    return TestFile(path, doc, cases)


def _case(case: Mapping[str, Any], path: YamlPath) -> TestCase:
    return TestCase(
        name=str(case["name"]),
        path=path,
        start=str(case["start"]) if case.get("start") is not None else None,
        until=str(case["until"]) if case.get("until") is not None else None,
        timeline=tuple(case.get("timeline", ())),
        stubs=parse_stubs(case.get("stubs", ())),
        expect=tuple(_run(run) for run in case["expect"]),
        exhaustive=bool(case.get("exhaustive", False)),
    )


def _run(run: Mapping[str, Any]) -> ExpectedRun:
    actions = run.get("actions")
    return ExpectedRun(
        flow=str(run["flow"]),
        status=run.get("status"),
        reason=str(run["reason"]) if run.get("reason") is not None else None,
        actions=tuple(_action(a) for a in actions) if actions is not None else None,
    )


def _action(action: Mapping[str, Any]) -> ExpectedAction:
    return ExpectedAction(
        at=str(action["at"]) if action.get("at") is not None else None,
        type=action.get("type"),
        step=action.get("step"),
        params=dict(action.get("params") or {}),
        result=dict(action.get("result") or {}),
    )
