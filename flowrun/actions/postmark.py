"""Postmark's email API (POST /email, X-Postmark-Server-Token): the HTTP alternative to SMTP."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from flowrun.actions.base import DeliveryContext
from flowrun.actions.provider import call


async def send_postmark(message: EmailMessage, settings: Mapping[str, Any], ctx: DeliveryContext) -> dict[str, Any]:
    body: dict[str, Any] = {
        "From": message["From"],
        "To": message["To"],
        "Subject": message["Subject"],
        "MessageStream": settings.get("message_stream", "outbound"),
        "Headers": [
            {"Name": name, "Value": str(message[name])}
            for name in ("Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post", "X-Flowrun-Key")
            if message[name]
        ],
        "Attachments": [],
    }
    if message["Reply-To"]:
        body["ReplyTo"] = message["Reply-To"]
    for part in message.walk():
        if part.is_multipart():
            continue
        if part.get_filename():
            content = part.get_payload(decode=True)
            assert isinstance(content, bytes)
            body["Attachments"].append(
                {
                    "Name": part.get_filename(),
                    "Content": base64.b64encode(content).decode(),
                    "ContentType": part.get_content_type(),
                }
            )
        elif part.get_content_type() == "text/plain":
            body["TextBody"] = part.get_content()
        elif part.get_content_type() == "text/html":
            body["HtmlBody"] = part.get_content()
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
    return {"message_id": str(answer.get("MessageID") or message["Message-ID"])}
