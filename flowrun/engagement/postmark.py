"""Postmark's webhooks (Delivery, Bounce, SpamComplaint, Open, Click, SubscriptionChange).

Postmark signs nothing: the documented protection is HTTP basic auth in the webhook URL
(`https://user:password@shop.example/webhooks/postmark`), checked here in constant time.
Auth failures are 401, never 403: a 403 makes Postmark stop retrying. One event a POST, no
event id: the key is the record type, the bounce's ID when there is one, else the message,
recipient, time and link.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flowrun.engagement.base import (
    Delivery,
    Engagement,
    checked_topic,
    event_id,
    iso_time,
    load_json,
    machine_agent,
    optional_text,
    refuse_shape,
    required_text,
    revealed,
)
from flowrun.errors import WebhookRefused
from flowrun.events import Event

NAME = "postmark"
BATCHED = False  # one event a request
TOPIC_TYPES = {
    "Delivery": frozenset({"message.delivered"}),
    "Bounce": frozenset({"message.bounced"}),
    "SpamComplaint": frozenset({"message.complained"}),
    "Open": frozenset({"message.opened"}),
    "Click": frozenset({"message.clicked"}),
    "SubscriptionChange": frozenset({"message.unsubscribed"}),
}
# Postmark deactivates an address (Inactive: true) after these; the others may deliver later.
HARD_BOUNCES = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})


def config_schema() -> dict[str, Any]:
    from flowrun.config_schema import SECRET

    return {
        "type": "object",
        "description": "Postmark webhooks: the basic-auth user and password in the webhook URL you gave Postmark",
        "properties": {"username": SECRET, "password": SECRET},
        "required": ["username", "password"],
        "additionalProperties": False,
    }


class Verifier:
    def deliveries(
        self, settings: Mapping[str, Any], headers: Mapping[str, str], url: str, body: bytes, now: datetime
    ) -> list[Delivery]:
        user, password = revealed(settings.get("username")), revealed(settings.get("password"))
        if not user or not password:
            raise WebhookRefused(404, "unconfigured", "postmark has no username and password in the configuration")
        authorised(headers.get("authorization"), user, password)
        payload = load_json(body)
        if not isinstance(payload, dict):
            raise refuse_shape("a Postmark webhook body is one JSON object")
        topic = checked_topic(payload.get("RecordType"))
        try:
            read(payload)
        except ValueError as exc:
            raise refuse_shape(f"{topic}: {exc}") from None
        return [Delivery(topic, body, key(payload))]


def authorised(header: str | None, user: str, password: str) -> None:
    if not header:
        raise WebhookRefused(401, "missing_credentials", "no Authorization header (basic auth in the webhook URL)")
    scheme, _, encoded = header.strip().partition(" ")
    try:
        given_user, colon, given_password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        given_user, colon, given_password = b"", b"", b""
    # Both compared whatever the first says: the time taken does not tell which was wrong.
    same_user = hmac.compare_digest(given_user, user.encode())
    same_password = hmac.compare_digest(given_password, password.encode())
    if scheme.lower() != "basic" or not colon or not (same_user and same_password):
        raise WebhookRefused(401, "bad_credentials", "basic-auth user or password does not match")


def key(payload: Mapping[str, Any]) -> str:
    record = payload.get("RecordType")
    if payload.get("ID") is not None and record in ("Bounce", "SpamComplaint"):
        return event_id(NAME, f"{record}:{payload['ID']}")
    return event_id(
        NAME,
        None,
        record,
        payload.get("MessageID"),
        payload.get("Recipient") or payload.get("Email"),
        payload.get("DeliveredAt") or payload.get("BouncedAt") or payload.get("ReceivedAt") or payload.get("ChangedAt"),
        payload.get("OriginalLink"),
        payload.get("SuppressSending"),
    )


def read(payload: Mapping[str, Any]) -> Engagement | None:
    """The canonical reading of one record, None for a record type (or a resubscription)
    that is no engagement event; ValueError when a field has the wrong shape."""
    record = payload.get("RecordType")
    if record not in TOPIC_TYPES:
        return None
    common: dict[str, Any] = {
        "provider": NAME,
        "event_id": key(payload),
        "message_id": optional_text(payload.get("MessageID")),
        "channel": "email",
        "metadata": _metadata(payload.get("Metadata")),
    }
    if record == "Delivery":
        return Engagement(
            "delivered",
            occurred_at=iso_time(payload.get("DeliveredAt"), "DeliveredAt"),
            recipient=required_text(payload, "Recipient"),
            reason=optional_text(payload.get("Details")),
            **common,
        )
    if record == "Bounce":
        kind = optional_text(payload.get("Type")) or ""
        hard = kind in HARD_BOUNCES or payload.get("Inactive") is True
        return Engagement(
            "bounced",
            occurred_at=iso_time(payload.get("BouncedAt"), "BouncedAt"),
            recipient=required_text(payload, "Email"),
            bounce_type="hard" if hard else "soft",
            reason=optional_text(payload.get("Details")) or optional_text(payload.get("Description")) or kind,
            **common,
        )
    if record == "SpamComplaint":
        return Engagement(
            "complained",
            occurred_at=iso_time(payload.get("BouncedAt"), "BouncedAt"),
            recipient=required_text(payload, "Email"),
            **common,
        )
    if record == "Open":
        return Engagement(
            "opened",
            occurred_at=iso_time(payload.get("ReceivedAt"), "ReceivedAt"),
            recipient=required_text(payload, "Recipient"),
            machine_open=machine_agent(payload.get("UserAgent")),
            **common,
        )
    if record == "Click":
        return Engagement(
            "clicked",
            occurred_at=iso_time(payload.get("ReceivedAt"), "ReceivedAt"),
            recipient=required_text(payload, "Recipient"),
            url=required_text(payload, "OriginalLink"),
            **common,
        )
    # SubscriptionChange. A suppression for a hard bounce or a spam complaint repeats what
    # that Bounce or SpamComplaint record said; only the recipient's (or an admin's) own
    # suppression is an unsubscribe. A reactivation (SuppressSending false) is none.
    if payload.get("SuppressSending") is not True or payload.get("SuppressionReason") not in (
        None,
        "ManualSuppression",
    ):
        return None
    return Engagement(
        "unsubscribed",
        occurred_at=iso_time(payload.get("ChangedAt"), "ChangedAt"),
        recipient=required_text(payload, "Recipient"),
        reason=optional_text(payload.get("Origin")),
        **common,
    )


def normalise(body: Any, received_at: datetime | None) -> list[Event]:
    if not isinstance(body, Mapping):
        raise ValueError("a Postmark webhook body is one JSON object")
    engagement = read(body)
    return [] if engagement is None else [engagement.event(body, str(body.get("RecordType")))]


def _metadata(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("`Metadata` must be an object")
    return dict(value)
