"""Mailgun's Messages API (`POST /v3/<domain>/messages`, basic auth `api:<API key>`), a form
(multipart when there are attachments). Its answer's `id` (`<...@domain>`) is the
`message-id` its webhooks report without the angle brackets, and is kept so as the result's
`message_id`. The idempotency key goes out as the variable `v:flowrun_key`, which Mailgun
echoes in every event's `user-variables`. EU domains: `api_url: https://api.eu.mailgun.net`.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from flowrun.actions.base import DeliveryContext, PermanentError
from flowrun.actions.email_parts import Parts, parts
from flowrun.actions.provider import call

DEFAULT_API = "https://api.mailgun.net"


def request_form(message: EmailMessage, key: str, found: Parts) -> dict[str, str]:
    form = {"from": str(message["From"]), "to": str(message["To"]), "subject": str(message["Subject"])}
    if found.text:
        form["text"] = found.text
    if found.html:
        form["html"] = found.html
    if message["Reply-To"]:
        form["h:Reply-To"] = str(message["Reply-To"])
    form |= {f"h:{name}": value for name, value in found.headers.items()}
    form["v:flowrun_key"] = key
    return form


async def send_mailgun(
    message: EmailMessage, key: str, settings: Mapping[str, Any], ctx: DeliveryContext
) -> dict[str, Any]:
    domain = str(settings.get("domain") or "")
    if not domain or "/" in domain:
        raise PermanentError(f"channels.email.mailgun.domain {domain!r} is not a sending domain (mg.example.com)")
    found = parts(message)
    files = [("attachment", (name, data, mime)) for name, data, mime in found.attachments] or None
    response = await call(
        ctx,
        "POST",
        f"{str(settings.get('api_url', DEFAULT_API)).rstrip('/')}/v3/{domain}/messages",
        provider="Mailgun",
        explain=lambda b: str(b["message"]),
        data=request_form(message, key, found),
        files=files,
        auth=("api", str(settings["api_key"])),
    )
    answer = response.json()
    given = str(answer.get("id") or message["Message-ID"])
    return {"message_id": given.strip().strip("<>")}
