"""`flowrun serve` as a real process: the README path, signals, and a kill -9 crash test.
Time inside the process comes from a clock file the test moves forward."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from flowrun.runtime.manager import run_id_for
from flowrun.state.tables import inbox, make_engine, outbox, runs
from tests.servekit import Sink, shopify_headers

FLOWRUN = str(Path(sys.executable).parent / "flowrun")
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
WAITING_FLOW = """
flow: remind-later
on: order.created
steps:
  - wait: 1h
  - http: {url: "SINK/remind", json: {order: "{{ order.id }}"}}
    retry: {attempts: 5, backoff: 1s}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    def __init__(self, tmp_path: Path, flow_text: str, sink_url: str) -> None:
        self.dir = tmp_path
        (tmp_path / "flows").mkdir(exist_ok=True)
        (tmp_path / "flows" / "f.yaml").write_text(flow_text.replace("SINK", sink_url))
        self.port = free_port()
        self.db = tmp_path / "state.db"
        (tmp_path / "flowrun.yaml").write_text(
            f"database: sqlite:///{self.db}\nlisten: {{host: 127.0.0.1, port: {self.port}}}\nflows: flows\n"
            "sources:\n  shopify:\n    webhook_secret: {env: TEST_SHOPIFY_SECRET}\n"
            "limits: {shutdown_grace: 5s}\nchannels: {http: {allow_hosts: [127.0.0.1]}}\n"
        )
        self.clock_file = tmp_path / "clock"
        self.set_time(T0)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tmp_path / "serve.log"

    def set_time(self, at: datetime) -> None:
        partial = self.clock_file.with_suffix(".new")
        partial.write_text(at.isoformat())
        partial.replace(self.clock_file)  # atomic: the service never reads half a time

    def start(self) -> None:
        env = {**os.environ, "TEST_SHOPIFY_SECRET": "shpss_test", "FLOWRUN_TEST_CLOCK_FILE": str(self.clock_file)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [FLOWRUN, "serve", "-c", str(self.dir / "flowrun.yaml")], env=env, stdout=log, stderr=log
            )
        self.wait_for(lambda: self._healthy(), "the service to answer /healthz")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, body: bytes, delivery: str, topic: str = "orders/create") -> int:
        response = httpx.post(
            f"http://127.0.0.1:{self.port}/webhooks/shopify",
            content=body,
            headers=shopify_headers(body, topic, delivery),
            timeout=10,
        )
        return response.status_code

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
        raise AssertionError(f"timed out waiting for {what}; state: {self.summary()}\n{self.log.read_text()[-3000:]}")

    def summary(self) -> dict[str, Any]:
        engine = make_engine(f"sqlite:///{self.db}")
        try:
            with engine.connect() as conn:
                by_run = dict(conn.execute(select(runs.c.status, func.count()).group_by(runs.c.status)).all())
                by_action = dict(conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all())
                by_inbox = dict(conn.execute(select(inbox.c.status, func.count()).group_by(inbox.c.status)).all())
            return {"runs": by_run, "outbox": by_action, "inbox": by_inbox}
        finally:
            engine.dispose()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)


def order(n: int) -> bytes:
    return (
        b'{"id": %d, "email": "c%d@example.com", "total_price": "10.00", "currency": "USD", '
        b'"created_at": "2026-01-05T09:00:00Z", "customer": {"id": %d, "email": "c%d@example.com"}}'
    ) % (n, n, n, n)


@pytest.fixture
def sink():  # type: ignore[no-untyped-def]
    with Sink() as s:
        yield s


def test_readme_path_signed_webhook_to_a_run_then_sigterm_exits_0(tmp_path: Path, sink: Sink) -> None:
    service = Service(tmp_path, WAITING_FLOW, sink.url)
    service.start()
    assert service.post(order(1), "d-1") == 200
    service.wait_for(lambda: service.count(runs) == 1, "one run")
    listed = subprocess.run([FLOWRUN, "runs", "-c", str(tmp_path / "flowrun.yaml")], capture_output=True, text=True)
    assert listed.returncode == 0 and "remind-later" in listed.stdout and "waiting" in listed.stdout

    def metrics() -> str:
        return httpx.get(f"http://127.0.0.1:{service.port}/metrics", timeout=5).text

    # The port's process counts the webhook; the engine's counters reach it through the pipe.
    service.wait_for(lambda: 'flowrun_run_transitions_total{status="waiting"} 1' in metrics(), "engine counters")
    assert 'flowrun_events_accepted_total{source="shopify"} 1' in metrics()
    assert 'flowrun_runs{status="waiting"} 1' in metrics()
    assert service.stop() == 0
    assert "stopped cleanly" in service.log.read_text()


def test_the_service_stops_with_an_error_when_its_webhook_port_dies(tmp_path: Path, sink: Sink) -> None:
    service = Service(tmp_path, WAITING_FLOW, sink.url)
    service.start()
    assert service.process is not None
    port = port_processes(service.process.pid)
    assert len(port) == 1, "serve runs its webhook port as one child process"
    os.kill(port[0], signal.SIGKILL)
    assert service.process.wait(timeout=30) == 1  # systemd's Restart=on-failure brings both back
    assert "webhook port's process exited unexpectedly" in service.log.read_text()


