"""Engagement tied to a real send through a real `flowrun serve`: a signed Shopify signup makes
the welcome email go out through a Postmark server on 127.0.0.1, Postmark's Open webhook (basic
auth, the provider's documented body) is matched to that send by its MessageID and ends the wait
on it, an order is attributed to it, and `flowrun report` shows all of it; forged or unsigned
webhooks are 401 and stored nowhere, and a click on an unknown message is kept and shown."""

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
from sqlalchemy import func, select

from flowrun.state.database import make_engine
from flowrun.state.schema import attributions, engagements, inbox, messages, runs
from tests.conftest import ROOT
from tests.engagementkit import POSTMARK_PASSWORD, POSTMARK_USER, postmark_headers
from tests.fakeproviders import FakeOneSignal, FakePostmark
from tests.servekit import shopify_headers
from tests.test_serve_process import FLOWRUN, free_port

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Served:
    def __init__(self, root: Path, mail: FakePostmark, push: FakeOneSignal) -> None:
        self.root, self.port, self.db = root, free_port(), root / "state.db"
        (root / "flows").mkdir()
        flow = (ROOT / "flows/welcome-not-opened-push.yaml").read_text()
        (root / "flows" / "welcome.yaml").write_text(flow)
        (root / "flowrun.yaml").write_text(
            f"database: sqlite:///{self.db}\nlisten: {{host: 127.0.0.1, port: {self.port}}}\nflows: flows\n"
            "sources:\n"
            "  shopify: {webhook_secret: {env: T_SHOP_SECRET}}\n"
            "  postmark: {username: {env: T_PM_USER}, password: {env: T_PM_PASSWORD}}\n"
            "channels:\n"
            "  email:\n    from: hello@shop.example\n"
            f"    postmark: {{server_token: {{env: T_PM_TOKEN}}, api_url: '{mail.url}'}}\n"
            f"  push: {{app_id: app-1, api_key: {{env: T_OS_KEY}}, api_url: '{push.url}'}}\n"
            "attribution: {windows: {email: {opened: 3d}}}\n"
            "limits: {shutdown_grace: 5s}\n"
        )
        (root / "clock").write_text(T0.isoformat())
        self.env = {
            **os.environ,
            "T_SHOP_SECRET": "shpss_test",
            "T_PM_USER": POSTMARK_USER,
            "T_PM_PASSWORD": POSTMARK_PASSWORD,
            "T_PM_TOKEN": "pm-token",
            "T_OS_KEY": "os-key",
            "FLOWRUN_TEST_CLOCK_FILE": str(root / "clock"),
        }
        self.log = root / "serve.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [FLOWRUN, "serve", "-c", str(root / "flowrun.yaml")], env=self.env, stdout=log, stderr=log
            )
        self.wait_for(self._healthy, "/healthz")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{self.port}/webhooks/{source}", content=body, headers=headers, timeout=10)

    def count(self, table: Any, *where: Any) -> int:
        engine = make_engine(f"sqlite:///{self.db}")
        try:
            with engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar() or 0)
        finally:
            engine.dispose()

    def wait_for(self, condition: Any, what: str, timeout: float = 60) -> None:
        """Wait for the other process to do its work (not for a flow's delay)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n{self.log.read_text()[-3000:]}")

    def report(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [FLOWRUN, "report", "-c", str(self.root / "flowrun.yaml"), *args]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, FakePostmark]]:
    mail, push = FakePostmark("pm-token"), FakeOneSignal("app-1", "os-key", {"501"})
    running = Served(tmp_path, mail, push)
    try:
        yield running, mail
    finally:
        running.process.terminate()
        assert running.process.wait(timeout=30) == 0
        mail.close()
        push.close()


def _shopify(sample: str, **fields: Any) -> bytes:
    body = json.loads((ROOT / f"examples/events/shopify/{sample}.json").read_text())
    body.update(fields)
    return json.dumps(body).encode()


def _open(message_id: str, to: str, at: str) -> bytes:
    """Postmark's Open webhook as its documentation lists the fields."""
    return json.dumps(
        {
            "RecordType": "Open",
            "MessageStream": "outbound",
            "FirstOpen": True,
            "MessageID": message_id,
            "Recipient": to,
            "ReceivedAt": at,
            "Platform": "WebMail",
            "UserAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120",
            "Metadata": {},
        }
    ).encode()


