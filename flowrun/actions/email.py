"""email: a message over SMTP or an email API, with text and HTML parts."""

from __future__ import annotations

import asyncio
import html as html_lib
import re
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any
from urllib.parse import quote

from flowrun.actions.base import (
    CATEGORY,
    TEMPLATED,
    ActionType,
    CompileContext,
    DeliveryContext,
    PermanentError,
    RetryableError,
    compile_tree,
    obj,
    result,
    revealed,
    stable_token,
)
from flowrun.config_schema import SECRET

_TAGS = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"[ \t]+")


def html_to_text(html: str) -> str:
    text = re.sub(r"(?i)<li[^>]*>", "\n- ", html)
    text = re.sub(r"(?i)</t[dh]>", " ", text)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</h\d>|</tr>|</ul>|</ol>", "\n", text)
    text = re.sub(r"(?is)<(script|style).*?</\1>", "", text)
    text = _TAGS.sub("", text)
    lines = [_SPACE.sub(" ", line).strip() for line in html_lib.unescape(text).splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip() + "\n"


class Email(ActionType):
    name = "email"
    summary = "send an email (SMTP, Postmark, SendGrid or Mailgun); `template` is a Jinja2 file next to the flow"
    channel = "email"
    params_schema = obj(
        ["to", "subject"],
        to=TEMPLATED,
        subject=TEMPLATED,
        template={"type": "string", "description": "HTML or text template file, relative to the flow"},
        text={"type": "string", "description": "plain-text body (derived from the HTML when absent)"},
        html={"type": "string", "description": "inline HTML body"},
        from_={"type": "string"},
        reply_to=TEMPLATED,
        attachments={"type": "array", "items": {"type": "string"}},
        category=CATEGORY,
    )
    params_schema["properties"]["from"] = params_schema["properties"].pop("from_")
    result_schema = result(
        message_id={"type": "string", "description": "the provider's id, which its engagement webhooks report"}
    )
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["from"],
        "properties": {
            "from": {"type": "string", "description": "the From address, e.g. 'Knit & Co <hello@knit.example>'"},
            "smtp": {
                "type": "object",
                "additionalProperties": False,
                "required": ["host"],
                "properties": {
                    "host": {"type": "string"},
                    "port": {"type": "integer"},
                    "security": {"enum": ["starttls", "tls", "none"], "description": "default starttls"},
                    "username": {"type": "string"},
                    "password": SECRET,
                    "ca_file": {"type": "string", "description": "trust this CA (a private relay)"},
                },
            },
            "postmark": {
                "type": "object",
                "additionalProperties": False,
                "required": ["server_token"],
                "properties": {
                    "server_token": SECRET,
                    "api_url": {"type": "string"},
                    "message_stream": {"type": "string"},
                },
            },
            "sendgrid": {
                "type": "object",
                "additionalProperties": False,
                "required": ["api_key"],
                "properties": {
                    "api_key": SECRET,
                    "api_url": {"type": "string", "description": "default https://api.sendgrid.com"},
                },
            },
            "mailgun": {
                "type": "object",
                "additionalProperties": False,
                "required": ["api_key", "domain"],
                "properties": {
                    "api_key": SECRET,
                    "domain": {"type": "string", "description": "the sending domain, e.g. mg.knit.example"},
                    "api_url": {"type": "string", "description": "default https://api.mailgun.net (EU: api.eu)"},
                },
            },
            "unsubscribe_url": {
                "type": "string",
                "description": "List-Unsubscribe link on marketing mail; {email} is replaced",
            },
            "unsubscribe_mailto": {"type": "string"},
        },
        "oneOf": [{"required": [name]} for name in ("smtp", "postmark", "sendgrid", "mailgun")],
    }

    def compile_params(self, raw: Any, ctx: CompileContext) -> Any:
        params = dict(raw)
        template_name = params.pop("template", None)
        html_source = params.pop("html", None)
        compiled: dict[str, Any] = compile_tree(params, ctx.path, ctx)
        if html_source is not None:
            compiled["html"] = ctx.template(html_source, (*ctx.path, "html"), html=True) or html_source
        if template_name is not None:
            compiled["template"] = ctx.template_file(template_name, (*ctx.path, "template")) or template_name
            compiled["template_file"] = template_name
        if not any(k in compiled for k in ("template", "text", "html")):
            ctx.report(ctx.path, "email needs a body", "add `template: file.html.j2`, `text:` or `html:`")
        return compiled

    def unconfigured(self, channels: Mapping[str, Any], sources: Mapping[str, Any]) -> str | None:
        return None if channels.get("email") else "channels.email (from, and smtp, postmark, sendgrid or mailgun)"

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        if "template_file" in params:
            body, name = params.pop("template"), params.pop("template_file")
            params["html" if ".htm" in name else "text"] = body
            params["template"] = name
        if params.get("html") and not params.get("text"):
            params["text"] = html_to_text(params["html"])
        return super().finish_params(params, context)

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"message_id": f"<{stable_token(key, 16).lower()}@dry-run.flowrun>"}

    def rate_key(self, params: Mapping[str, Any], ctx: DeliveryContext) -> tuple[str, str] | None:
        for provider in ("postmark", "sendgrid", "mailgun"):
            if provider in ctx.settings:
                return (provider, "")
        return ("smtp", str((ctx.settings.get("smtp") or {}).get("host", "")))

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        return await send_email(params, key, ctx)


