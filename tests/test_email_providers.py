"""Email through SendGrid's and Mailgun's APIs against fakes written from their docs, and the
provider message id every message action keeps as `message_id`: the id that provider's
engagement webhooks report, so the event of a message can be tied to the step that sent it."""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flowrun.actions import REGISTRY
from flowrun.actions.base import DeliveryContext, PermanentError, RetryableError
from flowrun.actions.email import send_email
from flowrun.config import Secret, load_config
from flowrun.errors import ConfigError
from flowrun.events.normalise import normalise
from flowrun.serve.dispatcher.deliver import http_client
from tests.fakeproviders import FakeMailgun, FakeOneSignal, FakePostmark, FakeSendGrid, FakeTwilio, SmtpServer

KEY = "r_0123456789abcdef0123/steps[0]"
PARAMS = {"to": "Ada Lovelace <ada@example.com>", "subject": "Hello", "text": "Plain words", "category": "marketing"}
HTML = {**PARAMS, "html": "<p>Rich <b>words</b></p>"}
ATTACHED = [("po-1042.csv", b"sku,quantity\nBEANIE-CHA,40\n", "text/csv")]


def run(action: str, params: dict[str, Any], settings: dict[str, Any], attachments: list[Any] | None = None) -> Any:
    async def go() -> dict[str, Any]:
        http = http_client(2)
        try:
            ctx = DeliveryContext(http, settings, logging.getLogger("test"), 5.0)
            if attachments:
                return await send_email(params, KEY, ctx, attachments)
            return await REGISTRY[action].deliver(params, KEY, ctx)
        finally:
            await http.aclose()

    return asyncio.run(go())


def email_settings(provider: str, fake: Any, **extra: Any) -> dict[str, Any]:
    return {
        "from": "Knit & Co <hello@knit.example>",
        "unsubscribe_url": "https://knit.example/u?e={email}",
        provider: {"api_url": fake.url, **extra},
    }


@pytest.fixture
def sendgrid():  # type: ignore[no-untyped-def]
    fake = FakeSendGrid("SG.key")
    yield fake
    fake.close()


@pytest.fixture
def mailgun():  # type: ignore[no-untyped-def]
    fake = FakeMailgun("mg-key", "mg.knit.example")
    yield fake
    fake.close()


def test_sendgrid_gets_the_parts_headers_and_attachments_and_its_id_is_kept(sendgrid: FakeSendGrid) -> None:
    settings = email_settings("sendgrid", sendgrid, api_key=Secret("SG.key", "K"))
    answer = run("email", HTML, settings, ATTACHED)
    [sent] = sendgrid.sent
    assert answer == {"message_id": "W001fakeSGid_Q000000001"}  # the 202's X-Message-Id
    assert sent["personalizations"] == [{"to": [{"email": "ada@example.com", "name": "Ada Lovelace"}]}]
    assert sent["from"] == {"email": "hello@knit.example", "name": "Knit & Co"}
    assert [c["type"] for c in sent["content"]] == ["text/plain", "text/html"]
    assert sent["content"][1]["value"].strip() == "<p>Rich <b>words</b></p>"
    assert sent["headers"]["List-Unsubscribe"] == "<https://knit.example/u?e=ada%40example.com>"  # the address alone
    assert sent["headers"]["X-Flowrun-Key"] == KEY and sent["custom_args"] == {"flowrun_key": KEY}
    [attachment] = sent["attachments"]
    assert (attachment["filename"], attachment["type"], base64.b64decode(attachment["content"])) == (
        "po-1042.csv",
        "text/csv",
        ATTACHED[0][1],
    )


