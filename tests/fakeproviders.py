"""Providers as their public docs describe them, on 127.0.0.1: a real SMTP server (aiosmtpd),
Slack incoming webhooks and Twilio's Messages API. Tests check what these received."""

from __future__ import annotations

import base64
import json
import socket
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller

from tests.fakestores import FakeStore


class SmtpServer:
    """aiosmtpd on a free port; `messages` are the parsed MIME messages as received."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        server = self

        class Handler:
            async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
                server.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                parsed = message_from_bytes(envelope.original_content, policy=policy.default)
                assert isinstance(parsed, EmailMessage)
                server.messages.append(parsed)
                return "250 Message accepted for delivery"

        with socket.socket() as probe:  # aiosmtpd checks its port by connecting: it needs a real one
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


class FakeSlack(FakeStore):
    """Incoming webhooks: POST JSON with text or blocks; `ok` as plain text; errors as plain
    text codes (invalid_payload, no_text, no_service...); 429 with Retry-After."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        super().__init__()
        self.hook = f"{self.url}/services/T000/B000/XXXX"

    def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if not request["path"].startswith("/services/T000/B000/"):
            return 404, "no_service", {}
        try:
            body = json.loads(request["body"])
        except ValueError:
            return 400, "invalid_payload", {}
        if not body.get("text") and not body.get("blocks"):
            return 400, "no_text", {}
        self.posts.append(body)
        return 200, "ok", {}


class FakeTwilio(FakeStore):
    """`POST /2010-04-01/Accounts/{Sid}/Messages.json`: form-encoded To, From or
    MessagingServiceSid, Body; basic auth with the account SID and auth token; 201 with the
    message resource; errors as {code, message, more_info, status}."""

    SID = "AC" + "0" * 31 + "1"

    def __init__(self, token: str) -> None:
        self.auth = "Basic " + base64.b64encode(f"{self.SID}:{token}".encode()).decode()
        self.sent: list[dict[str, str]] = []
        super().__init__()

    def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if request["headers"].get("authorization") != self.auth:
            return 401, _twilio_error(20003, "Authenticate", 401), {}
        if request["path"] != f"/2010-04-01/Accounts/{self.SID}/Messages.json":
            return 404, _twilio_error(20404, "The requested resource was not found", 404), {}
        form = {k: v[-1] for k, v in parse_qs(request["body"].decode()).items()}
        to = form.get("To", "")
        if not to.startswith("+") or not to[1:].isdigit():
            return 400, _twilio_error(21211, f"The 'To' number {to} is not a valid phone number.", 400), {}
        if not form.get("Body"):
            return 400, _twilio_error(21602, "Message body is required.", 400), {}
        self.sent.append(form)
        sid = f"SM{len(self.sent):032x}"
        return 201, {"sid": sid, "status": "queued", "to": to, "from": form.get("From"), "body": form["Body"]}, {}


def _twilio_error(code: int, message: str, status: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
