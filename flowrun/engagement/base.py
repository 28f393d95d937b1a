"""What the provider modules share: the canonical engagement event, the delivery a verified
webhook becomes, bounded JSON, and the helpers that read providers' values."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from flowrun.errors import WebhookRefused
from flowrun.events import Event, customer_key
from flowrun.events.catalogue import complete_event_data

KINDS = ("delivered", "opened", "clicked", "bounced", "complained", "unsubscribed")
# The providers' bodies nest four or five levels; a deeper one is not theirs.
MAX_DEPTH = 32
MAX_ID = 200  # the inbox's delivery_id column
TOPIC = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")  # the inbox's topic column holds 100
# Apple Mail Privacy Protection fetches images through a proxy whose user agent is this bare
# string (Mailgun's bot-detection notes; SendGrid and Mailgun flag such opens themselves).
PRIVACY_PROXY_AGENT = "Mozilla/5.0"


@dataclass(frozen=True)
class Delivery:
    """One provider event of a verified webhook, ready for the inbox: its kind (the topic),
    the bytes to keep, and a key that is the same on every retry of that event."""

    topic: str
    body: bytes
    delivery_id: str
    triggered_at: str | None = None


@dataclass(frozen=True)
class Engagement:
    """One thing that happened to one message, read from the provider's terms."""

    kind: str  # one of KINDS
    provider: str
    event_id: str
    occurred_at: datetime
    message_id: str | None
    recipient: str | None
    channel: str  # email | sms
    url: str | None = None
    bounce_type: str | None = None  # hard | soft
    reason: str | None = None
    machine_open: bool | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def event(self, raw: Any, topic: str) -> Event:
        type_name = f"message.{self.kind}"
        contact = {"phone" if self.channel == "sms" else "email": self.recipient}
        message = {
            "provider": self.provider,
            "id": self.message_id,
            "channel": self.channel,
            "recipient": self.recipient,
            "url": self.url,
            "bounce_type": self.bounce_type,
            "reason": self.reason,
            "machine_open": self.machine_open,
            "metadata": dict(self.metadata),
        }
        data = complete_event_data(type_name, {"customer": contact, "message": message})
        return Event(
            type=type_name,
            source=self.provider,
            id=self.event_id,
            occurred_at=self.occurred_at,
            data=data,
            raw=raw,
            topic=topic,
            customer_key=customer_key(data),
        )


def refuse_shape(detail: str) -> WebhookRefused:
    return WebhookRefused(400, "bad_shape", detail)


def load_json(body: bytes) -> Any:
    """The body as JSON, or a 400: not JSON, or nested deeper than any provider sends."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise WebhookRefused(400, "not_json", f"body is not JSON: {str(exc)[:200]}") from None
    if depth(value) > MAX_DEPTH:
        raise WebhookRefused(400, "too_deep", f"body nests deeper than {MAX_DEPTH} levels")
    return value


def depth(value: Any) -> int:
    """How deeply objects and arrays nest (without recursion: the input may be hostile)."""
    if not isinstance(value, dict | list):
        return 0
    deepest, stack = 1, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, level + 1))
    return deepest


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\n\r":
        position += 1
    return position


def split_array(body: bytes) -> list[tuple[Any, bytes]]:
    """A JSON array's elements, each parsed and with its own bytes exactly as sent (a batch
    is stored one event a row, and what is kept is the provider's text, not a re-encoding)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise WebhookRefused(400, "not_json", f"body is not UTF-8: {exc}") from None
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    if not text.startswith("[", position):
        raise WebhookRefused(400, "bad_shape", "the body is not a JSON array")
    position = _skip_space(text, position + 1)
    out: list[tuple[Any, bytes]] = []
    try:
        while not text.startswith("]", position) or out:
            value, end = decoder.raw_decode(text, position)
            if depth(value) > MAX_DEPTH:
                raise WebhookRefused(400, "too_deep", f"body nests deeper than {MAX_DEPTH} levels")
            out.append((value, text[position:end].encode()))
            position = _skip_space(text, end)
            if text.startswith("]", position):
                break
            if not text.startswith(",", position):
                raise ValueError(f"expected ',' or ']' at character {position}")
            position = _skip_space(text, position + 1)
    except (ValueError, RecursionError) as exc:
        raise WebhookRefused(400, "not_json", f"body is not JSON: {str(exc)[:200]}") from None
    if _skip_space(text, position + 1) != len(text):
        raise WebhookRefused(400, "not_json", f"body is not JSON: extra data after the array at {position + 1}")
    return out


def encode(value: Any) -> bytes:
    """One event of a batch as the bytes the inbox keeps (the worker parses them again)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def checked_topic(topic: Any) -> str:
    if not isinstance(topic, str) or not TOPIC.match(topic):
        raise refuse_shape(f"event kind {str(topic)[:80]!r} is not a name")
    return topic


def event_id(provider: str, given: Any, *fallback: Any) -> str:
    """`provider:<its event id>`, or a hash of the fields that identify the event when the
    provider gives no id (or one too long to keep)."""
    if isinstance(given, str) and given and len(given) + len(provider) + 1 <= MAX_ID:
        return f"{provider}:{given}"
    joined = "\x1f".join("" if part is None else str(part) for part in (given, *fallback))
    return f"{provider}:sha256:{hashlib.sha256(joined.encode()).hexdigest()[:40]}"


def required_text(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"`{key}` must be a non-empty string")
    return value.strip()


def optional_text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | int):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return str(value).strip() or None


def epoch(value: Any, what: str) -> datetime:
    """Unix seconds (an integer, a float, a Decimal or a string of them) as an aware time."""
    if isinstance(value, bool):
        raise ValueError(f"`{what}` must be Unix seconds")
    try:
        seconds = Decimal(str(value)) if isinstance(value, str | int | float | Decimal) else None
    except InvalidOperation:
        seconds = None
    if seconds is None or not seconds.is_finite():
        raise ValueError(f"`{what}` must be Unix seconds, got {str(value)[:40]!r}")
    try:
        return datetime.fromtimestamp(float(seconds), UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"`{what}` is not a time: {str(value)[:40]}") from None


def iso_time(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"`{what}` must be an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"`{what}` is not an ISO 8601 time: {value[:40]!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def machine_agent(user_agent: Any) -> bool:
    return isinstance(user_agent, str) and user_agent.strip() == PRIVACY_PROXY_AGENT


def revealed(value: Any) -> str | None:
    """A setting as text: a Secret revealed, a plain string as it is."""
    if value is None:
        return None
    text = value.reveal() if hasattr(value, "reveal") else str(value)
    return text or None
