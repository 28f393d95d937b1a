"""Turn jsonschema errors into one clear sentence and a fix each."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match

from flowrun.durations import DURATION_HINT, DURATION_PATTERN
from flowrun.flow.shapes import as_object, duration_from_words

EXPRESSION_MARK = "x-flowrun-expression"  # the branch of a typed parameter that takes one whole {{ expression }}
_TYPED_HINT = "a whole {{ expression }} is taken here too, when its value has that type"
_JSON_TYPES = {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer", float: "number"}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in _JSON_TYPES.items():
        if isinstance(value, kind):
            return name
    return "number"


def _type_matches(schema: dict[str, Any], value: Any) -> bool:
    expected = schema.get("type")
    if expected is None:
        return "enum" not in schema or isinstance(value, str)
    kinds = expected if isinstance(expected, list) else [expected]
    actual = json_type(value)
    return actual in kinds or (actual == "integer" and "number" in kinds)


def _resolve(root: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema and schema["$ref"].startswith("#/$defs/"):
        schema = root["$defs"][schema["$ref"].removeprefix("#/$defs/")]
    return schema


def suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


Finding = tuple[tuple[Any, ...], str, str, bool]


def explain(error: ValidationError, root: dict[str, Any]) -> Iterator[Finding]:
    """Yield (path, message, hint, at_key) for one error, looking inside anyOf branches."""
    path = tuple(error.absolute_path)
    kind, schema, value = error.validator, error.schema, error.instance
    if kind in ("anyOf", "oneOf") and isinstance(schema, dict):
        branches = [_resolve(root, b) for b in schema[kind]]
        yield from _explain_branches(error, branches, root, path)
    elif kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        for key in sorted(set(value) - set(allowed)):
            hint = suggest(key, allowed) or f"allowed here: {', '.join(allowed)}"
            yield (*path, key), f"unknown key {key!r}", hint, True
    elif kind == "required":
        missing = error.validator_value
        names = [m for m in missing if m not in value]
        yield path, f"missing required key {names[0]!r}" if names else error.message, "", False
    elif kind == "type":
        expected = schema.get("type")
        shape = as_object(str(path[-1]), value, schema) if expected == "object" and path else None
        if shape is not None:
            yield path, f"`{path[-1]}` takes an object, not {_article(json_type(value))}", f"write `{shape}`", False
        else:
            yield path, f"expected {_article(expected)}, got {_article(json_type(value))}", "", False
    elif kind == "enum":
        options = [str(o) for o in error.validator_value]
        hint = suggest(str(value), options) or f"one of: {', '.join(options)}"
        yield path, f"{value!r} is not allowed here", hint, False
    elif kind == "pattern" and error.validator_value == DURATION_PATTERN:
        words = duration_from_words(str(value))
        yield path, f"{value!r} is not a duration", f"write {words}" if words else DURATION_HINT, False
    elif kind == "pattern":
        yield path, f"{value!r} has the wrong form", _pattern_hint(schema), False
    else:
        yield path, error.message, "", False


def _explain_branches(
    error: ValidationError, branches: list[dict[str, Any]], root: dict[str, Any], path: tuple[Any, ...]
) -> Iterator[Finding]:
    value = error.instance
    duration = next((b for b in branches if b.get("pattern") == DURATION_PATTERN), None)
    if duration is not None and isinstance(value, str):
        words = duration_from_words(value)
        others = [str(o) for b in branches for o in b.get("enum", ())]
        also = f" (or one of: {', '.join(others)})" if others else ""
        close = suggest(value, others)
        hint = f"write {words}" if words else close or DURATION_HINT + also
        message = f"{value!r} is neither a duration nor one of: {', '.join(others)}" if others else ""
        yield path, message or f"{value!r} is not a duration", hint, False
        return
    if any(b.get(EXPRESSION_MARK) for b in branches):
        if isinstance(value, str) and "{{" in value:
            yield (
                path,
                "a template here must be one whole {{ expression }} (its value keeps its type)",
                "remove the text around the {{ }}, or compute the value in one expression",
                False,
            )
            return
        branches = [b for b in branches if not b.get(EXPRESSION_MARK)]
        if len(branches) == 1:
            for sub_error in _validator_for(root, branches[0]).iter_errors(value):
                for found_path, message, hint, at_key in explain(sub_error, root):
                    yield (*path, *found_path), message, hint or _TYPED_HINT, at_key
            return
    fitting = [b for b in branches if _type_matches(b, value)]
    if isinstance(value, dict):
        keyed = [b for b in fitting if set(b.get("required", ())) & set(value)]
        if not keyed and fitting and all(len(b.get("required", ())) >= 1 for b in fitting):
            kinds = sorted({b["required"][0] for b in fitting if b.get("required")})
            unknown = [k for k in value if not any(k in b.get("properties", {}) for b in fitting)]
            hint = next((suggest(k, kinds) for k in unknown if suggest(k, kinds)), "")
            yield path, f"expected one of the keys: {', '.join(kinds)}", hint or f"found: {', '.join(value)}", False
            return
        fitting = keyed or fitting
    if len(fitting) >= 1:
        branch = max(
            fitting, key=lambda b: len(set(b.get("properties", {})) & set(value)) if isinstance(value, dict) else 0
        )
        sub_errors = list(_validator_for(root, branch).iter_errors(value))
        if sub_errors:
            for sub_error in sub_errors:
                for found_path, message, hint, at_key in explain(sub_error, root):
                    yield (*path, *found_path), message, hint, at_key
            return
        if error.validator == "oneOf":
            yield path, "give exactly one of the alternatives", _alternatives(branches), False
            return
    expected = sorted({str(b.get("type", "value")) for b in branches})
    best = best_match(error.context) if error.context else None
    message = f"expected {' or '.join(_article(e) for e in expected)}, got {_article(json_type(value))}"
    yield path, message, best.message if best is not None and "is not of type" not in best.message else "", False


def _validator_for(root: dict[str, Any], branch: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**branch, "$defs": root.get("$defs", {})})


def _alternatives(branches: list[dict[str, Any]]) -> str:
    keys = [b["required"][0] for b in branches if b.get("required")]
    return f"choose one of: {', '.join(keys)}" if keys else ""


def _pattern_hint(schema: dict[str, Any]) -> str:
    return str(schema.get("description", f"expected the form {schema.get('pattern')}"))


def _article(kind: Any) -> str:
    if isinstance(kind, list):
        return " or ".join(_article(k) for k in kind)
    kind = str(kind)
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"
