"""Which partition a stored delivery belongs to: its customer's (or stock item's), so that one
instance moves each customer's events in order. Only several instances need it (PostgreSQL);
on SQLite one instance owns every partition and deliveries are stored in partition 0."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flowrun.events.enrich import with_facts
from flowrun.events.normalise import normalise, parse_json
from flowrun.runtime.records import event_key, partition_of


def delivery_part(
    source: str, topic: str | None, body: bytes, delivery_id: str, facts: Mapping[str, Any] | None = None
) -> int:
    """`facts`: what a lookup found (flowrun.serve.engine.lookups); a refund's body names only its
    order, and the customer the store names moves it to that customer's partition."""
    try:
        events = normalise(
            with_facts(parse_json(body), facts or {}),
            source=source,
            topic=topic if source != "custom" else None,
            delivery_id=delivery_id if source == "shopify" else None,
            received_at=datetime.now(UTC),  # who it is about does not depend on when
        )
    except Exception:  # what cannot become an event is rejected by whoever reads it
        return partition_of(f"delivery:{source}:{delivery_id}")
    return partition_of(event_key(events[0])) if events else partition_of(f"delivery:{source}:{delivery_id}")