def test_sendgrid_errors_surface_and_limits_are_retried(sendgrid: FakeSendGrid) -> None:
    settings = email_settings("sendgrid", sendgrid, api_key=Secret("SG.key", "K"))
    with pytest.raises(PermanentError, match="SendGrid HTTP 401: The provided authorization grant is invalid"):
        run("email", PARAMS, {**settings, "sendgrid": {"api_url": sendgrid.url, "api_key": "SG.wrong"}})
    with pytest.raises(PermanentError, match=r"SendGrid HTTP 400: Does not contain a valid address\. \(personal"):
        run("email", {**PARAMS, "to": "nobody"}, settings)
    sendgrid.failures = [(429, {"Retry-After": "12"}), (503, {})]
    with pytest.raises(RetryableError, match="SendGrid HTTP 429") as limited:
        run("email", PARAMS, settings)
    with pytest.raises(RetryableError, match="SendGrid HTTP 503"):
        run("email", PARAMS, settings)
    assert limited.value.retry_after == 12.0
    assert sendgrid.sent == []


def test_mailgun_gets_a_form_multipart_with_files_and_its_id_is_kept(mailgun: FakeMailgun) -> None:
    settings = email_settings("mailgun", mailgun, api_key=Secret("mg-key", "K"), domain="mg.knit.example")
    plain = run("email", HTML, settings)
    attached = run("email", PARAMS, settings, ATTACHED)
    first, second = mailgun.sent
    assert plain == {"message_id": "20260301120000.0000000000000001@mg.knit.example"}  # without the <>
    assert attached["message_id"].endswith("2@mg.knit.example")
    assert (first["to"], first["subject"], first["text"].strip(), first["html"].strip()) == (
        "Ada Lovelace <ada@example.com>",
        "Hello",
        "Plain words",
        "<p>Rich <b>words</b></p>",
    )
    assert first["from"] == "Knit & Co <hello@knit.example>"
    assert first["h:X-Flowrun-Key"] == KEY and first["v:flowrun_key"] == KEY
    assert first["h:List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert first["attachments"] == [] and second["attachments"] == ATTACHED


def test_mailgun_errors_surface_and_limits_are_retried(mailgun: FakeMailgun) -> None:
    settings = email_settings("mailgun", mailgun, api_key=Secret("mg-key", "K"), domain="mg.knit.example")
    with pytest.raises(PermanentError, match="Mailgun HTTP 401: Forbidden"):
        run("email", PARAMS, {**settings, "mailgun": {**settings["mailgun"], "api_key": "wrong"}})
    with pytest.raises(PermanentError, match=r"Mailgun HTTP 404: Domain not found: other\.example"):
        run("email", PARAMS, {**settings, "mailgun": {**settings["mailgun"], "domain": "other.example"}})
    with pytest.raises(PermanentError, match="not a sending domain"):
        run("email", PARAMS, {**settings, "mailgun": {**settings["mailgun"], "domain": "x/../../v4"}})
    with pytest.raises(PermanentError, match="to parameter is not a valid address"):
        run("email", {**PARAMS, "to": "nobody"}, settings)
    mailgun.failures = [(429, {"Retry-After": "3"}), (500, {})]
    with pytest.raises(RetryableError) as limited:
        run("email", PARAMS, settings)
    with pytest.raises(RetryableError, match="Mailgun HTTP 500"):
        run("email", PARAMS, settings)
    assert limited.value.retry_after == 3.0
    assert mailgun.sent == []


# -- the id kept at send time is the one the provider's webhooks carry ----------------------


def _webhook_message_id(source: str, body: Any) -> str:
    [event] = normalise(body, source=source, topic="x", received_at=None)
    message_id: str = event.data["message"]["id"]
    return message_id


def test_sendgrid_and_mailgun_send_ids_match_their_webhooks(sendgrid: FakeSendGrid, mailgun: FakeMailgun) -> None:
    sent = run("email", PARAMS, email_settings("sendgrid", sendgrid, api_key="SG.key"))["message_id"]
    event = {  # as SendGrid's Event Webhook reports the message: sg_message_id = X-Message-Id + filter suffix
        "email": "ada@example.com",
        "event": "delivered",
        "timestamp": 1772366400,
        "sg_event_id": "d1",
        "sg_message_id": f"{sent}.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
        "smtp-id": f"<{sent}@ismtpd0039p1iad1.sendgrid.net>",
    }
    assert _webhook_message_id("sendgrid", event) == sent
    settings = email_settings("mailgun", mailgun, api_key="mg-key", domain="mg.knit.example")
    sent = run("email", PARAMS, settings)["message_id"]
    data = {"event": "opened", "id": "o1", "timestamp": 1772366400.25, "recipient": "ada@example.com"}
    data["message"] = {"headers": {"message-id": sent}}
    assert _webhook_message_id("mailgun", {"event-data": data}) == sent


def test_postmark_and_twilio_send_ids_match_their_webhooks() -> None:
    postmark, twilio = FakePostmark("pm-token"), FakeTwilio("tw-token")
    try:
        settings = {"from": "hello@knit.example", "postmark": {"server_token": "pm-token", "api_url": postmark.url}}
        mail = run("email", PARAMS, settings)["message_id"]
        sms_settings = {"account_sid": FakeTwilio.SID, "auth_token": "tw-token", "from": "+14155550100"}
        hook = "https://shop.example/webhooks/twilio"
        sms = run(
            "sms",
            {"to": "+14155550123", "text": "hi"},
            {**sms_settings, "api_url": twilio.url, "status_callback": hook},
        )
    finally:
        postmark.close()
        twilio.close()
    assert twilio.sent[0]["StatusCallback"] == hook  # Twilio posts the statuses to flowrun's port
    record = {"RecordType": "Delivery", "MessageID": mail, "Recipient": "ada@example.com"}
    assert _webhook_message_id("postmark", {**record, "DeliveredAt": "2026-03-01T12:00:00Z"}) == mail
    assert sms["message_id"] == sms["sid"]
    callback = {"MessageSid": sms["sid"], "MessageStatus": "delivered", "To": "+14155550123"}
    [event] = normalise(callback, source="twilio", topic="delivered", received_at=datetime(2026, 3, 1, tzinfo=UTC))
    assert event.data["message"]["id"] == sms["message_id"]


def test_push_and_smtp_keep_their_message_id() -> None:
    onesignal = FakeOneSignal("app-1", "os-key", subscribed={"cust-7"})
    server = SmtpServer()
    try:
        push = run(
            "push",
            {"to": "cust-7", "title": "Back"},
            {"app_id": "app-1", "api_key": "os-key", "api_url": onesignal.url},
        )
        smtp = run(
            "email",
            PARAMS,
            {"from": "hello@knit.example", "smtp": {"host": "127.0.0.1", "port": server.port, "security": "none"}},
        )
    finally:
        onesignal.close()
        server.close()
    assert push["message_id"] == push["id"] == onesignal.notifications[0]["id"]
    [received] = server.messages
    assert smtp["message_id"] == received["Message-ID"]  # the deterministic id flowrun set


def test_dry_run_results_carry_message_id_as_serve_does() -> None:
    for action, params in (("email", PARAMS), ("sms", {"to": "+14155550123", "text": "hi"}), ("push", {"to": "c"})):
        simulated = REGISTRY[action].simulate(params, KEY)
        assert simulated["message_id"] and simulated == REGISTRY[action].simulate(params, KEY)
        assert REGISTRY[action].result_has(("message_id",))


def test_the_project_file_chooses_one_email_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_KEY", "SG.x")
    file = tmp_path / "flowrun.yaml"
    file.write_text("channels:\n  email:\n    from: a@knit.example\n    sendgrid: {api_key: {env: SG_KEY}}\n")
    assert load_config(file).channels["email"]["sendgrid"]["api_key"].reveal() == "SG.x"
    file.write_text(
        "channels:\n  email:\n    from: a@knit.example\n    mailgun: {api_key: {env: SG_KEY}}\n"
    )  # no domain
    with pytest.raises(ConfigError, match="domain"):
        load_config(file)
    file.write_text(
        "channels:\n  email:\n    from: a@knit.example\n    smtp: {host: h}\n    sendgrid: {api_key: {env: SG_KEY}}\n"
    )
    with pytest.raises(ConfigError):
        load_config(file)
