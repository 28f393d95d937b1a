"""Twilio's message status callbacks: a form POST per status change, `X-Twilio-Signature`.

The signature is base64 HMAC-SHA1 under the account's auth token of the full URL Twilio
called (query string included) followed by every POST parameter, names sorted, each
name's values sorted without repeats, as name + value. Which port Twilio put in the URL it
signed varies, so the URL is tried with its port removed and with the default port added
(as Twilio's own validators do). A body that is not a form carries `bodySHA256` (hex) in
the query: the signature then covers the URL alone and the body must hash to it.

Behind a proxy the URL flowrun sees is not the one Twilio called: set `webhook_url`. The
signed string has no time or nonce, so a replay is an exact copy, stored once under the
message and its status.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from flowrun.engagement.base import (
    Delivery,
    Engagement,
    checked_topic,
    encode,
    event_id,
    load_json,
    optional_text,
    refuse_shape,
    revealed,
)
from flowrun.errors import WebhookRefused
from flowrun.events import Event

NAME = "twilio"
BATCHED = False  # one event a request
HEADER = "x-twilio-signature"
TOPIC_TYPES = {
    "delivered": frozenset({"message.delivered"}),
    "read": frozenset({"message.opened"}),  # read receipts (WhatsApp, RCS)
    "undelivered": frozenset({"message.bounced", "message.unsubscribed"}),
    "failed": frozenset({"message.bounced", "message.unsubscribed"}),
    # kept in the inbox, no engagement event: the steps before delivery
    **{status: frozenset() for status in ("accepted", "scheduled", "queued", "sending", "sent", "canceled")},
    **{status: frozenset() for status in ("partially_delivered", "receiving", "received")},
}
OPTED_OUT = "21610"  # "attempt to send to unsubscribed recipient": the number replied STOP
# The number does not exist, is a landline, or is no phone number at all: no retry can help.
HARD_ERRORS = frozenset({"30005", "30006", "21211", "21614"})


def config_schema() -> dict[str, Any]:
    from flowrun.config_schema import SECRET

    return {
        "type": "object",
        "description": "Twilio message status callbacks (StatusCallback of the sms channel)",
        "properties": {
            "auth_token": SECRET,
            "webhook_url": {
                "type": "string",
                "description": "the public URL Twilio calls, when a proxy changes it (query string excluded)",
            },
        },
        "required": ["auth_token"],
        "additionalProperties": False,
    }


def signature(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    signed = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    return base64.b64encode(hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()).decode()


def url_variants(url: str) -> list[str]:
    """The URL with its port removed, and with the scheme's default port added."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0] + "@" if "@" in parts.netloc else ""
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    return [
        urlunsplit((parts.scheme, userinfo + host, parts.path, parts.query, parts.fragment)),
        urlunsplit((parts.scheme, f"{userinfo}{host}:{port}", parts.path, parts.query, parts.fragment)),
    ]


def valid(auth_token: str, url: str, params: Sequence[tuple[str, str]], given: str) -> bool:
    ok = False
    for candidate in url_variants(url):  # both tried: the time taken does not say which matched
        ok |= hmac.compare_digest(signature(auth_token, candidate, params).encode(), given.strip().encode())
    return ok


class Verifier:
    def deliveries(
        self, settings: Mapping[str, Any], headers: Mapping[str, str], url: str, body: bytes, now: datetime
    ) -> list[Delivery]:
        token = revealed(settings.get("auth_token"))
        if not token:
            raise WebhookRefused(404, "unconfigured", "twilio has no auth_token in the configuration")
        given = headers.get(HEADER)
        if not given:
            raise WebhookRefused(401, "missing_signature", "no X-Twilio-Signature header")
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        if "bodySHA256" in query:
            body_ok = hmac.compare_digest(hashlib.sha256(body).hexdigest().encode(), query["bodySHA256"].encode())
            if not valid(token, url, [], given) or not body_ok:
                raise WebhookRefused(401, "bad_signature", "X-Twilio-Signature or bodySHA256 does not match")
            payload = load_json(body)
            if not isinstance(payload, dict):
                raise refuse_shape("a JSON status callback is one object")
        else:
            try:
                params = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
            except (UnicodeDecodeError, ValueError):
                raise refuse_shape("a status callback is a UTF-8 form (application/x-www-form-urlencoded)") from None
            if not valid(token, url, params, given):
                raise WebhookRefused(401, "bad_signature", "X-Twilio-Signature does not match the URL and parameters")
            payload = _as_dict(params)
        topic = checked_topic(status_of(payload))
        try:
            read(payload, now)
        except ValueError as exc:
            raise refuse_shape(f"{topic}: {exc}") from None
        return [Delivery(topic, encode(payload), key_of(payload))]


def _as_dict(params: Sequence[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in params:
        if name in out:
            out[name] = [*out[name], value] if isinstance(out[name], list) else [out[name], value]
        else:
            out[name] = value
    return out


def status_of(payload: Mapping[str, Any]) -> Any:
    if str(payload.get("EventType", "")).upper() == "READ":
        return "read"
    return payload.get("MessageStatus") or payload.get("SmsStatus")


def key_of(payload: Mapping[str, Any]) -> str:
    sid, status = payload.get("MessageSid") or payload.get("SmsSid"), status_of(payload)
    return event_id(NAME, f"{sid}:{status}" if isinstance(sid, str) and sid else None, status, payload.get("To"))


def read(payload: Mapping[str, Any], received_at: datetime | None) -> Engagement | None:
    sid = optional_text(payload.get("MessageSid") or payload.get("SmsSid"))
    if sid is None:
        raise ValueError("`MessageSid` is missing")
    status = status_of(payload)
    if received_at is None:
        raise ValueError("a status callback carries no time and no delivery time was given")
    error = optional_text(payload.get("ErrorCode"))
    if status in ("delivered", "read"):
        kind, bounce_type = ("delivered" if status == "delivered" else "opened"), None
    elif status in ("undelivered", "failed"):
        kind = "unsubscribed" if error == OPTED_OUT else "bounced"
        bounce_type = None if kind == "unsubscribed" else "hard" if error in HARD_ERRORS else "soft"
    else:
        return None
    words = optional_text(payload.get("ErrorMessage"))
    reason = f"Twilio error {error}" + (f": {words}" if words else "") if error else words
    return Engagement(
        kind,
        provider=NAME,
        event_id=key_of(payload),
        occurred_at=received_at,
        message_id=sid,
        recipient=optional_text(payload.get("To")),
        channel="sms",
        bounce_type=bounce_type,
        reason=reason,
        machine_open=False if kind == "opened" else None,
    )


def normalise(body: Any, received_at: datetime | None) -> list[Event]:
    if not isinstance(body, Mapping):
        raise ValueError("a Twilio status callback is an object of its form parameters")
    engagement = read(body, received_at)
    return [] if engagement is None else [engagement.event(body, str(status_of(body)))]
