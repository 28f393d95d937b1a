"""Providers as their public docs describe them, on 127.0.0.1: a real SMTP server (aiosmtpd),
Slack incoming webhooks and Twilio's Messages API. Tests check what these received."""

from __future__ import annotations

import base64
import json
import socket
import ssl
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.fakestores import FakeStore


class SmtpServer:
    """aiosmtpd on a free port; `messages` are the parsed MIME messages as received.

    `security`: "none", "starttls" (STARTTLS required before MAIL) or "tls" (implicit TLS,
    SMTPS), with `ssl_context` as the server's certificate. `login`: (user, password) makes
    authentication required. `refusals`: replies given, in order, to the next messages instead
    of accepting them (e.g. "451 4.3.0 try again later", "550 5.1.1 no such user")."""

    def __init__(
        self,
        security: str = "none",
        ssl_context: ssl.SSLContext | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.logins: list[str] = []
        self.refusals: list[str] = []
        self.refused: list[EmailMessage] = []
        server = self

        class Handler:
            async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
                server.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                parsed = message_from_bytes(envelope.original_content, policy=policy.default)
                assert isinstance(parsed, EmailMessage)
                if server.refusals:
                    server.refused.append(parsed)
                    return server.refusals.pop(0)
                server.messages.append(parsed)
                return "250 Message accepted for delivery"

        def authenticate(_server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any) -> AuthResult:
            user, password = data.login.decode(), data.password.decode()
            server.logins.append(user)
            return AuthResult(success=(user, password) == login, handled=False)

        with socket.socket() as probe:  # aiosmtpd checks its port by connecting: it needs a real one
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        options: dict[str, Any] = {}
        if security == "starttls":
            options |= {"tls_context": ssl_context, "require_starttls": True}
        elif security == "tls":  # aiosmtpd cannot tell an implicit-TLS session is encrypted
            options |= {"ssl_context": ssl_context, "auth_require_tls": False}
        if login is not None:
            options |= {"authenticator": authenticate, "auth_required": True}
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **options)
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
        if not to.startswith("+") or not to[1:].isdigit() or to == "+15005550001":  # Twilio's magic invalid number
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


class FakeOneSignal(FakeStore):
    """`POST /notifications`: `Authorization: Key <api key>`, app_id, target_channel, aliases.
    A request whose aliases match no subscribed user gets 200 with an empty id and `errors`."""

    def __init__(self, app_id: str, key: str, subscribed: set[str]) -> None:
        self.app_id, self.key, self.subscribed = app_id, key, subscribed
        self.notifications: list[dict[str, Any]] = []
        super().__init__()

    def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if request["headers"].get("authorization") != f"Key {self.key}":
            return 403, {"errors": ["Access denied.  Please include an 'Authorization: ...' header."]}, {}
        body = json.loads(request["body"])
        if body.get("app_id") != self.app_id:
            return (
                400,
                {"errors": ["app_id not found. You may be missing a Content-Type: application/json header."]},
                {},
            )
        if any(n.get("idempotency_key") == body.get("idempotency_key") for n in self.notifications):
            return 200, {"id": self.notifications[0]["id"], "external_id": None}, {}  # the repeat is dropped
        aliases = body.get("include_aliases", {}).get("external_id", [])
        if not set(aliases) & self.subscribed:
            return 200, {"id": "", "errors": {"invalid_aliases": {"external_id": aliases}}}, {}
        self.notifications.append({**body, "id": f"b98881cc-1e94-4366-bbd9-{len(self.notifications):012d}"})
        return 200, {"id": self.notifications[-1]["id"], "external_id": None}, {}


class FakeZendesk(FakeStore):
    """`POST /api/v2/tickets.json`: basic auth `{email}/token:{api token}`; 201 with the ticket;
    422 RecordInvalid for a ticket without a comment body; 429 with Retry-After when told."""

    def __init__(self, email: str, token: str) -> None:
        self.auth = "Basic " + base64.b64encode(f"{email}/token:{token}".encode()).decode()
        self.tickets: list[dict[str, Any]] = []
        self.idempotency_keys: list[str] = []
        super().__init__()

    def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if request["headers"].get("authorization") != self.auth:
            return 401, {"error": "Couldn't authenticate you"}, {}
        ticket = json.loads(request["body"])["ticket"]
        if not (ticket.get("comment") or {}).get("body"):
            details = {"base": [{"description": "Description: cannot be blank", "error": "BlankValue"}]}
            return 422, {"error": "RecordInvalid", "description": "Record validation errors", "details": details}, {}
        self.idempotency_keys.append(request["headers"].get("idempotency-key", ""))
        self.tickets.append({**ticket, "id": 35436 + len(self.tickets)})
        return 201, {"ticket": self.tickets[-1]}, {}