def test_an_open_through_serve_is_tied_to_its_send_and_the_order_to_it(served: tuple[Served, FakePostmark]) -> None:
    service, mail = served
    signup = _shopify("customers/create", id=501, email="ada@example.com", first_name="Ada", accepts_marketing=True)
    assert service.post("shopify", signup, shopify_headers(signup, "customers/create", "d-1")).status_code == 200
    service.wait_for(lambda: service.count(messages) == 1, "the welcome email to be sent and recorded")
    [sent] = mail.sent
    message_id = sent["MessageID"]
    assert sent["To"] == "ada@example.com"
    stored = service.count(inbox)
    opened = _open(message_id, "ada@example.com", "2026-03-01T14:00:00Z")
    assert service.post("postmark", opened, postmark_headers(password="forged")).status_code == 401
    assert service.post("postmark", opened, {"Content-Type": "application/json"}).status_code == 401
    assert service.count(inbox) == stored and service.count(engagements) == 0  # stored nowhere
    assert service.post("postmark", opened, postmark_headers()).status_code == 200
    service.wait_for(lambda: service.count(runs, runs.c.status == "completed") == 1, "the wait on the open to end")
    assert service.count(messages, messages.c.human_opened_at.is_not(None)) == 1
    stray = json.dumps(
        {
            "RecordType": "Click",
            "MessageID": "not-ours",
            "Recipient": "zed@example.com",
            "ReceivedAt": "2026-03-01T15:00:00Z",
            "OriginalLink": "https://shop.example/",
            "MessageStream": "outbound",
        }
    ).encode()
    assert service.post("postmark", stray, postmark_headers()).status_code == 200
    service.wait_for(lambda: service.count(engagements, engagements.c.send_key.is_(None)) == 1, "the stray click kept")
    bought = _shopify("orders/create", email="ada@example.com", updated_at="2026-03-02T10:00:00Z", total_price="59.90")
    assert service.post("shopify", bought, shopify_headers(bought, "orders/create", "d-2")).status_code == 200
    service.wait_for(lambda: service.count(attributions) == 1, "the order to be attributed")

    def counted() -> str:
        return httpx.get(f"http://127.0.0.1:{service.port}/metrics", timeout=5).text

    service.wait_for(lambda: 'flowrun_engagement_events_total{match="unknown"} 1.0' in counted(), "the metrics")
    assert 'flowrun_engagement_events_total{match="matched"} 1.0' in counted()

    shown = service.report("--format", "json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    [step] = report["steps"]
    assert (step["flow"], step["step"], step["channel"]) == ("welcome-not-opened-push", "welcome-1", "email")
    assert (step["recipients"], step["opened"], step["opened_human"], step["converted"]) == (1, 1, 1, 1)
    assert step["orders"] == 1 and step["revenue"] == {"USD": "59.90"}
    assert report["unknown_engagement"] == {
        "count": 1,
        "by_kind": {"clicked": 1},
        "examples": [{"provider": "postmark", "kind": "clicked", "message_id": "not-ours"}],
    }
    text = service.report()
    assert text.returncode == 0 and "welcome-1" in text.stdout and "59.90 USD" in text.stdout
    assert "engagement for unknown message ids: 1 (1 clicked)" in text.stdout
    csv = service.report("--format", "csv", "--flow", "welcome-not-opened-push")
    assert csv.returncode == 0 and csv.stdout.splitlines()[0].startswith("flow,step,split,arm,channel,recipients")
    assert csv.stdout.splitlines()[1].startswith("welcome-not-opened-push,welcome-1,,,email,1,")
    later = service.report("--since", "2026-04-01T00:00:00Z", "--format", "json")
    assert later.returncode == 0 and json.loads(later.stdout)["steps"] == []
    wrong = service.report("--since", "yesterday")
    assert wrong.returncode == 2 and "--since 'yesterday'" in wrong.stderr
