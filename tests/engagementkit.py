"""Signing provider webhooks the way each provider does, for tests: SendGrid's ECDSA with a key
pair made here, Mailgun's HMAC block, Twilio's X-Twilio-Signature, Postmark's basic auth.
The provider bodies are written here from the providers' documented formats."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flowrun.config import Secret
from tests.conftest import SHARED_FIXTURES

POSTMARK_USER, POSTMARK_PASSWORD = "postmark-hook", "pm-pass-1"
MAILGUN_KEY = "mailgun-signing-key-1"
TWILIO_TOKEN = "twilio-auth-token-1"


class SendGridKeys:
    """A P-256 key pair as SendGrid keeps one: the public half base64 DER, as its UI shows it."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: str) -> dict[str, str]:
        signature = self.private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            "Content-Type": "application/json",
        }


def sendgrid_batch(*events: dict[str, Any]) -> bytes:
    """Compact JSON events, each followed by CRLF, as SendGrid's SDK tests build a batch."""
    return ("[" + ",\r\n".join(json.dumps(e, separators=(",", ":")) for e in events) + "]\r\n").encode()


def mailgun_body(event_data: dict[str, Any], timestamp: int, key: str = MAILGUN_KEY, token: str | None = None) -> bytes:
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    block = {"timestamp": str(timestamp), "token": token, "signature": signature}
    return json.dumps({"signature": block, "event-data": event_data}).encode()


def twilio_headers(url: str, params: dict[str, str], token: str = TWILIO_TOKEN) -> dict[str, str]:
    signed = url + "".join(k + params[k] for k in sorted(params))
    signature = base64.b64encode(hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest()).decode()
    return {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}


def twilio_form(params: dict[str, str]) -> bytes:
    return urlencode(params).encode()


def postmark_headers(user: str = POSTMARK_USER, password: str = POSTMARK_PASSWORD) -> dict[str, str]:
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}", "Content-Type": "application/json"}


def engagement_sources(sendgrid_public_key: str) -> dict[str, Any]:
    return {
        "postmark": {"username": Secret(POSTMARK_USER, "PU"), "password": Secret(POSTMARK_PASSWORD, "PP")},
        "sendgrid": {"public_key": sendgrid_public_key},
        "mailgun": {"signing_key": Secret(MAILGUN_KEY, "MK"), "tolerance": "5m"},
        "twilio": {"auth_token": Secret(TWILIO_TOKEN, "TT")},
    }


def fixture(relative: str) -> Path:
    """A file of ../shared/fixtures, or a loud skip when the folder is not beside the project."""
    path = SHARED_FIXTURES / relative
    if not path.is_file():
        pytest.skip(f"the shared provider fixtures are not beside the project ({path} is missing)")
    return path


def fixture_json(relative: str) -> Any:
    return json.loads(fixture(relative).read_text())
