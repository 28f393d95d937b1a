"""One entry point for every source: a body plus how it arrived, to canonical events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from flowrun import engagement
from flowrun.errors import EventFileError, Problem, UnknownTopicError
from flowrun.events import Event, shopify, woocommerce
from flowrun.events.envelope import EnvelopeError, from_envelope, from_generic_webhook, is_envelope

SOURCES = ("shopify", "woocommerce", "custom", *engagement.PROVIDERS)


def parse_json(text: str | bytes) -> Any:
    """JSON with exact money: decimals become Decimal, big integers stay whole."""
    return json.loads(text, parse_float=Decimal)


def normalise(
    body: Any,
    *,
    source: str | None = None,
    topic: str | None = None,
    delivery_id: str | None = None,
    received_at: datetime | None = None,
) -> list[Event]:
    """Raises UnknownTopicError, EnvelopeError or ValueError on bodies it cannot read."""
    if source in engagement.PROVIDERS:  # the provider's body names its event kinds itself
        return engagement.normalise(source, body, received_at)
    if source == "custom":
        return [from_generic_webhook(body, received_at=received_at)]
    if source is None or (topic is None and is_envelope(body)):
        if not is_envelope(body):
            raise EnvelopeError(
                (),
                "not a canonical envelope",
                'give {"type": ..., "data": {...}}, or name the store with --source and --topic',
            )
        return [from_envelope(body, default_source=source or "custom", received_at=received_at)]
    if not isinstance(body, dict):
        raise ValueError(f"a {source} body must be a JSON object")
    if topic is None:
        raise ValueError(f"a raw {source} body needs its topic (e.g. --topic orders/create)")
    if source == "shopify":
        return shopify.normalise(topic, body, delivery_id=delivery_id, received_at=received_at)
    if source == "woocommerce":
        return woocommerce.normalise(topic, body, delivery_id=delivery_id, received_at=received_at)
    raise UnknownTopicError(source, topic, [])


def topic_types(source: str, topic: str | None) -> frozenset[str] | None:
    """The event types a stored delivery can normalise to, from how it arrived alone; None
    when only its body can tell (the generic source, an unknown topic)."""
    if source in engagement.PROVIDERS:
        return engagement.topic_types(source, topic)
    if topic is None:
        return None
    if source == "shopify":
        return shopify.topic_types(topic)
    if source == "woocommerce":
        return woocommerce.topic_types(topic)
    return None


def load_event_file(
    path: Path, *, source: str | None = None, topic: str | None = None, received_at: datetime | None = None
) -> list[Event]:
    """Read an event file (canonical envelope or raw store body) and normalise it."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EventFileError([Problem(file, 1, 1, (), f"cannot read event file: {exc.strerror}")]) from None
    try:
        body = parse_json(text)
    except json.JSONDecodeError as exc:
        raise EventFileError(
            [Problem(file, exc.lineno, exc.colno, (), f"not JSON: {exc.msg}", "event files are JSON")]
        ) from None
    return normalise_file_body(body, file, source=source, topic=topic, received_at=received_at)


def normalise_file_body(
    body: Any, file: str, *, source: str | None, topic: str | None, received_at: datetime | None
) -> list[Event]:
    try:
        return normalise(body, source=source, topic=topic, received_at=received_at)
    except EnvelopeError as exc:
        raise EventFileError([Problem(file, 1, 1, exc.path, exc.message, exc.hint)]) from None
    except UnknownTopicError as exc:
        raise EventFileError([Problem(file, 1, 1, (), str(exc))]) from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EventFileError([Problem(file, 1, 1, (), f"cannot normalise this {source} body: {exc}")]) from None


def known_topics() -> dict[str, Sequence[str]]:
    return {"shopify": sorted(shopify.TOPICS), "woocommerce": list(woocommerce.TOPICS), **engagement.known_topics()}
