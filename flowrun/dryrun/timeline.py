"""Timeline files: events at offsets (`0s`, `3h`, `2d`) or ISO times, as files or inline."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flowrun.durations import DurationSyntaxError, parse_duration
from flowrun.errors import EventFileError
from flowrun.events import Event
from flowrun.events.normalise import load_event_file, normalise_file_body
from flowrun.events.values import timestamp
from flowrun.yamlsource import Document, read_document


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
    return parse_entries(items, doc, path.parent, start, ("events",) if isinstance(doc.data, dict) else ())


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
