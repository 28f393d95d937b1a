"""Timeline files: events at offsets (`0s`, `3h`, `2d`) or ISO times, as files or inline."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator

from flowrun.dryrun.stubs import STUB_SCHEMA, Stub, check_stub, parse_stubs
from flowrun.durations import DurationSyntaxError, parse_duration
from flowrun.errors import EventFileError, Problem
from flowrun.events import Event
from flowrun.events.normalise import load_event_file, normalise_file_body
from flowrun.events.values import timestamp
from flowrun.yamlsource import Document, read_document

if TYPE_CHECKING:
    from flowrun.flow.model import Flow


OFFSET = {"type": ["string", "number"], "description": "an offset from the start (0s, 90m, 3h, 2d) or an ISO time"}

TIMELINE_ENTRY: dict[str, Any] = {
    "type": "object",
    "description": "one event on the simulated clock",
    "properties": {
        "at": OFFSET,
        "event": {
            "anyOf": [
                {"type": "string", "description": "an event file (JSON), relative to this file"},
                {"type": "object", "description": "an inline event: a canonical envelope or a raw store body"},
            ]
        },
        "source": {"type": "string", "description": "a raw store body's source: shopify, woocommerce, custom"},
        "topic": {"type": "string", "description": "a raw store body's topic, e.g. orders/create"},
    },
    "required": ["event"],
    "additionalProperties": False,
}
TIMELINE_KEYS = ("events", "stubs")


@dataclass(frozen=True)
class Scheduled:
    at: datetime
    events: tuple[Event, ...]


def resolve_at(value: Any, start: datetime) -> datetime | None:
    if isinstance(value, (int, float)):
        return start + timedelta(seconds=value)
    text = str(value)
    try:
        return start + parse_duration(text)
    except DurationSyntaxError:
        return timestamp(text)


def is_timeline(path: Path) -> bool:
    """A list of `{at, event}` entries, bare or under `events`: what `flowrun validate`
    checks as a timeline rather than reporting it as a malformed flow. Only a file that
    starts with a list item or has a top-level `events:` is parsed here (flows are not)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    first = next((line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
    if not first.startswith("-") and not re.search(r"^events\s*:", text, re.MULTILINE):
        return False
    try:
        data = read_document(path, "timeline", EventFileError).data
    except EventFileError:
        return False  # unreadable or not YAML: the flow loader says where
    if isinstance(data, dict) and "flow" not in data:
        data = data.get("events")
    entries = [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
    return any("event" in e or "at" in e for e in entries) and not any("flow" in e for e in entries)


def load_timeline(path: Path, start: datetime) -> list[Scheduled]:
    """A timeline file: a list of entries, or `{events: [...], stubs: [...]}`."""
    doc = read_document(path, "timeline", EventFileError)
    items = doc.data.get("events") if isinstance(doc.data, dict) else doc.data
    if not isinstance(items, list):
        raise EventFileError(
            [
                doc.problem(
                    (), "a timeline is a list of {at, event} entries", "e.g. - {at: 0s, event: events/checkout.json}"
                )
            ]
        )
    prefix: tuple[str | int, ...] = ("events",) if isinstance(doc.data, dict) else ()
    problems = _shape_problems(doc, items, prefix)
    if problems:
        raise EventFileError(problems)
    return parse_entries(items, doc, path.parent, start, prefix)


def _shape_problems(doc: Document, items: list[Any], prefix: tuple[str | int, ...]) -> list[Problem]:
    from flowrun.flow.diagnose import explain, suggest

    found: list[Problem] = []
    if isinstance(doc.data, dict):
        for key in doc.data:
            if key not in TIMELINE_KEYS:
                hint = suggest(key, TIMELINE_KEYS) or "a timeline file has `events:` and optional `stubs:`"
                found.append(doc.problem((key,), f"unknown key {key!r}", hint, key=True))
        stubs = doc.data.get("stubs", [])
        validator = Draft202012Validator({"type": "array", "items": STUB_SCHEMA})
        for error in validator.iter_errors(stubs):
            for path, message, hint, at_key in explain(error, {}):
                found.append(doc.problem(("stubs", *path), message, hint, key=at_key))
    validator = Draft202012Validator(TIMELINE_ENTRY)
    for i, item in enumerate(items):
        for error in validator.iter_errors(item):
            for path, message, hint, at_key in explain(error, {}):
                found.append(doc.problem((*prefix, i, *path), message, hint, key=at_key))
    return found


def load_timeline_stubs(path: Path, flows: list[Flow]) -> tuple[Stub, ...]:
    """The `stubs:` of a timeline file, checked against the loaded flows."""
    doc = read_document(path, "timeline", EventFileError)
    if not isinstance(doc.data, dict) or not isinstance(doc.data.get("stubs"), list):
        return ()
    stubs = parse_stubs(doc.data["stubs"])
    problems = [
        doc.problem(where, message, hint)
        for i, stub in enumerate(stubs)
        for where, message, hint in check_stub(stub, flows, ("stubs", i))
    ]
    if problems:
        raise EventFileError(problems)
    return stubs


def parse_entries(
    items: list[Any], doc: Document, base: Path, start: datetime, prefix: tuple[str | int, ...] = ()
) -> list[Scheduled]:
    out = []
    for i, item in enumerate(items):
        here = (*prefix, i)
        if not isinstance(item, dict) or "event" not in item:
            raise EventFileError([doc.problem(here, "each entry needs `event` (a file path or an inline envelope)")])
        at = resolve_at(item.get("at", "0s"), start)
        if at is None:
            raise EventFileError(
                [
                    doc.problem(
                        (*here, "at"),
                        f"{item.get('at')!r} is neither an offset nor an ISO time",
                        "write an offset such as 0s, 90m, 3h, 2d, or 2026-03-01T10:00:00Z",
                    )
                ]
            )
        source, topic = item.get("source"), item.get("topic")
        event = item["event"]
        if isinstance(event, str):
            events = load_event_file(base / event, source=source, topic=topic, received_at=at)
        else:
            events = normalise_file_body(
                _decimals(event),
                f"{doc.file}:{doc.where((*here, 'event'))[0]}",
                source=source,
                topic=topic,
                received_at=at,
            )
        out.append(Scheduled(at, tuple(events)))
    return out


def _decimals(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _decimals(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decimals(v) for v in value]
    return value
