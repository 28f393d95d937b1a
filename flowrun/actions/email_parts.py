"""An EmailMessage as the email APIs take it: text, HTML, attachments and the headers that
travel beside them (Postmark, SendGrid and Mailgun each want the parts, not the MIME)."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parseaddr

# Headers flowrun sets that an API send must carry itself (the API writes the others).
EXTRA_HEADERS = ("List-Unsubscribe", "List-Unsubscribe-Post", "X-Flowrun-Key")


@dataclass(frozen=True)
class Parts:
    text: str | None
    html: str | None
    attachments: list[tuple[str, bytes, str]] = field(default_factory=list)  # name, content, MIME type
    headers: dict[str, str] = field(default_factory=dict)


def parts(message: EmailMessage) -> Parts:
    text = html = None
    attachments: list[tuple[str, bytes, str]] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        name = part.get_filename()
        if name:
            content = part.get_payload(decode=True)
            assert isinstance(content, bytes)
            attachments.append((name, content, part.get_content_type()))
        elif part.get_content_type() == "text/plain":
            text = part.get_content()
        elif part.get_content_type() == "text/html":
            html = part.get_content()
    headers = {name: str(message[name]) for name in EXTRA_HEADERS if message[name]}
    return Parts(text, html, attachments, headers)


def address(value: object) -> dict[str, str]:
    """`Knit & Co <hello@knit.example>` as {"email", "name"} (no name: the address alone)."""
    name, email = parseaddr(str(value))
    return {"email": email, "name": name} if name else {"email": email}
