"""Provider webhooks through the real ASGI app into a real SQLite inbox: signed ones stored
(one row per event, a retry stored once), forged or unsigned ones 401 and stored nowhere,
bodies of the wrong shape or size 4xx; the rows normalise as the worker will read them."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from flowrun.engagement import sendgrid
from flowrun.events.normalise import normalise, parse_json
from flowrun.serve.ingest import InboxWriter
from flowrun.serve.metrics import Metrics
from flowrun.serve.webhooks import build_app
from flowrun.state import codec
from flowrun.state.database import make_engine
from flowrun.state.migrations import migrate
from flowrun.state.schema import inbox
from tests.conftest import ROOT
from tests.engagementkit import (
    SendGridKeys,
    engagement_sources,
    fixture_json,
    mailgun_body,
    postmark_headers,
    sendgrid_batch,
    twilio_form,
    twilio_headers,
)
from tests.servekit import Clock, config, database_params, database_url

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Port:
    def __init__(self, tmp_path: Path, database: str = "sqlite", **source_overrides: Any) -> None:
        self.engine = make_engine(database_url(database, tmp_path))
        migrate(self.engine)
        self.writer = InboxWriter(self.engine)
        self.writer.start()
        self.clock = Clock(NOW)
        self.keys = SendGridKeys()
        sources = {**engagement_sources(self.keys.public), **source_overrides}
        self.metrics = Metrics(sources=sources)
        settings = config(tmp_path, "unused", ROOT / "flows", sources=sources, max_body_bytes=64 * 1024)

        async def healthy() -> bool:
            return True

        self.app = build_app(settings, self.writer.store, self.metrics, healthy, now=self.clock)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://flowrun") as client:
                return await client.post(path, content=body, headers=headers)

        return asyncio.run(go())

    def rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(inbox).order_by(inbox.c.seq)).mappings()]

    def counted(self, name: str, **labels: str) -> float:
        return self.metrics.value(name, **labels)

    def close(self) -> None:
        self.writer.stop()
        self.engine.dispose()


@pytest.fixture
def port(tmp_path: Path):  # type: ignore[no-untyped-def]
    made = Port(tmp_path)
    yield made
    made.close()


def as_worker_reads(row: dict[str, Any]) -> list[Any]:
    return normalise(
        parse_json(row["body"]), source=row["source"], topic=row["topic"], received_at=codec._aware(row["received_at"])
    )


# -- Postmark -------------------------------------------------------------------------------


def test_postmark_with_its_basic_auth_is_stored_and_reads_as_the_event(port: Port) -> None:
    body = json.dumps(fixture_json("postmark/webhooks/bounce.json")).encode()
    response = port.post("/webhooks/postmark", body, postmark_headers())
    assert response.status_code == 200 and response.json() == {"status": "accepted", "accepted": 1, "duplicate": 0}
    [row] = port.rows()
    assert (row["source"], row["topic"], row["delivery_id"], row["body"]) == (
        "postmark",
        "Bounce",
        "postmark:Bounce:42",
        body,
    )
    [event] = as_worker_reads(row)
    assert (event.type, event.data["message"]["bounce_type"]) == ("message.bounced", "hard")
    assert port.post("/webhooks/postmark", body, postmark_headers()).json()["duplicate"] == 1  # Postmark's retry
    assert len(port.rows()) == 1
    assert port.counted("flowrun_events_accepted_total", source="postmark") == 1
    assert port.counted("flowrun_events_duplicate_total", source="postmark") == 1


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (postmark_headers(password="guess"), "bad_credentials"),
        (postmark_headers(user="postmark-hook2"), "bad_credentials"),
        ({"Content-Type": "application/json"}, "missing_credentials"),
    ],
)
def test_postmark_without_the_right_credentials_is_401_and_stored_nowhere(
    port: Port, headers: dict[str, str], reason: str
) -> None:
    body = json.dumps(fixture_json("postmark/webhooks/open.json")).encode()
    response = port.post("/webhooks/postmark", body, headers)
    assert (response.status_code, response.json()["error"]) == (401, reason)  # never 403: that stops retries
    assert port.rows() == []
    assert port.counted("flowrun_events_rejected_total", source="postmark", reason=reason) == 1


def test_an_event_for_an_unknown_message_is_still_stored(port: Port) -> None:
    change = {**fixture_json("postmark/webhooks/subscription_change.json"), "MessageID": None}
    assert port.post("/webhooks/postmark", json.dumps(change).encode(), postmark_headers()).status_code == 200
    [event] = as_worker_reads(port.rows()[0])
    assert (event.type, event.data["message"]["id"]) == ("message.unsubscribed", None)


# -- SendGrid -------------------------------------------------------------------------------


@pytest.mark.parametrize("database", database_params())
def test_a_sendgrid_batch_is_one_row_per_event_and_a_retry_doubles_none(tmp_path: Path, database: str) -> None:
    port = Port(tmp_path, database)
    try:
        _batch_and_retries(port)
    finally:
        port.close()


def _batch_and_retries(port: Port) -> None:
    events = fixture_json("sendgrid/webhooks/event_webhook_reference.all_events.json")
    for n, event in enumerate(events):
        event["sg_event_id"] = f"evt-{n}"  # the reference page uses one placeholder id for all
    body = sendgrid_batch(*events)
    headers = port.keys.headers(body, str(int(NOW.timestamp())))
    first = port.post("/webhooks/sendgrid", body, headers)
    assert first.json() == {"status": "accepted", "accepted": 11, "duplicate": 0}
    again = port.post("/webhooks/sendgrid", body, headers)  # SendGrid retries a batch it thinks failed
    assert again.json() == {"status": "accepted", "accepted": 0, "duplicate": 11}
    rebatched = sendgrid_batch(events[2], events[3])  # ... or sends some events again in a new batch
    assert port.post("/webhooks/sendgrid", rebatched, port.keys.headers(rebatched, "1")).json()["accepted"] == 0
    rows = port.rows()
    assert [r["topic"] for r in rows] == [e["event"] for e in events]
    assert [r["body"] for r in rows] == [json.dumps(e, separators=(",", ":")).encode() for e in events]  # as sent
    assert {r["delivery_id"] for r in rows} == {f"sendgrid:evt-{n}" for n in range(11)}
    read = [e.type for r in rows for e in as_worker_reads(r)]
    assert read == [t for t in read if t.startswith("message.")] and len(read) == 7  # 4 kinds kept, no event


def test_the_sdk_vectors_pass_the_port_as_sendgrid_sent_them(tmp_path: Path) -> None:
    for vector in fixture_json("sendgrid/signature/vectors.json")["vectors"]:
        made = Port(tmp_path / vector["id"].replace("/", "-"), sendgrid={"public_key": vector["public_key"]})
        try:
            response = made.post("/webhooks/sendgrid", vector["body"].encode(), vector["headers"])
            expected = 200 if vector["expect"]["valid"] else 401
            assert response.status_code == expected, (vector["id"], response.text)
            assert len(made.rows()) == (len(json.loads(vector["body"])) if expected == 200 else 0)
        finally:
            made.close()


def test_sendgrid_forged_tampered_or_unsigned_is_401_and_stored_nowhere(port: Port) -> None:
    body = sendgrid_batch({"email": "a@example.com", "event": "open", "timestamp": 1, "sg_event_id": "o1"})
    stamp = str(int(NOW.timestamp()))
    cases = {
        "another key": SendGridKeys().headers(body, stamp),
        "another timestamp": {**port.keys.headers(body, stamp), "X-Twilio-Email-Event-Webhook-Timestamp": "1"},
        "unsigned": {"Content-Type": "application/json"},
    }
    for name, headers in cases.items():
        response = port.post("/webhooks/sendgrid", body, headers)
        assert response.status_code == 401, name
    tampered = body.replace(b"a@example.com", b"b@example.com")
    assert port.post("/webhooks/sendgrid", tampered, port.keys.headers(body, stamp)).status_code == 401
    assert port.rows() == []


def test_one_bad_event_refuses_the_whole_batch(port: Port) -> None:
    good = {"email": "a@example.com", "event": "open", "timestamp": 1, "sg_event_id": "o1"}
    body = sendgrid_batch(good, {"event": "click", "email": "a@example.com", "timestamp": 1})  # a click needs its url
    response = port.post("/webhooks/sendgrid", body, port.keys.headers(body, "1"))
    assert (response.status_code, response.json()["error"]) == (400, "bad_shape")
    assert "event [1] (click)" in response.json()["detail"]
    assert port.rows() == []


# -- Mailgun --------------------------------------------------------------------------------

DELIVERED = {
    "event": "delivered",
    "id": "MXcc2gEpS-eN8HfkOnmK2w",
    "timestamp": 1772366400.5,
    "recipient": "ada@example.com",
    "message": {"headers": {"message-id": "20260301120000.1@mg.knit.example"}},
}


def test_mailgun_signed_is_stored_and_its_replay_is_refused(port: Port) -> None:
    body = mailgun_body(DELIVERED, int(NOW.timestamp()))
    assert port.post("/webhooks/mailgun", body, {"Content-Type": "application/json"}).status_code == 200
    replay = port.post("/webhooks/mailgun", body, {"Content-Type": "application/json"})
    assert (replay.status_code, replay.json()["error"]) == (401, "replayed")
    [row] = port.rows()
    assert (row["topic"], row["delivery_id"]) == ("delivered", "mailgun:MXcc2gEpS-eN8HfkOnmK2w:1772366400")
    [event] = as_worker_reads(row)
    assert event.data["message"]["id"] == "20260301120000.1@mg.knit.example"
    # Mailgun's retry: the same event, signed afresh, is a duplicate, not a second row
    retry = mailgun_body(DELIVERED, int(NOW.timestamp()) + 60)
    port.clock.advance(timedelta(seconds=60))
    assert port.post("/webhooks/mailgun", retry, {}).json()["duplicate"] == 1
    assert len(port.rows()) == 1


def test_mailgun_stale_or_forged_is_401(port: Port) -> None:
    old = mailgun_body(DELIVERED, int((NOW - timedelta(hours=1)).timestamp()))
    assert port.post("/webhooks/mailgun", old, {}).json()["error"] == "stale_timestamp"
    forged = mailgun_body(DELIVERED, int(NOW.timestamp()), key="guessed")
    assert port.post("/webhooks/mailgun", forged, {}).json()["error"] == "bad_signature"
    assert port.rows() == []


# -- Twilio ---------------------------------------------------------------------------------

CALLBACK = {
    "AccountSid": "AC" + "0" * 31 + "1",
    "From": "+15017250604",
    "To": "+15558675310",
    "MessageSid": "SM1342fe1b2c904d1ab04f0fc7a58abca9",
    "MessageStatus": "delivered",
    "SmsSid": "SM1342fe1b2c904d1ab04f0fc7a58abca9",
    "SmsStatus": "delivered",
    "ErrorCode": "",
}


def test_twilio_status_callback_signed_over_the_url_it_called(port: Port) -> None:
    url = "http://flowrun/webhooks/twilio?run=r_1"
    body = twilio_form(CALLBACK)
    response = port.post("/webhooks/twilio?run=r_1", body, twilio_headers(url, CALLBACK))
    assert response.status_code == 200, response.text
    [row] = port.rows()
    assert (row["topic"], row["delivery_id"]) == ("delivered", "twilio:SM1342fe1b2c904d1ab04f0fc7a58abca9:delivered")
    [event] = as_worker_reads(row)
    assert (event.type, event.customer_key) == ("message.delivered", "phone:+15558675310")
    wrong_url = twilio_headers("http://flowrun/webhooks/twilio", CALLBACK)  # the query string is signed too
    undelivered = {**CALLBACK, "MessageStatus": "undelivered"}
    assert port.post("/webhooks/twilio?run=r_1", twilio_form(undelivered), wrong_url).status_code == 401
    extra = twilio_form({**CALLBACK, "Injected": "1"})  # a parameter the signature did not cover
    assert port.post("/webhooks/twilio?run=r_1", extra, twilio_headers(url, CALLBACK)).status_code == 401
    assert port.post("/webhooks/twilio?run=r_1", body, {}).json()["error"] == "missing_signature"
    assert len(port.rows()) == 1


def test_twilio_behind_a_proxy_checks_the_public_url(tmp_path: Path) -> None:
    public = "https://shop.example/hooks/twilio"
    made = Port(tmp_path, twilio={**engagement_sources("")["twilio"], "webhook_url": public})
    try:
        body = twilio_form(CALLBACK)
        assert made.post("/webhooks/twilio", body, twilio_headers(public, CALLBACK)).status_code == 200
        local = twilio_headers("http://flowrun/webhooks/twilio", CALLBACK)
        assert made.post("/webhooks/twilio", body, local).status_code == 401
    finally:
        made.close()


# -- hostile bodies -------------------------------------------------------------------------


def test_absurd_depth_size_and_shape_are_4xx_and_stored_nowhere(port: Port) -> None:
    def sendgrid(body: bytes) -> httpx.Response:
        return port.post("/webhooks/sendgrid", body, port.keys.headers(body, "1"))

    deep = b"[" * 20_000 + b"]" * 20_000  # deeper than the JSON parser's recursion
    assert (sendgrid(deep).status_code, sendgrid(deep).json()["error"]) == (400, "not_json")
    nested = b"[" + b'{"a":' * 40 + b"1" + b"}" * 40 + b"]"
    assert sendgrid(nested).json()["error"] == "too_deep"
    assert sendgrid(b'{"event": "open"}').json()["error"] == "bad_shape"  # not an array
    assert sendgrid(b"[1, 2]").json()["error"] == "bad_shape"
    long_kind = sendgrid_batch({"event": "x" * 500, "email": "a@example.com", "timestamp": 1})
    assert sendgrid(long_kind).json()["error"] == "bad_shape"  # no topic longer than the column
    large = sendgrid_batch({"event": "open", "email": "a@example.com", "timestamp": 1, "pad": "x" * 70_000})
    assert (sendgrid(large).status_code, sendgrid(large).json()["error"]) == (413, "too_large")
    postmark = port.post("/webhooks/postmark", b"[]", postmark_headers())
    assert (postmark.status_code, postmark.json()["error"]) == (400, "bad_shape")
    assert port.post("/webhooks/postmark", b"\xff\xfe", postmark_headers()).json()["error"] == "not_json"
    twilio = port.post("/webhooks/twilio", b"\xff=\xfe", twilio_headers("http://flowrun/webhooks/twilio", {}))
    assert (twilio.status_code, twilio.json()["error"]) == (400, "bad_shape")
    assert port.rows() == []


@pytest.mark.parametrize("database", database_params())
def test_a_long_provider_event_id_is_hashed_to_fit_the_column(tmp_path: Path, database: str) -> None:
    port = Port(tmp_path, database)
    event = {"email": "a@example.com", "event": "open", "timestamp": 1, "sg_event_id": "e" * 5000}
    body = sendgrid_batch(event)
    stamp = "9" * 300  # a timestamp header longer than its column: signed, so only SendGrid could send it
    try:
        assert port.post("/webhooks/sendgrid", body, port.keys.headers(body, stamp)).status_code == 200
        [row] = port.rows()
    finally:
        port.close()
    assert row["delivery_id"].startswith("sendgrid:sha256:") and len(row["delivery_id"]) <= 200
    assert [e.id for e in as_worker_reads(row)] == [row["delivery_id"]]


def test_an_unconfigured_provider_is_404(tmp_path: Path) -> None:
    made = Port(tmp_path)
    try:
        made.app = build_app(
            config(tmp_path, "unused", ROOT / "flows"), made.writer.store, made.metrics, _healthy, now=made.clock
        )
        body = json.dumps(fixture_json("postmark/webhooks/open.json")).encode()
        assert made.post("/webhooks/postmark", body, postmark_headers()).json()["error"] == "unknown_source"
        assert made.rows() == []
    finally:
        made.close()


async def _healthy() -> bool:
    return True


def test_a_batch_is_read_off_the_event_loop_which_keeps_answering(port: Port, monkeypatch: pytest.MonkeyPatch) -> None:
    reading, go_on = threading.Event(), threading.Event()
    real = sendgrid.Verifier.deliveries

    def held(self: sendgrid.Verifier, *args: Any) -> Any:
        reading.set()
        assert go_on.wait(10), "the event loop served nothing while the batch was read"
        return real(self, *args)

    monkeypatch.setattr(sendgrid.Verifier, "deliveries", held)
    batch = sendgrid_batch({"email": "a@example.com", "event": "open", "timestamp": 1, "sg_event_id": "o1"})
    single = json.dumps(fixture_json("postmark/webhooks/open.json")).encode()

    async def both() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=port.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://flowrun") as client:
            pending = asyncio.create_task(
                client.post("/webhooks/sendgrid", content=batch, headers=port.keys.headers(batch, "1"))
            )
            await asyncio.to_thread(reading.wait, 10)
            other = await client.post("/webhooks/postmark", content=single, headers=postmark_headers())
            go_on.set()
            return other.status_code, (await pending).status_code

    assert asyncio.run(both()) == (200, 200)
    assert [r["source"] for r in port.rows()] == ["postmark", "sendgrid"]  # the single event went first
