"""Canonical envelopes (`{"type", "source", "data", ...}`) and the generic webhook body."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flowrun.events import Event, customer_key
from flowrun.events.catalogue import complete_event_data, lookup_type
from flowrun.events.values import timestamp

# Sources only flowrun's own adapters produce: a generic webhook may not claim them.
RESERVED_SOURCES = frozenset({"shopify", "woocommerce", "flowrun"})


class EnvelopeError(ValueError):
    def __init__(self, path: tuple[str | int, ...], message: str, hint: str = "") -> None:
        self.path, self.message, self.hint = path, message, hint
        super().__init__(message)


def is_envelope(body: Any) -> bool:
    return isinstance(body, Mapping) and isinstance(body.get("type"), str) and "data" in body


def from_envelope(
    body: Mapping[str, Any], *, default_source: str = "custom", received_at: datetime | None = None
) -> Event:
    type_name = body["type"]
    event_type = lookup_type(type_name)
    if event_type is None:
        raise EnvelopeError(
            ("type",),
            f"unknown event type {type_name!r}",
            "run `flowrun events` for the catalogue; generic events are named custom.<name>",
        )
    data = body.get("data")
    if not isinstance(data, Mapping):
        raise EnvelopeError(("data",), "`data` must be an object")
    for part, schema in event_type.parts.items():
        if part in data and data[part] is not None and not isinstance(data[part], Mapping):
            raise EnvelopeError(("data", part), f"`{part}` must be an object ({schema['description']})")
    occurred = timestamp(body.get("occurred_at")) if body.get("occurred_at") else received_at
    if body.get("occurred_at") and occurred is None:
        raise EnvelopeError(("occurred_at",), "occurred_at is not an ISO 8601 time")
    if occurred is None:
        raise EnvelopeError(("occurred_at",), "the event has no occurred_at and no delivery time was given")
    completed = complete_event_data(type_name, data)
    event_id = body.get("id")
    if not event_id:
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]
        event_id = f"{type_name}:{digest}"
    if type_name.startswith("custom.") and not str(event_id).startswith("custom:"):
        event_id = f"custom:{event_id}"  # custom ids live apart: none can equal a store's or a derived event's
    return Event(
        type=type_name,
        source=str(body.get("source") or default_source),
        id=str(event_id),
        occurred_at=occurred,
        data=completed,
        raw=body.get("raw", body),
        topic=body.get("topic"),
        customer_key=customer_key(completed),
    )


def from_generic_webhook(body: Any, *, received_at: datetime | None = None) -> Event:
    """A body POSTed to the generic endpoint: a custom.<name> event only, under a source no
    store or flowrun itself uses (its secret must not mint `order.paid` or a Shopify id)."""
    if not is_envelope(body):
        raise EnvelopeError((), "not a canonical envelope", 'give {"type": "custom.<name>", "data": {...}}')
    if not str(body["type"]).startswith("custom."):
        raise EnvelopeError(("type",), f"the generic endpoint emits only custom.<name> events, not {body['type']!r}")
    if body.get("source") in RESERVED_SOURCES:
        raise EnvelopeError(("source",), f"source {body['source']!r} is reserved for flowrun's own adapters")
    return from_envelope(body, default_source="custom", received_at=received_at)
