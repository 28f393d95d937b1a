"""The flow JSON Schema (draft 2020-12), built from the action registry.

`schemas/flow.schema.json` is this schema written out; a test keeps the file in step.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from flowrun.actions import REGISTRY
from flowrun.durations import DURATION_PATTERN
from flowrun.events.catalogue import EVENT_TYPES
from flowrun.flow.diagnose import EXPRESSION_MARK
from flowrun.guardrails import CHANNELS, guardrail_schemas

Schema = dict[str, Any]
SCHEMA_ID = "https://flowrun.dev/schemas/flow.schema.json"

DURATION: Schema = {"type": "string", "pattern": DURATION_PATTERN, "description": "e.g. 30m, 24h, 3d, 1h30m"}
TIME_OF_DAY: Schema = {"type": "string", "pattern": r"^[0-9]{1,2}:[0-9]{2}$", "description": "HH:MM, 24-hour"}
EXPRESSION: Schema = {"type": "string", "description": "a Jinja2 expression, e.g. order.total_price > 100"}
EVENT_NAME: Schema = {
    "type": "string",
    "description": "a canonical event type (`flowrun events`), or custom.<name>",
    "examples": sorted(EVENT_TYPES),
}
EVENT_NAMES: Schema = {"anyOf": [EVENT_NAME, {"type": "array", "items": EVENT_NAME, "minItems": 1}]}
STEP_NAME: Schema = {"type": "string", "description": "a label for traces and tests"}
AS_NAME: Schema = {"type": "string", "pattern": r"^[a-z_][a-z0-9_]*$", "description": "keep the result under this name"}
STEPS_REF: Schema = {"$ref": "#/$defs/steps"}

CONTROL_KEYS = ("wait", "if", "choose", "split", "stop")
STEP_KEYS = ("name", "as", "on_error", "retry", "timeout")  # keys of an action step, beside the action
WHOLE_EXPRESSION: Schema = {
    "type": "string",
    "pattern": r"^\{\{[\s\S]*\}\}$",
    "description": "one whole {{ expression }}: the parameter gets the expression's value, with its type",
    EXPRESSION_MARK: True,
}


def typed(schema: Schema, *, root: bool = False) -> Schema:
    """An action parameter's schema where a whole `{{ expression }}` may stand for any value
    that is not text: `points: "{{ order.total_price * 10 }}"`. Objects and lists are opened
    up inside too; `validate` checks the expression's type against the original schema."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in ("properties",):
        if isinstance(out.get(key), dict):
            out[key] = {k: typed(v) for k, v in out[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = typed(out[key])
    for key in ("anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [typed(v) for v in out[key]]
    kinds = out.get("type")
    takes_text = kinds == "string" or (isinstance(kinds, list) and "string" in kinds)
    if root:
        return out
    if kinds is None and "enum" not in out and "const" not in out:
        return out  # any value already: a string expression is one
    if takes_text or ("enum" in out and all(isinstance(v, str) for v in out["enum"])):
        return out
    return {"anyOf": [out, WHOLE_EXPRESSION]}


def _closed(required: list[str], **props: Schema) -> Schema:
    return {"type": "object", "required": required, "properties": props, "additionalProperties": False}


def _trigger() -> Schema:
    missed = {"enum": ["skip", "run_once"], "description": "ticks missed while the service was down"}
    return {
        "description": "what starts a run",
        "anyOf": [
            EVENT_NAME,
            {"type": "array", "items": EVENT_NAME, "minItems": 1},
            _closed(
                ["event"],
                event=EVENT_NAMES,
                source={"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                after={**DURATION, "description": "customer.inactive: quiet this long since the last order, e.g. 180d"},
                below={"type": "integer", "description": "inventory.low: stock fell under this many"},
                above={"type": "integer", "description": "inventory.restocked: stock rose over this many"},
                segment={"type": "string", "description": "segment.entered/exited: only this segment's changes"},
            ),
            _closed(
                ["schedule"],
                schedule={"type": "string", "description": "cron: m h dom mon dow"},
                timezone={"type": "string"},
                missed=missed,
            ),
            _closed(["every"], every=DURATION, missed=missed),
        ],
    }


def _wait() -> Schema:
    return {
        "description": "pause: a duration, until a time of day, or for an event",
        "anyOf": [
            DURATION,
            _closed(
                ["until"], until=TIME_OF_DAY, timezone={"type": "string", "description": "IANA zone, or `customer`"}
            ),
            _closed(
                ["for", "timeout"],
                **{"for": EVENT_NAMES},
                timeout=DURATION,
                where=EXPRESSION,
                step={"type": "string", "description": "message.* only: about the message this run's step sent"},
                **{"as": AS_NAME},
            ),
        ],
    }


def _step_defs() -> dict[str, Schema]:
    retry = _closed(
        [], attempts={"type": "integer", "minimum": 1, "maximum": 50}, backoff=DURATION, max_backoff=DURATION
    )
    defs: dict[str, Schema] = {
        "step.wait": _closed(["wait"], wait=_wait(), name=STEP_NAME, then=STEPS_REF, **{"else": STEPS_REF}),
        "step.if": _closed(["if", "then"], **{"if": EXPRESSION}, then=STEPS_REF, name=STEP_NAME, **{"else": STEPS_REF}),
        "step.choose": _closed(
            ["choose"],
            choose={
                "type": "array",
                "minItems": 1,
                "items": _closed(["when", "steps"], when=EXPRESSION, steps=STEPS_REF),
            },
            otherwise=STEPS_REF,
            name=STEP_NAME,
        ),
        "step.split": _closed(
            ["split"],
            split={
                "type": "array",
                "minItems": 2,
                "items": _closed(
                    ["weight", "steps"],
                    name={"type": "string"},
                    weight={"type": "number", "exclusiveMinimum": 0},
                    steps=STEPS_REF,
                ),
            },
            name=STEP_NAME,
        ),
        "step.stop": _closed(["stop"], stop={"type": "string", "description": "why the run ends here"}, name=STEP_NAME),
    }
    for action in REGISTRY.values():
        defs[f"step.{action.name}"] = {
            **_closed(
                [action.name],
                **{action.name: {**typed(action.step_schema(), root=True), "description": action.summary}},
                name=STEP_NAME,
                **{"as": AS_NAME},
                on_error={"enum": ["fail", "continue"]},
                retry=retry,
                timeout=DURATION,
            ),
            "description": action.summary,
        }
    return defs


def step_kinds() -> tuple[str, ...]:
    return (*CONTROL_KEYS, *REGISTRY)


@lru_cache(maxsize=1)
def flow_schema() -> Schema:
    steps = _step_defs()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "flowrun flow",
        "description": "An automation flow: when something happens, if rules hold, do things, with timing.",
        "type": "object",
        "required": ["flow", "on", "steps"],
        "additionalProperties": False,
        "properties": {
            "flow": {
                "type": "string",
                "pattern": r"^[a-z0-9][a-z0-9_-]*$",
                "description": "the flow's id: lowercase letters, digits, - and _",
            },
            "description": {"type": "string"},
            "on": _trigger(),
            "if": {**EXPRESSION, "description": "entry condition on the trigger event"},
            "until": {
                "description": "goal: a later event for the same customer ends the run as converted",
                "anyOf": [
                    EVENT_NAME,
                    {"type": "array", "items": EVENT_NAME, "minItems": 1},
                    _closed(["event"], event=EVENT_NAMES, where=EXPRESSION),
                ],
            },
            "reentry": {
                "description": "how often a customer may enter: always, once, or a window like 7d",
                "anyOf": [{"enum": ["always", "once"]}, DURATION],
            },
            "concurrency": _closed(
                [], key={"type": "string"}, mode={"enum": ["single", "restart", "queue", "parallel"]}
            ),
            "timezone": {"type": "string", "description": "IANA zone for waits and schedules (default UTC)"},
            "locale": {
                "type": "string",
                "description": "how `money` writes amounts: en_US ($150.00), de_DE (150,00 €); default: the project's",
            },
            "guardrails": _flow_guardrails(),
            "steps": STEPS_REF,
        },
        "$defs": {
            "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}},
            "step": {"anyOf": [{"$ref": f"#/$defs/{name}"} for name in steps]},
            **steps,
        },
    }


def _flow_guardrails() -> Schema:
    quiet, cap = guardrail_schemas(DURATION)
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "this flow's changes to the project's guardrails (suppression always applies)",
        "properties": {
            "quiet_hours": {"anyOf": [quiet, {"const": False}], "description": "this flow's window, or false: none"},
            "caps": {
                "type": "object",
                "propertyNames": {"enum": CHANNELS},
                "additionalProperties": {"anyOf": [cap, {"const": False}]},
                "description": "a channel's cap for this flow's sends (counting every flow's), or false: none",
            },
        },
    }
