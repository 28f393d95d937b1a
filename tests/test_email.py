"""Email over real SMTP sessions with TLS (a CA made for the test by trustme), and through
Postmark's API as documented: what the server received, and how refusals surface."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme

from flowrun.actions import REGISTRY
from flowrun.actions.base import DeliveryContext, PermanentError, RetryableError
from flowrun.config import Secret
from flowrun.serve.dispatcher.deliver import http_client
from tests.fakeproviders import FakePostmark, SmtpServer

KEY = "r_0123456789abcdef0123/steps[0]"
PARAMS = {"to": "ada@example.com", "subject": "Hello", "text": "Plain words", "category": "transactional"}


def deliver(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        http = http_client(2)
        try:
            ctx = DeliveryContext(http, settings, logging.getLogger("test"), 5.0)
            return await REGISTRY["email"].deliver(params, KEY, ctx)
        finally:
            await http.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    file = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(file))
    return authority, file


def server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


# With implicit TLS aiosmtpd cannot see that the session is encrypted, so it warns about AUTH.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_smtp_over_tls_with_login(ca: tuple[trustme.CA, Path], security: str) -> None:
    authority, ca_file = ca
    server = SmtpServer(security, server_context(authority), login=("shop", "s3cret"))
    smtp = {"host": "127.0.0.1", "port": server.port, "security": security, "ca_file": str(ca_file)}
    settings = {"from": "shop@knit.example", "smtp": {**smtp, "username": "shop", "password": Secret("s3cret", "P")}}
    try:
        deliver(PARAMS, settings)
        with pytest.raises(PermanentError, match="SMTP login refused: 535"):
            deliver(PARAMS, {**settings, "smtp": {**smtp, "username": "shop", "password": "wrong"}})
        if security == "starttls":
            with pytest.raises(PermanentError, match=r"AUTH extension not supported.*check smtp\.security"):
                deliver(PARAMS, {**settings, "smtp": {**settings["smtp"], "security": "none"}})
        with pytest.raises(RetryableError, match=r"SSLCertVerificationError|CERTIFICATE_VERIFY_FAILED"):
            deliver(PARAMS, {**settings, "smtp": {**smtp, "ca_file": None}})  # the system CAs do not know ours
    finally:
        server.close()
    [message] = server.messages
    assert (message["To"], message["Subject"], message.get_content().strip()) == (
        "ada@example.com",
        "Hello",
        "Plain words",
    )
    assert set(server.logins) == {"shop"}  # the good login, then the refused one (each mechanism tried)


def test_postmark_gets_text_html_headers_and_attachments() -> None:
    fake = FakePostmark("pm-token")
    settings = {
        "from": "Knit & Co <hello@knit.example>",
        "unsubscribe_url": "https://knit.example/u?e={email}",
        "postmark": {"server_token": Secret("pm-token", "T"), "api_url": fake.url},
    }
    try:
        answer = deliver({**PARAMS, "category": "marketing", "html": "<p>Rich <b>words</b></p>"}, settings)
        with pytest.raises(PermanentError, match="Postmark HTTP 422: error 300: Invalid 'To' address"):
            deliver({**PARAMS, "to": "not-an-address"}, settings)
        with pytest.raises(PermanentError, match="Postmark HTTP 401: error 10"):
            deliver(PARAMS, {**settings, "postmark": {"server_token": "wrong", "api_url": fake.url}})
        fake.failures = [(429, {})]
        with pytest.raises(RetryableError, match="Postmark HTTP 429"):
            deliver(PARAMS, settings)
    finally:
        fake.close()
    [sent] = fake.sent
    assert answer == {"message_id": sent["MessageID"]}
    assert (sent["To"], sent["Subject"], sent["TextBody"].strip()) == ("ada@example.com", "Hello", "Plain words")
    assert sent["HtmlBody"].strip() == "<p>Rich <b>words</b></p>"
    headers = {h["Name"]: h["Value"] for h in sent["Headers"]}
    assert headers["List-Unsubscribe"] == "<https://knit.example/u?e=ada%40example.com>"
    assert headers["X-Flowrun-Key"] == KEY


def test_purchase_order_attachments_reach_postmark_decoded_intact() -> None:
    fake = FakePostmark("pm-token")
    settings = {"from": "po@knit.example", "postmark": {"server_token": "pm-token", "api_url": fake.url}}

    async def go() -> None:
        http = http_client(2)
        try:
            ctx = DeliveryContext(http, {"via": "email"}, logging.getLogger("test"), 5.0, channels={"email": settings})
            params = {
                "send_to": "supplier@yarn.example",
                "supplier": "Yarn Co",
                "items": [{"sku": "BEANIE-CHA", "title": "Beanie", "quantity": 40}],
            }
            await REGISTRY["purchase_order"].deliver(REGISTRY["purchase_order"].finish_params(params, {}), KEY, ctx)
        finally:
            await http.aclose()

    try:
        asyncio.run(go())
    finally:
        fake.close()
    [sent] = fake.sent
    files = {a["Name"]: (a["ContentType"], base64.b64decode(a["Content"]).decode()) for a in sent["Attachments"]}
    csv = next(v for k, v in files.items() if k.endswith(".csv"))
    assert csv[0] == "text/csv" and csv[1].strip().splitlines() == ["sku,title,quantity", "BEANIE-CHA,Beanie,40"]
