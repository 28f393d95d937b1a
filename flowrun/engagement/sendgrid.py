"""SendGrid's Event Webhook: a JSON array of events, batched (every 30 s or 768 KB), signed.

Signed Event Webhook: `X-Twilio-Email-Event-Webhook-Signature` is base64 of a DER ECDSA
(P-256, SHA-256) signature over the `X-Twilio-Email-Event-Webhook-Timestamp` value followed
by the raw body bytes; the public key (base64 DER, from SendGrid's settings) is in the
configuration. SendGrid documents no replay window and its SDKs check none: a `tolerance`
may be configured, and a replayed batch is harmless anyway, because every event is stored
under its `sg_event_id` (SendGrid's dedupe key), so a retry or a replay never doubles one.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from flowrun.durations import parse_duration
from flowrun.engagement.base import (
    Delivery,
    Engagement,
    checked_topic,
    epoch,
    event_id,
    machine_agent,
    optional_text,
    refuse_shape,
    required_text,
    revealed,
    split_array,
)
from flowrun.errors import WebhookRefused
from flowrun.events import Event

NAME = "sendgrid"
BATCHED = True  # many events a body
SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
TOPIC_TYPES = {
    "delivered": frozenset({"message.delivered"}),
    "open": frozenset({"message.opened"}),
    "click": frozenset({"message.clicked"}),
    "bounce": frozenset({"message.bounced"}),
    "spamreport": frozenset({"message.complained"}),
    "unsubscribe": frozenset({"message.unsubscribed"}),
    "group_unsubscribe": frozenset({"message.unsubscribed"}),
    # kept in the inbox, no engagement event: SendGrid's own steps, a suppressed send, a resubscription
    "processed": frozenset(),
    "deferred": frozenset(),
    "dropped": frozenset(),
    "group_resubscribe": frozenset(),
}
KINDS = {
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}
# The event fields SendGrid defines; any other top-level key is a custom argument of the send.
FIELDS = frozenset(
    (  # noqa: SIM905
        "email timestamp smtp-id event category sg_event_id sg_message_id useragent ip url reason status response"
        " attempt type tls cert_err asm_group_id send_at pool sg_machine_open url_offset bounce_classification"
        " sg_content_type sg_template_id sg_template_name marketing_campaign_id marketing_campaign_name"
        " marketing_campaign_version marketing_campaign_split_id singlesend_id singlesend_name post_type"
    ).split()
)


def config_schema() -> dict[str, Any]:
    from flowrun.config_schema import DURATION, SECRET

    return {
        "type": "object",
        "description": "SendGrid's Signed Event Webhook",
        "properties": {
            "public_key": {
                "description": "the verification key SendGrid shows (base64 DER); public, so a string or a secret",
                "oneOf": [{"type": "string"}, SECRET],
            },
            "tolerance": {**DURATION, "description": "refuse batches signed longer ago than this (default: no limit)"},
        },
        "required": ["public_key"],
        "additionalProperties": False,
    }


def key_problem(key: str) -> str | None:
    """Why a configured public key cannot verify anything, or None."""
    try:
        _public_key(key)
    except ValueError as exc:
        return str(exc)
    return None


@functools.lru_cache(maxsize=8)
def _public_key(key: str) -> ec.EllipticCurvePublicKey:
    try:
        loaded = load_der_public_key(base64.b64decode(key.strip(), validate=True))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"not a base64 DER public key ({type(exc).__name__})") from None
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        raise ValueError("not an ECDSA public key")
    return loaded


def valid_signature(key: str, timestamp: str, body: bytes, signature: str) -> bool:
    try:
        decoded = base64.b64decode(signature.strip(), validate=True)
        _public_key(key).verify(decoded, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


class Verifier:
    def deliveries(
        self, settings: Mapping[str, Any], headers: Mapping[str, str], url: str, body: bytes, now: datetime
    ) -> list[Delivery]:
        key = revealed(settings.get("public_key"))
        if not key:
            raise WebhookRefused(404, "unconfigured", "sendgrid has no public_key in the configuration")
        signature, timestamp = headers.get(SIGNATURE), headers.get(TIMESTAMP)
        if not signature or not timestamp:
            raise WebhookRefused(401, "missing_signature", f"no {SIGNATURE} and {TIMESTAMP} headers")
        if not valid_signature(key, timestamp, body, signature):
            raise WebhookRefused(401, "bad_signature", "the ECDSA signature does not match timestamp + body")
        if "tolerance" in settings:
            window = parse_duration(settings["tolerance"]).total_seconds()
            if not timestamp.strip().isdigit() or abs(now.timestamp() - int(timestamp)) > window:
                raise WebhookRefused(401, "stale_timestamp", f"signed outside the {int(window)} s window")
        out = []
        for n, (item, raw) in enumerate(split_array(body)):
            if not isinstance(item, dict):
                raise refuse_shape(f"event [{n}] is not an object: an Event Webhook body is an array of events")
            topic = checked_topic(item.get("event"))
            try:
                read(item)
            except ValueError as exc:
                raise refuse_shape(f"event [{n}] ({topic}): {exc}") from None
            out.append(Delivery(topic, raw, key_of(item), timestamp.strip()[:64]))
        return out


def key_of(item: Mapping[str, Any]) -> str:
    return event_id(
        NAME,
        item.get("sg_event_id"),
        item.get("event"),
        item.get("sg_message_id"),
        item.get("email"),
        item.get("timestamp"),
        item.get("url"),
    )


def message_id(item: Mapping[str, Any]) -> str | None:
    """The send's `X-Message-Id`: the part of `sg_message_id` before SendGrid's filter
    suffix, which is also the local part of `smtp-id` (absent for an asynchronous bounce)."""
    full = optional_text(item.get("sg_message_id"))
    if full and ".filter" in full:
        return full.split(".filter", 1)[0]
    smtp_id = optional_text(item.get("smtp-id"))
    if smtp_id and "@" in smtp_id:
        return smtp_id.strip("<>").split("@", 1)[0]
    return full


def read(item: Mapping[str, Any]) -> Engagement | None:
    name = item.get("event")
    occurred = epoch(item.get("timestamp"), "timestamp")
    recipient = required_text(item, "email")
    kind = KINDS.get(str(name))
    if kind is None:
        return None
    bounce_type = None
    if kind == "bounced":  # `type` tells a bounce (the server refused for good) from a block
        bounce_type = "soft" if item.get("type") == "blocked" else "hard"
    machine = None
    if kind == "opened":
        flag = item.get("sg_machine_open")
        machine = flag if isinstance(flag, bool) else machine_agent(item.get("useragent"))
    return Engagement(
        kind,
        provider=NAME,
        event_id=key_of(item),
        occurred_at=occurred,
        message_id=message_id(item),
        recipient=recipient,
        channel="email",
        url=required_text(item, "url") if kind == "clicked" else None,
        bounce_type=bounce_type,
        reason=optional_text(item.get("reason")),
        machine_open=machine,
        metadata={k: v for k, v in item.items() if k not in FIELDS},
    )


def normalise(body: Any, received_at: datetime | None) -> list[Event]:
    """One stored event, or a whole batch (an event file in a dry-run)."""
    items = body if isinstance(body, list) else [body]
    events = []
    for item in items:
        if not isinstance(item, Mapping):
            raise ValueError("a SendGrid event is a JSON object")
        engagement = read(item)
        if engagement is not None:
            events.append(engagement.event(item, str(item.get("event"))))
    return events
