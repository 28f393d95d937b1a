"""Mailgun's webhooks: one event a POST, `{"signature": {...}, "event-data": {...}}`.

The signature block carries `timestamp` (Unix seconds), `token` (random) and `signature`,
the lowercase hex HMAC-SHA256 of timestamp + token under the webhook signing key (not the
API key). It does not cover the body, so Mailgun's advice is followed: a timestamp outside
`tolerance` of now (default 5 minutes) and a token seen before are refused. Seen tokens are
kept until their timestamp leaves the window, in the port's memory: a restart forgets them,
which leaves a replay of a request signed in the minutes before it; the event it carries is
still stored once, under its `event-data.id`.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flowrun.durations import parse_duration
from flowrun.engagement.base import (
    Delivery,
    Engagement,
    checked_topic,
    epoch,
    event_id,
    load_json,
    optional_text,
    refuse_shape,
    required_text,
    revealed,
)
from flowrun.errors import WebhookRefused
from flowrun.events import Event

NAME = "mailgun"
BATCHED = False  # one event a request
DEFAULT_TOLERANCE = "5m"
MAX_TOKEN = 256  # Mailgun's are 50 characters
TOPIC_TYPES = {
    "delivered": frozenset({"message.delivered"}),
    "opened": frozenset({"message.opened"}),
    "clicked": frozenset({"message.clicked"}),
    "failed": frozenset({"message.bounced"}),
    "complained": frozenset({"message.complained"}),
    "unsubscribed": frozenset({"message.unsubscribed"}),
    "accepted": frozenset(),  # kept in the inbox, no engagement event
    "rejected": frozenset(),
    "stored": frozenset(),
}
KINDS = {
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "failed": "bounced",
    "complained": "complained",
    "unsubscribed": "unsubscribed",
}


def config_schema() -> dict[str, Any]:
    from flowrun.config_schema import DURATION, SECRET

    return {
        "type": "object",
        "description": "Mailgun webhooks: the HTTP webhook signing key (not the API key)",
        "properties": {
            "signing_key": SECRET,
            "tolerance": {**DURATION, "description": f"how old a signature may be (default {DEFAULT_TOLERANCE})"},
        },
        "required": ["signing_key"],
        "additionalProperties": False,
    }


def valid_signature(signing_key: str, timestamp: str, token: str, signature: str) -> bool:
    if not (timestamp and token and signature):  # empty values are refused, never hashed
        return False
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.strip().lower().encode())


class SeenTokens:
    """Tokens of accepted requests until their signature's window closes."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._expiring: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def first_use(self, token: str, until: float, now: float) -> bool:
        with self._lock:
            while self._expiring and self._expiring[0][0] < now:
                _, old = heapq.heappop(self._expiring)
                self._until.pop(old, None)
            if token in self._until:
                return False
            self._until[token] = until
            heapq.heappush(self._expiring, (until, token))
            return True

    def __len__(self) -> int:
        return len(self._until)


class Verifier:
    def __init__(self) -> None:
        self.seen = SeenTokens()

    def deliveries(
        self, settings: Mapping[str, Any], headers: Mapping[str, str], url: str, body: bytes, now: datetime
    ) -> list[Delivery]:
        signing_key = revealed(settings.get("signing_key"))
        if not signing_key:
            raise WebhookRefused(404, "unconfigured", "mailgun has no signing_key in the configuration")
        payload = load_json(body)
        block = payload.get("signature") if isinstance(payload, dict) else None
        if not isinstance(block, dict):
            raise WebhookRefused(401, "missing_signature", 'no "signature" object in the body')
        timestamp, token, signature = (_text(block, k) for k in ("timestamp", "token", "signature"))
        if not valid_signature(signing_key, timestamp, token, signature):
            raise WebhookRefused(401, "bad_signature", "HMAC-SHA256 of timestamp + token does not match")
        window = parse_duration(settings.get("tolerance", DEFAULT_TOLERANCE)).total_seconds()
        if not timestamp.isdigit() or abs(now.timestamp() - int(timestamp)) > window:
            raise WebhookRefused(401, "stale_timestamp", f"signed outside the {int(window)} s window")
        data = payload.get("event-data")
        if not isinstance(data, dict):
            raise refuse_shape('no "event-data" object in the body')
        topic = checked_topic(data.get("event"))
        try:
            read(data)
        except ValueError as exc:
            raise refuse_shape(f"{topic}: {exc}") from None
        # Last, so that a refused body does not use up its token.
        if not self.seen.first_use(token, int(timestamp) + window, now.timestamp()):
            raise WebhookRefused(401, "replayed", "this signature's token was used before")
        return [Delivery(topic, body, key_of(data), timestamp)]


def _text(block: Mapping[str, Any], name: str) -> str:
    value = block.get(name)
    if not isinstance(value, str) or len(value) > MAX_TOKEN:
        raise WebhookRefused(401, "missing_signature", f"the signature block has no usable {name!r}")
    return value


def key_of(data: Mapping[str, Any]) -> str:
    # Mailgun's event id is unique within a day: the event's own time makes it unique for good.
    stamp = data.get("timestamp")
    second = str(stamp).split(".", 1)[0]
    return event_id(NAME, f"{data.get('id')}:{second}" if data.get("id") else None, data.get("event"), stamp)


def read(data: Mapping[str, Any]) -> Engagement | None:
    occurred = epoch(data.get("timestamp"), "event-data.timestamp")
    recipient = required_text(data, "recipient")
    kind = KINDS.get(str(data.get("event")))
    if kind is None:
        return None
    message = data.get("message") or {}
    headers = (message.get("headers") if isinstance(message, Mapping) else None) or {}
    if not isinstance(message, Mapping) or not isinstance(headers, Mapping):
        raise ValueError("`message` and `message.headers` must be objects")
    message_id = optional_text(headers.get("message-id"))
    status = data.get("delivery-status") or {}
    if not isinstance(status, Mapping):
        raise ValueError("`delivery-status` must be an object")
    bounce_type = reason = None
    if kind == "bounced":
        given = status.get("bounce-type")
        severity = data.get("severity")
        bounce_type = given if given in ("hard", "soft") else "hard" if severity == "permanent" else "soft"
        reason = (
            optional_text(status.get("description"))
            or optional_text(status.get("message"))
            or optional_text(data.get("reason"))
        )
    machine = None
    if kind == "opened":
        client = data.get("client-info") or {}
        if not isinstance(client, Mapping):
            raise ValueError("`client-info` must be an object")
        machine = bool(client.get("bot"))  # Mailgun names the bot: apple (Mail Privacy Protection), gmail, generic
    variables = data.get("user-variables")
    return Engagement(
        kind,
        provider=NAME,
        event_id=key_of(data),
        occurred_at=occurred,
        message_id=message_id.strip("<>") if message_id else None,
        recipient=recipient,
        channel="email",
        url=required_text(data, "url") if kind == "clicked" else None,
        bounce_type=bounce_type,
        reason=reason,
        machine_open=machine,
        metadata=dict(variables) if isinstance(variables, Mapping) else {},
    )


def normalise(body: Any, received_at: datetime | None) -> list[Event]:
    """A whole webhook body, or its `event-data` alone (as Mailgun's docs show them)."""
    if not isinstance(body, Mapping):
        raise ValueError("a Mailgun webhook body is a JSON object")
    data = body.get("event-data", body)
    if not isinstance(data, Mapping):
        raise ValueError("`event-data` must be an object")
    engagement = read(data)
    return [] if engagement is None else [engagement.event(body, str(data.get("event")))]