class FakePostmark(FakeStore):
    """Postmark's `POST /email`: X-Postmark-Server-Token; JSON in and out; 200 with
    ErrorCode 0 and a MessageID; 401 with ErrorCode 10 for a bad token; 422 with
    ErrorCode 300 for an invalid request (a bad address, no body at all)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.sent: list[dict[str, Any]] = []
        super().__init__()

    def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if request["path"] != "/email":
            return 404, {"ErrorCode": 404, "Message": "Not found"}, {}
        if request["headers"].get("X-Postmark-Server-Token") != self.token:
            return 401, {"ErrorCode": 10, "Message": "The Server API token you provided is invalid."}, {}
        if request["headers"].get("Content-Type") != "application/json":
            return 415, {"ErrorCode": 409, "Message": "JSON request required."}, {}
        body = json.loads(request["body"])
        if "@" not in str(body.get("To", "")):
            return 422, {"ErrorCode": 300, "Message": f"Invalid 'To' address: '{body.get('To')}'."}, {}
        if not body.get("TextBody") and not body.get("HtmlBody"):
            return 422, {"ErrorCode": 300, "Message": "Provide either email TextBody or HtmlBody or both."}, {}
        message_id = f"b7bc2f4a-e38e-4336-af7d-{len(self.sent):012d}"
        self.sent.append({**body, "MessageID": message_id})
        answer = {"To": body["To"], "SubmittedAt": "2026-11-22T10:00:00Z", "MessageID": message_id}
        return 200, {**answer, "ErrorCode": 0, "Message": "OK"}, {}


class FakeSendGrid(FakeStore):
    """SendGrid's v3 `POST /v3/mail/send`, as its API reference describes it: `Authorization:
    Bearer <API key>`; JSON with personalizations[].to[].email, from.email, subject and
    content (text/plain first); 202 with an empty body and `X-Message-Id`; errors as
    `{"errors": [{"message", "field", "help"}]}` (400), 401 for a bad key."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.sent: list[dict[str, Any]] = []
        super().__init__()

    def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if request["path"] != "/v3/mail/send":
            return 404, {"errors": [{"field": None, "message": "resource not found"}]}, {}
        if request["headers"].get("authorization") != f"Bearer {self.key}":
            message = "The provided authorization grant is invalid, expired, or revoked"
            return 401, {"errors": [{"field": None, "message": message, "help": None}]}, {}
        if request["headers"].get("content-type") != "application/json":
            return 400, _sendgrid_error("Content-Type should be application/json.", None), {}
        body = json.loads(request["body"])
        problem = _sendgrid_problem(body)
        if problem:
            return 400, _sendgrid_error(*problem), {}
        self.sent.append(body)
        return 202, "", {"X-Message-Id": f"W{len(self.sent):03d}fakeSGid_Q{len(self.sent):09d}"}


def _sendgrid_problem(body: dict[str, Any]) -> tuple[str, str] | None:
    recipients = [to for p in body.get("personalizations") or [] for to in p.get("to") or []]
    if not recipients:
        return "The personalizations field is required and must have at least one personalization.", "personalizations"
    if any("@" not in str(to.get("email", "")) for to in recipients):
        return "Does not contain a valid address.", "personalizations.0.to.0.email"
    if "@" not in str((body.get("from") or {}).get("email", "")):
        return "The from object must be provided for every email send.", "from.email"
    if not body.get("subject"):
        return "The subject is required.", "subject"
    types = [c.get("type") for c in body.get("content") or [] if c.get("value")]
    if not types:
        return "Unless a valid template_id is provided, the content parameter is required.", "content"
    if "text/plain" in types and types[0] != "text/plain":
        return "If present, text/plain must be first, followed by text/html, followed by any other content.", "content"
    if any(not isinstance(v, str) for v in (body.get("custom_args") or {}).values()):
        return "Custom args values must be strings.", "custom_args"
    return None


def _sendgrid_error(message: str, field: str | None) -> dict[str, Any]:
    return {"errors": [{"message": message, "field": field, "help": None}]}


class FakeMailgun(FakeStore):
    """Mailgun's `POST /v3/<domain>/messages`: basic auth `api:<API key>` (401 `Forbidden`
    otherwise); a form, multipart when it carries `attachment` files; from, to, subject and
    text or html required (400 `{"message": ...}`); 404 for a domain the account lacks;
    200 `{"id": "<...@domain>", "message": "Queued. Thank you."}`."""

    def __init__(self, key: str, domain: str) -> None:
        self.auth = "Basic " + base64.b64encode(f"api:{key}".encode()).decode()
        self.domain = domain
        self.sent: list[dict[str, Any]] = []
        super().__init__()

    def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if request["headers"].get("authorization") != self.auth:
            return 401, "Forbidden", {}
        domain = request["path"].removeprefix("/v3/").removesuffix("/messages")
        if request["path"] != f"/v3/{domain}/messages":
            return 404, {"message": "Not Found"}, {}
        if domain != self.domain:
            return 404, {"message": f"Domain not found: {domain}"}, {}
        form, files = _form(request["headers"].get("content-type", ""), request["body"])
        for name in ("from", "to", "subject"):
            if not form.get(name):
                return 400, {"message": f"{name} parameter is missing"}, {}
        if "@" not in form["to"]:
            return 400, {"message": "to parameter is not a valid address. please check documentation"}, {}
        if not form.get("text") and not form.get("html"):
            return 400, {"message": "Need at least one of 'text', 'html' or 'template' parameters specified"}, {}
        self.sent.append({**form, "attachments": files})
        message_id = f"20260301120000.{len(self.sent):016x}@{domain}"
        return 200, {"id": f"<{message_id}>", "message": "Queued. Thank you."}, {}


def _form(content_type: str, body: bytes) -> tuple[dict[str, str], list[tuple[str, bytes, str]]]:
    """A urlencoded or multipart/form-data body: its fields, and its files (name, bytes, type)."""
    if not content_type.startswith("multipart/form-data"):
        return {k: v[-1] for k, v in parse_qs(body.decode()).items()}, []
    parsed = message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body, policy=policy.default)
    fields, files = {}, []
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(data, bytes)
        if part.get_filename():
            files.append((part.get_filename() or "", data, part.get_content_type()))
        else:
            fields[name] = data.decode()
    return fields, files