def test_a_kill_9_of_serve_takes_its_webhook_port_down_too(tmp_path: Path, sink: Sink) -> None:
    service = Service(tmp_path, WAITING_FLOW, sink.url)
    service.start()
    assert service.process is not None
    [port] = port_processes(service.process.pid)
    service.process.kill()
    service.process.wait()
    service.wait_for(lambda: not Path(f"/proc/{port}").exists() or _zombie(port), "the port's process to die")
    assert not service._healthy()


def port_processes(pid: int) -> list[int]:
    """pid's children started by multiprocessing's spawn (its resource tracker is left out), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid and b"spawn_main" in command:
                found.append(int(entry.name))
    return found


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def test_sighup_reloads_valid_flows_and_refuses_invalid_ones(tmp_path: Path, sink: Sink) -> None:
    service = Service(tmp_path, WAITING_FLOW, sink.url)
    service.start()
    assert service.process is not None
    (tmp_path / "flows" / "f.yaml").write_text("flow: broken\non: order.craeted\nsteps: []\n")
    service.process.send_signal(signal.SIGHUP)
    service.wait_for(lambda: "keeping the running set" in service.log.read_text(), "the refusal")
    assert service.post(order(2), "d-2") == 200
    service.wait_for(lambda: service.count(runs, runs.c.flow_id == "remind-later") == 1, "a run on the old set")
    (tmp_path / "flows" / "f.yaml").write_text(
        WAITING_FLOW.replace("remind-later", "renamed").replace("SINK", sink.url)
    )
    service.process.send_signal(signal.SIGHUP)
    service.wait_for(lambda: "reloaded 1 flows" in service.log.read_text(), "the reload")
    assert service.post(order(3), "d-3") == 200
    service.wait_for(lambda: service.count(runs, runs.c.flow_id == "renamed") == 1, "a run on the new set")
    assert service.stop() == 0


def test_orders_nothing_read_are_set_aside_by_the_port_until_a_reload_adds_a_flow_on_them(
    tmp_path: Path, sink: Sink
) -> None:
    service = Service(tmp_path, "flow: welcome\non: customer.created\nsteps:\n  - log: {message: hi}\n", sink.url)
    service.start()
    assert service.post(order(1), "d-1") == 200
    service.wait_for(lambda: service.count(inbox, inbox.c.status == "ignored") == 1, "d-1 set aside")
    (tmp_path / "flows" / "g.yaml").write_text(WAITING_FLOW.replace("SINK", sink.url))
    service.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    service.wait_for(lambda: "reloaded 2 flows" in service.log.read_text(), "the reload")
    # whether the port has the new set yet or not, an order accepted from now on is read
    assert service.post(order(2), "d-2") == 200
    service.wait_for(lambda: service.count(runs, runs.c.flow_id == "remind-later") == 1, "a run for d-2")
    assert service.count(inbox, inbox.c.delivery_id == "d-1", inbox.c.status == "ignored") == 1
    assert service.stop() == 0


def test_kill_9_loses_nothing_and_sends_nothing_twice(tmp_path: Path, sink: Sink) -> None:
    service = Service(tmp_path, WAITING_FLOW, sink.url)
    service.start()
    for n in range(200):
        assert service.post(order(n), f"d-{n}") == 200
    service.wait_for(lambda: service.count(runs, runs.c.status == "waiting") == 200, "200 waiting runs")

    acknowledged: list[int] = []

    def keep_sending() -> None:
        for n in range(200, 600):
            try:
                if service.post(order(n), f"d-{n}") == 200:
                    acknowledged.append(n)
            except httpx.HTTPError:
                pass  # the process died mid-request: not acknowledged

    sender = threading.Thread(target=keep_sending)
    sender.start()
    while len(acknowledged) < 60:
        time.sleep(0.005)
    assert service.process is not None
    service.process.kill()  # SIGKILL while webhooks are arriving
    service.process.wait()
    sender.join()
    stored = service.count(inbox)
    assert stored >= 200 + len(acknowledged)

    service.start()  # restart on the same database
    for n in range(600, 620):  # the store retries what we never acknowledged; new ones keep coming
        assert service.post(order(n), f"d-{n}") == 200
    total = service.count(inbox)
    service.wait_for(lambda: service.count(runs) == total, "a run for every stored event")
    service.set_time(T0 + timedelta(hours=2))  # every wait is now due

    ticks = iter(range(1, 10**6))

    def all_completed() -> bool:
        service.set_time(T0 + timedelta(hours=2, seconds=next(ticks)))  # time moves on: retries fall due
        return service.count(runs, runs.c.status == "completed") == total

    service.wait_for(all_completed, "every run to complete")
    service.wait_for(lambda: len(sink.requests) >= total, "every reminder sent")
    time.sleep(0.5)  # a chance for any stray duplicate to arrive before counting

    keys = Counter(r["headers"]["Idempotency-Key"] for r in sink.requests)
    assert len(keys) == total
    assert [k for k, n in keys.items() if n > 1] == []
    for n in [*range(200), *acknowledged, *range(600, 620)]:  # every acknowledged event has its one run
        assert service.count(runs, runs.c.id == run_id_for("remind-later", f"shopify:orders/create:{n}")) == 1
    assert service.count(outbox, outbox.c.status == "applied") == total
    assert service.stop() == 0
