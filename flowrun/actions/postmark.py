"""Postmark's email API (POST /email, X-Postmark-Server-Token): the HTTP alternative to SMTP."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from flowrun.actions.base import DeliveryContext
from flowrun.actions.email_parts import parts
from flowrun.actions.provider import call


async def send_postmark(message: EmailMessage, settings: Mapping[str, Any], ctx: DeliveryContext) -> dict[str, Any]:
    found = parts(message)
    headers = {"Message-ID": str(message["Message-ID"]), **found.headers}
    body: dict[str, Any] = {
        "From": message["From"],
        "To": message["To"],
        "Subject": message["Subject"],
        "MessageStream": settings.get("message_stream", "outbound"),
        "Headers": [{"Name": name, "Value": value} for name, value in headers.items()],
        "Attachments": [
            {"Name": name, "Content": base64.b64encode(data).decode(), "ContentType": mime}
            for name, data, mime in found.attachments
        ],
    }
    if message["Reply-To"]:
        body["ReplyTo"] = message["Reply-To"]
    if found.text:
        body["TextBody"] = found.text
    if found.html:
        body["HtmlBody"] = found.html
    token = settings["server_token"]
    response = await call(
        ctx,
        "POST",
        f"{str(settings.get('api_url', 'https://api.postmarkapp.com')).rstrip('/')}/email",
        provider="Postmark",
        explain=lambda b: f"error {b['ErrorCode']}: {b['Message']}",
        json=body,
        headers={
            "X-Postmark-Server-Token": str(token),
            "Accept": "application/json",
        },
    )
    answer = response.json()
    # Postmark's MessageID, which every webhook about the message carries.
    return {"message_id": str(answer.get("MessageID") or message["Message-ID"])}