Attachment = tuple[str, bytes, str]  # file name, content, MIME type


def build_message(
    params: Mapping[str, Any], key: str, settings: Mapping[str, Any], attachments: Sequence[Attachment] = ()
) -> EmailMessage:
    """Text and HTML as alternatives, attachments beside them; List-Unsubscribe on marketing."""
    message = EmailMessage()
    sender = str(params.get("from") or settings["from"])
    message["From"] = sender
    message["To"] = str(params["to"])
    message["Subject"] = str(params["subject"])
    message["Date"] = formatdate(usegmt=True)
    domain = sender.rsplit("@", 1)[-1].strip("> ") or "flowrun"
    message["Message-ID"] = f"<{stable_token(key, 16).lower()}@{domain}>"
    message["X-Flowrun-Key"] = key
    if params.get("reply_to"):
        message["Reply-To"] = str(params["reply_to"])
    if params.get("category", "marketing") == "marketing":
        links = []
        if settings.get("unsubscribe_url"):
            recipient = parseaddr(str(params["to"]))[1] or str(params["to"])  # the address, not "Name <address>"
            links.append(f"<{str(settings['unsubscribe_url']).replace('{email}', quote(recipient))}>")
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if settings.get("unsubscribe_mailto"):
            links.append(f"<mailto:{settings['unsubscribe_mailto']}?subject=unsubscribe>")
        if links:
            message["List-Unsubscribe"] = ", ".join(links)
    message.set_content(str(params.get("text") or html_to_text(str(params.get("html") or ""))))
    if params.get("html"):
        message.add_alternative(str(params["html"]), subtype="html")
    for name, content, mime in attachments:
        maintype, _, subtype = mime.partition("/")
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
    return message


async def send_email(
    params: Mapping[str, Any], key: str, ctx: DeliveryContext, attachments: Sequence[Attachment] = ()
) -> dict[str, Any]:
    settings = revealed(ctx.settings)
    if not settings.get("from"):
        raise PermanentError("channels.email is not configured (from, and smtp, postmark, sendgrid or mailgun)")
    message = build_message(params, key, settings, attachments)
    if "postmark" in settings:
        from flowrun.actions.postmark import send_postmark

        return await send_postmark(message, settings["postmark"], ctx)
    if "sendgrid" in settings:
        from flowrun.actions.sendgrid import send_sendgrid

        return await send_sendgrid(message, key, settings["sendgrid"], ctx)
    if "mailgun" in settings:
        from flowrun.actions.mailgun import send_mailgun

        return await send_mailgun(message, key, settings["mailgun"], ctx)
    await asyncio.to_thread(_smtp_send, message, settings["smtp"], ctx.timeout_s)
    return {"message_id": str(message["Message-ID"])}  # flowrun's own, deterministic in the key


def _smtp_send(message: EmailMessage, smtp: Mapping[str, Any], timeout: float) -> None:
    security = smtp.get("security", "starttls")
    context = ssl.create_default_context(cafile=smtp.get("ca_file"))
    host, port = smtp["host"], smtp.get("port") or {"tls": 465, "starttls": 587}.get(security, 25)
    try:
        client: smtplib.SMTP
        if security == "tls":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if security == "starttls":
                client.starttls(context=context)
            if smtp.get("username"):
                client.login(smtp["username"], smtp.get("password") or "")
            client.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise PermanentError(f"SMTP login refused: {exc.smtp_code} {_text(exc.smtp_error)}") from None
    except smtplib.SMTPNotSupportedError as exc:  # e.g. AUTH offered only after STARTTLS
        raise PermanentError(f"SMTP {host}:{port}: {exc} (check smtp.security)") from None
    except smtplib.SMTPRecipientsRefused as exc:
        refused = "; ".join(
            f"{who}: {code} {text.decode(errors='replace')}" for who, (code, text) in exc.recipients.items()
        )
        raise (PermanentError if _permanent(exc.recipients) else RetryableError)(f"SMTP refused {refused}") from None
    except smtplib.SMTPResponseException as exc:
        text = f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}"
        raise (PermanentError if 500 <= exc.smtp_code < 600 else RetryableError)(text) from None
    except (TimeoutError, smtplib.SMTPServerDisconnected) as exc:
        if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
            raise RetryableError(f"SMTP {host}:{port}: no answer within {timeout:g} s") from None
        raise RetryableError(f"SMTP {host}:{port}: the server closed the connection: {exc}") from None
    except ConnectionRefusedError:
        raise RetryableError(f"SMTP {host}:{port}: could not connect: connection refused") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise RetryableError(f"SMTP {host}:{port}: {type(exc).__name__}: {exc}") from None


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _permanent(recipients: Mapping[str, tuple[int, bytes]]) -> bool:
    return all(500 <= code < 600 for code, _ in recipients.values())
