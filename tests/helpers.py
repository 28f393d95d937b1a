"""Small builders for engine tests: flows from YAML text, events from dicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flowrun.events import Event
from flowrun.events.envelope import from_envelope
from flowrun.flow.loader import load_flow
from flowrun.flow.model import Flow

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def flow_from(tmp_path: Path, text: str, name: str = "flow.yaml") -> Flow:
    path = tmp_path / name
    path.write_text(text)
    return load_flow(path)


def event(type_: str, email: str = "ada@example.com", id_: str | None = None, at: datetime = T0, **parts: Any) -> Event:
    data = {"customer": {"email": email}, **parts}
    return from_envelope(
        {"type": type_, "id": id_ or f"{type_}-{email}-{at.isoformat()}", "data": data, "occurred_at": at.isoformat()}
    )


def hours(n: float) -> timedelta:
    return timedelta(hours=n)
