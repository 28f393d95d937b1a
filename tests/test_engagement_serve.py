"""Each provider's webhook through a real `flowrun serve` process: a signed request is
accepted, stored in the inbox and normalised by the engine into its message.* event (which
starts a flow that reports it to a real HTTP sink); a forged one is 401 and stored nowhere.
Time inside the process comes from a clock file (Mailgun's freshness window)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from flowrun.state.database import make_engine
from flowrun.state.schema import inbox
from tests.engagementkit import (
    MAILGUN_KEY,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    TWILIO_TOKEN,
    SendGridKeys,
    fixture_json,
    mailgun_body,
    postmark_headers,
    sendgrid_batch,
    twilio_form,
    twilio_headers,
)
from tests.servekit import Sink, stored_deliveries
from tests.test_serve_process import FLOWRUN, free_port

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REPORT_FLOW = """
flow: report-engagement
on: [message.delivered, message.opened, message.clicked, message.bounced, message.complained, message.unsubscribed]
steps:
  - http:
      url: "SINK/engagement"
      json: {type: "{{ event.type }}", provider: "{{ message.provider }}", message: "{{ message.id }}"}
"""


class EngagementService:
    def __init__(self, root: Path, sink: Sink) -> None:
        self.root, self.port, self.keys = root, free_port(), SendGridKeys()
        self.db = root / "state.db"
        (root / "flows").mkdir()
        (root / "flows" / "report.yaml").write_text(REPORT_FLOW.replace("SINK", sink.url))
        (root / "flowrun.yaml").write_text(
            f"database: sqlite:///{self.db}\nlisten: {{host: 127.0.0.1, port: {self.port}}}\nflows: flows\n"
            "sources:\n"
            "  postmark: {username: {env: T_PM_USER}, password: {env: T_PM_PASSWORD}}\n"
            f"  sendgrid: {{public_key: {self.keys.public}}}\n"
            "  mailgun: {signing_key: {env: T_MG_KEY}}\n"
            "  twilio: {auth_token: {credential: twilio-token}}\n"
            "limits: {shutdown_grace: 5s}\nchannels: {http: {allow_hosts: [127.0.0.1]}}\n"
        )
        (root / "credentials").mkdir()
        (root / "credentials" / "twilio-token").write_text(TWILIO_TOKEN + "\n")
        (root / "clock").write_text(T0.isoformat())
        self.log = root / "serve.log"
        env = {
            **os.environ,
            "T_PM_USER": POSTMARK_USER,
            "T_PM_PASSWORD": POSTMARK_PASSWORD,
            "T_MG_KEY": MAILGUN_KEY,
            "CREDENTIALS_DIRECTORY": str(root / "credentials"),
            "FLOWRUN_TEST_CLOCK_FILE": str(root / "clock"),
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [FLOWRUN, "serve", "-c", str(root / "flowrun.yaml")], env=env, stdout=log, stderr=log
            )
        self.wait_for(self._healthy, "/healthz")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.url}/webhooks/{source}", content=body, headers=headers, timeout=10)

    def stored(self, source: str) -> list[tuple[str, str, str]]:
        engine = make_engine(f"sqlite:///{self.db}")
        try:
            with engine.connect() as conn:
                query = select(inbox.c.topic, inbox.c.delivery_id, inbox.c.status).where(inbox.c.source == source)
                return [tuple(r) for r in conn.execute(query.order_by(inbox.c.seq))]
        finally:
            engine.dispose()

    def count(self) -> int:
        return stored_deliveries(f"sqlite:///{self.db}")

    def wait_for(self, condition: Any, what: str, timeout: float = 60) -> None:
        """Wait for the other process to do its work (not for a flow's delay)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EngagementService, Sink]]:
    with Sink() as sink:
        running = EngagementService(tmp_path_factory.mktemp("engagement-serve"), sink)
        try:
            yield running, sink
        finally:
            assert running.stop() == 0
            log = running.log.read_text()
            for secret in (POSTMARK_PASSWORD, MAILGUN_KEY, TWILIO_TOKEN):
                assert secret not in log


def reported(sink: Sink, provider: str) -> list[dict[str, Any]]:
    bodies = [json.loads(r["body"]) for r in sink.requests if r["path"] == "/engagement"]
    return [b for b in bodies if b["provider"] == provider]


def test_postmark_through_serve(service: tuple[EngagementService, Sink]) -> None:
    running, sink = service
    before = running.count()
    body = json.dumps(fixture_json("postmark/webhooks/click.json")).encode()
    assert running.post("postmark", body, postmark_headers(password="wrong")).status_code == 401
    assert running.post("postmark", body, {"Content-Type": "application/json"}).status_code == 401
    assert running.count() == before
    assert running.post("postmark", body, postmark_headers()).json()["accepted"] == 1
    assert running.count() == before + 1  # stored before the answer (in the spool, if not in the inbox yet)
    running.wait_for(lambda: running.stored("postmark"), "the click in the inbox")
    [(topic, _, _)] = running.stored("postmark")
    assert topic == "Click"
    running.wait_for(lambda: reported(sink, "postmark"), "the click to reach its flow")
    assert reported(sink, "postmark") == [
        {"type": "message.clicked", "provider": "postmark", "message": "883953f4-6105-42a2-a16a-77a8eac79483"}
    ]


def test_sendgrid_batch_through_serve(service: tuple[EngagementService, Sink]) -> None:
    running, sink = service
    before = running.count()
    events = [
        {"email": "ada@example.com", "event": "processed", "timestamp": 1772366400, "sg_event_id": "p1"},
        {"email": "ada@example.com", "event": "delivered", "timestamp": 1772366401, "sg_event_id": "d1"},
        {
            "email": "ada@example.com",
            "event": "open",
            "timestamp": 1772366460,
            "sg_event_id": "o1",
            "sg_message_id": "Xm1.filterdrecv-1",
            "sg_machine_open": True,
        },
    ]
    body = sendgrid_batch(*events)
    stamp = str(int(T0.timestamp()))
    assert running.post("sendgrid", body, SendGridKeys().headers(body, stamp)).status_code == 401  # another key
    assert running.post("sendgrid", body, {"Content-Type": "application/json"}).status_code == 401
    assert running.count() == before
    assert running.post("sendgrid", body, running.keys.headers(body, stamp)).json()["accepted"] == 3
    assert running.post("sendgrid", body, running.keys.headers(body, stamp)).json()["duplicate"] == 3
    running.wait_for(lambda: len(reported(sink, "sendgrid")) == 2, "delivered and open to reach the flow")
    assert {r["type"] for r in reported(sink, "sendgrid")} == {"message.delivered", "message.opened"}
    stored = running.stored("sendgrid")
    assert [(t, d) for t, d, _ in stored] == [
        ("processed", "sendgrid:p1"),
        ("delivered", "sendgrid:d1"),
        ("open", "sendgrid:o1"),
    ]
    assert stored[0][2] == "ignored"  # nothing reads `processed`: set aside, body kept


def test_mailgun_through_serve(service: tuple[EngagementService, Sink]) -> None:
    running, sink = service
    before = running.count()
    data = {
        "event": "failed",
        "severity": "permanent",
        "id": "F1",
        "timestamp": T0.timestamp() - 3,
        "recipient": "bo@example.com",
        "message": {"headers": {"message-id": "20260301115957.1@mg.knit.example"}},
        "delivery-status": {"code": 550, "message": "mailbox unavailable"},
    }
    stamp = int(T0.timestamp())
    assert running.post("mailgun", mailgun_body(data, stamp, key="guess"), {}).status_code == 401
    assert running.post("mailgun", mailgun_body(data, stamp - 3600), {}).json()["error"] == "stale_timestamp"
    assert running.count() == before
    signed = mailgun_body(data, stamp)
    assert running.post("mailgun", signed, {"Content-Type": "application/json"}).json()["accepted"] == 1
    assert running.post("mailgun", signed, {"Content-Type": "application/json"}).json()["error"] == "replayed"
    running.wait_for(lambda: reported(sink, "mailgun"), "the bounce to reach its flow")
    assert reported(sink, "mailgun") == [
        {"type": "message.bounced", "provider": "mailgun", "message": "20260301115957.1@mg.knit.example"}
    ]
    assert len(running.stored("mailgun")) == 1


def test_twilio_through_serve(service: tuple[EngagementService, Sink]) -> None:
    running, sink = service
    before = running.count()
    params = {
        "AccountSid": "AC" + "0" * 31 + "1",
        "MessageSid": "SM" + "a" * 32,
        "MessageStatus": "delivered",
        "To": "+15558675310",
        "From": "+15017250604",
    }
    url = f"{running.url}/webhooks/twilio"
    assert running.post("twilio", twilio_form(params), twilio_headers(url, params, token="wrong")).status_code == 401
    assert running.post("twilio", twilio_form(params), {}).status_code == 401
    assert running.count() == before
    assert running.post("twilio", twilio_form(params), twilio_headers(url, params)).json()["accepted"] == 1
    running.wait_for(lambda: reported(sink, "twilio"), "the delivery to reach its flow")
    assert reported(sink, "twilio") == [{"type": "message.delivered", "provider": "twilio", "message": "SM" + "a" * 32}]
