"""Run states to JSON and back, keeping exact money and aware times."""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from flowrun.engine.state import RunState, Status, TraceEntry
from flowrun.events import Event


def _encode(value: Any) -> Any:
    """For what json cannot write itself (called by its C encoder, only for those values)."""
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, datetime):
        return {"$time": value.isoformat()}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot store a {type(value).__name__} in the state database")


MARKERS = frozenset({"$dec", "$time", "$esc"})


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "$dec" in obj:
            return Decimal(obj["$dec"])
        if "$time" in obj:
            return datetime.fromisoformat(obj["$time"])
        if "$esc" in obj:  # a stored mapping that looked like a marker
            key, value = obj["$esc"]
            return {key: value}
    return obj


def _lookalike(value: Any) -> bool:
    """Whether a mapping somewhere in `value` would read back as a marker."""
    if isinstance(value, Mapping):
        if len(value) == 1 and next(iter(value)) in MARKERS:
            return True
        return any(_lookalike(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_lookalike(v) for v in value)
    return False


def _escaped(value: Any) -> Any:
    if isinstance(value, Mapping):
        if len(value) == 1 and next(iter(value)) in MARKERS:
            [(key, inner)] = value.items()
            return {"$esc": [key, _escaped(inner)]}
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escaped(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """JSON with exact money and aware times; what was stored is what `loads` gives back, even a
    payload whose own keys look like those markers (`{"$time": ...}` from a store).

    Written once, then checked: every `{"$` in the text opens an object whose first key starts
    with `$` (inside strings the quote is escaped), and each marker written adds one. As many
    as markers written: nothing in the payload looks like one, and the text is the answer (a
    walk of the value in Python before writing cost as much as the writing, for a 4 KB order).
    More: written again with such mappings escaped (`_lookalike` says which)."""
    written = 0

    def encode(item: Any) -> Any:
        nonlocal written
        if isinstance(item, (Decimal, datetime)):
            written += 1
        return _encode(item)

    text = json.dumps(value, default=encode, separators=(",", ":"), ensure_ascii=False)
    if text.count('{"$') == written or not _lookalike(value):
        return text
    return json.dumps(_escaped(value), default=_encode, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    return json.loads(text, object_hook=_decode)


def event_to_dict(event: Event) -> dict[str, Any]:
    return {
        "type": event.type,
        "source": event.source,
        "id": event.id,
        "occurred_at": event.occurred_at,
        "data": event.data,
        "raw": event.raw,
        "topic": event.topic,
        "customer_key": event.customer_key,
        "meta": event.meta,
    }


def event_from_dict(data: dict[str, Any]) -> Event:
    return Event(**data)


def trigger_to_json(event: Event) -> str:
    """An event as stored with its run, encoded once: events are immutable, and the text is
    kept on the event (as read, or as first written) for every later save of the run."""
    stored: str | None = event.__dict__.get("_stored")
    if stored is None:
        stored = dumps(event_to_dict(event))
        object.__setattr__(event, "_stored", stored)
    return stored


def trigger_from_json(text: str) -> Event:
    event = event_from_dict(loads(text))
    object.__setattr__(event, "_stored", text)
    return event


# Compressed JSON (retention, issue 17): zlib level 1 took a 3.9 KB Shopify order trigger to
# 1.3 KB and a 744-byte run state to 412 bytes, at about 50-75 us each (benchmarks/retention.py).
PACK_LEVEL = 1


def pack(text: str) -> bytes:
    return zlib.compress(text.encode(), PACK_LEVEL)


def unpack(data: bytes) -> str:
    return zlib.decompress(data).decode()


def trigger_packed(event: Event) -> bytes:
    """`trigger_to_json` compressed, also once per event."""
    packed: bytes | None = event.__dict__.get("_packed")
    if packed is None:
        packed = pack(trigger_to_json(event))
        object.__setattr__(event, "_packed", packed)
    return packed


def trigger_from_packed(data: bytes) -> Event:
    event = trigger_from_json(unpack(data))
    object.__setattr__(event, "_packed", bytes(data))
    return event


def run_to_json(run: RunState) -> str:
    """What changes as a run moves (its trigger event is `trigger_to_json`, a column of its own)."""
    return dumps(
        {
            "pc": run.pc,
            "vars": run.vars,
            "awaiting": run.awaiting,
            "reason": run.reason,
            "trace": [[t.at, t.step, t.kind, t.outcome, t.detail] for t in run.trace],
        }
    )


def run_from_row(row: Any) -> RunState:
    """A `runs` row (any mapping-like row) to a RunState."""
    packed_state, packed_trigger = row.get("state_z"), row.get("trigger_z")
    body = loads(unpack(packed_state) if packed_state is not None else row["state"])
    stored = row["trigger_event"]
    if packed_trigger is not None:
        trigger = trigger_from_packed(packed_trigger)
    else:
        trigger = trigger_from_json(stored) if stored is not None else event_from_dict(body["trigger"])
    return RunState(
        id=row["id"],
        flow_id=row["flow_id"],
        flow_version=row["flow_version"],
        trigger=trigger,
        status=Status(row["status"]),
        started_at=_aware(row["started_at"]),
        updated_at=_aware(row["updated_at"]),
        customer_key=row["customer_key"],
        concurrency_key=row["concurrency_key"],
        pc=body["pc"],
        vars=body["vars"],
        wake_at=_aware(row["wake_at"]) if row["wake_at"] else None,
        awaiting=tuple(body["awaiting"]),
        reason=body["reason"],
        trace=tuple(TraceEntry(*entry) for entry in body["trace"]),
    )


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


def utc(value: datetime | None) -> datetime | None:
    """SQLite keeps a timestamp's wall time and drops its offset: store every one in UTC (a
    quiet-hours end in New York was read back five hours early)."""
    from datetime import UTC

    return value.astimezone(UTC) if value is not None else None
