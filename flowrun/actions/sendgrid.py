"""SendGrid's v3 Mail Send API (`POST /v3/mail/send`, `Authorization: Bearer <API key>`).

A 202 with an empty body accepts the message; its `X-Message-Id` header is the id the
Event Webhook's `sg_message_id` starts with, kept as the result's `message_id`. The
idempotency key also goes out as the custom argument `flowrun_key`, which SendGrid echoes
on every event of the message.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from flowrun.actions.base import DeliveryContext
from flowrun.actions.email_parts import address, parts
from flowrun.actions.provider import call

DEFAULT_API = "https://api.sendgrid.com"


def request_body(message: EmailMessage, key: str) -> dict[str, Any]:
    found = parts(message)
    content = [{"type": "text/plain", "value": found.text}] if found.text else []  # text/plain must come first
    if found.html:
        content.append({"type": "text/html", "value": found.html})
    body: dict[str, Any] = {
        "personalizations": [{"to": [address(message["To"])]}],
        "from": address(message["From"]),
        "subject": str(message["Subject"]),
        "content": content,
        "headers": found.headers,
        "custom_args": {"flowrun_key": key},
    }
    if message["Reply-To"]:
        body["reply_to"] = address(message["Reply-To"])
    if found.attachments:
        body["attachments"] = [
            {"content": base64.b64encode(data).decode(), "type": mime, "filename": name, "disposition": "attachment"}
            for name, data, mime in found.attachments
        ]
    return body


async def send_sendgrid(
    message: EmailMessage, key: str, settings: Mapping[str, Any], ctx: DeliveryContext
) -> dict[str, Any]:
    response = await call(
        ctx,
        "POST",
        f"{str(settings.get('api_url', DEFAULT_API)).rstrip('/')}/v3/mail/send",
        provider="SendGrid",
        explain=_errors,
        json=request_body(message, key),
        headers={"Authorization": f"Bearer {settings['api_key']}"},
    )
    return {"message_id": response.headers.get("x-message-id") or str(message["Message-ID"])}


def _errors(body: Any) -> str:
    """`{"errors": [{"message", "field", "help"}]}` as one line."""
    return "; ".join(f"{e['message']} ({e['field']})" if e.get("field") else str(e["message"]) for e in body["errors"])
