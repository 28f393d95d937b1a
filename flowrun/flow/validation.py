"""Schema checking of a flow document, one step at a time.

The document is checked with steps treated as plain objects; each step is then checked
against the schema of its own kind only (found by its key: `email`, `wait`, ...). This
is several times faster than letting jsonschema try every kind through `anyOf`, and
every error is reported in the branch the author meant.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator

from flowrun.errors import YamlPath
from flowrun.flow.diagnose import Finding, explain
from flowrun.flow.schema import STEP_KEYS, Schema, flow_schema, step_kinds

NESTED_LISTS = ("then", "else", "otherwise")
NESTED_OPTIONS = ("choose", "split")


@lru_cache(maxsize=1)
def shallow_schema() -> Schema:
    published = flow_schema()
    return {**published, "$defs": {**published["$defs"], "step": {"type": "object"}}}


@lru_cache(maxsize=1)
def _document_validator() -> Draft202012Validator:
    return Draft202012Validator(shallow_schema())


@lru_cache(maxsize=64)
def _kind_validator(kind: str) -> Draft202012Validator:
    root = shallow_schema()
    return Draft202012Validator({**root["$defs"][f"step.{kind}"], "$defs": root["$defs"]})


def check(data: Any) -> list[Finding]:
    findings: list[Finding] = []
    root = shallow_schema()
    for error in _document_validator().iter_errors(data):
        findings.extend(explain(error, root))
    if isinstance(data, dict):
        for path, step in _steps(data.get("steps"), ("steps",)):
            findings.extend(_check_step(step, path, root))
    return findings


def _check_step(step: dict[str, Any], path: YamlPath, root: Schema) -> Iterator[Finding]:
    kinds = [key for key in step if key in step_kinds()]
    if not kinds:
        unknown = [key for key in step if key not in ("name", "as", "on_error", "retry", "timeout", "then", "else")]
        close = next((c for k in unknown for c in difflib.get_close_matches(k, step_kinds(), n=1, cutoff=0.6)), None)
        hint = f"did you mean {close!r}?" if close else f"found: {', '.join(step) or 'an empty step'}"
        yield path, f"expected one of the keys: {', '.join(sorted(step_kinds()))}", hint, False
        return
    if len(kinds) > 1:
        yield (
            path,
            f"a step does one thing, but this one has {' and '.join(kinds)}",
            "split it into separate list items",
            False,
        )
    kind = kinds[0]
    for error in _kind_validator(kind).iter_errors(step):
        for found_path, message, hint, at_key in explain(error, root):
            misplaced = found_path[-1] if len(found_path) == 2 and found_path[0] == kind else None
            if misplaced in STEP_KEYS and message.startswith("unknown key"):
                message = f"`{misplaced}` belongs on the step, not inside `{kind}:`"
                hint = f"move it out one level, beside `{kind}:` (e.g. `- {misplaced}: ...` then `  {kind}: ...`)"
            yield (*path, *found_path), message, hint, at_key


def _steps(items: Any, path: YamlPath) -> Iterator[tuple[YamlPath, dict[str, Any]]]:
    if not isinstance(items, list):
        return
    for i, step in enumerate(items):
        if not isinstance(step, dict):
            continue
        here = (*path, i)
        yield here, step
        for key in NESTED_LISTS:
            yield from _steps(step.get(key), (*here, key))
        for key in NESTED_OPTIONS:
            options = step.get(key)
            if isinstance(options, list):
                for j, option in enumerate(options):
                    if isinstance(option, dict):
                        yield from _steps(option.get("steps"), (*here, key, j, "steps"))
