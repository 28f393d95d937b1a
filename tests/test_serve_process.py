"""`flowrun serve` as a real process: the README path, signals, and a kill -9 crash test.
Time inside the process comes from a clock file the test moves forward."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
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

from flowrun.runtime.runtime import run_id_for
from flowrun.state.database import make_engine
from flowrun.state.schema import attempts, inbox, outbox, runs
from flowrun.state.spool_admin import waiting
from tests.servekit import Sink, shopify_headers, stored_deliveries

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
    def __init__(self, tmp_path: Path, flow_text: str, sink_url: str, limits: str = "") -> None:
        self.dir = tmp_path
        (tmp_path / "flows").mkdir(exist_ok=True)
        (tmp_path / "flows" / "f.yaml").write_text(flow_text.replace("SINK", sink_url))
        self.port = free_port()
        self.db = tmp_path / "state.db"
        (tmp_path / "flowrun.yaml").write_text(
            f"database: sqlite:///{self.db}\nlisten: {{host: 127.0.0.1, port: {self.port}}}\nflows: flows\n"
            "sources:\n  shopify:\n    webhook_secret: {env: TEST_SHOPIFY_SECRET}\n"
            f"limits: {{shutdown_grace: 5s{', ' + limits if limits else ''}}}\n"
            "channels: {http: {allow_hosts: [127.0.0.1]}}\n"
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
        return self.reply(body, delivery, topic).status_code

    def reply(self, body: bytes, delivery: str, topic: str = "orders/create") -> httpx.Response:
        return httpx.post(
            f"http://127.0.0.1:{self.port}/webhooks/shopify",
            content=body,
            headers=shopify_headers(body, topic, delivery),
            timeout=10,
        )

    def spooled(self) -> int:
        """Acknowledged deliveries still in the port's spool, not in the inbox yet."""
        engine = make_engine(f"sqlite:///{self.db}")
        try:
            return waiting(self.db, engine)
        finally:
            engine.dispose()

    def stored(self) -> int:
        return stored_deliveries(f"sqlite:///{self.db}")

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


@pytest.mark.parametrize("part", ["flowrun-port", "flowrun-engine", "flowrun-sender"])
def test_the_service_stops_with_an_error_when_one_of_its_parts_dies(tmp_path: Path, sink: Sink, part: str) -> None:
    service = Service(tmp_path, WAITING_FLOW, sink.url)
    service.start()
    assert service.process is not None
    children = parts_of(service.process.pid)
    assert sorted(children) == ["flowrun-engine", "flowrun-port", "flowrun-sender"]
    os.kill(children[part], signal.SIGKILL)
    assert service.process.wait(timeout=30) == 1  # systemd's Restart=on-failure brings it back
    name = {"flowrun-port": "port", "flowrun-engine": "engine", "flowrun-sender": "dispatcher"}[part]
    assert f"the {name} process exited" in service.log.read_text()


def test_a_kill_9_of_serve_takes_all_its_parts_down_too(tmp_path: Path, sink: Sink) -> None:
    service = Service(tmp_path, WAITING_FLOW, sink.url)
    service.start()
    assert service.process is not None
    children = parts_of(service.process.pid)
    service.process.kill()
    service.process.wait()
    for pid in children.values():
        service.wait_for(lambda p=pid: not Path(f"/proc/{p}").exists() or _zombie(p), f"process {pid} to die")
    assert not service._healthy()


def test_a_second_serve_on_the_same_sqlite_database_refuses_to_start(tmp_path: Path, sink: Sink) -> None:
    service = Service(tmp_path, WAITING_FLOW, sink.url)
    service.start()
    env = {**os.environ, "TEST_SHOPIFY_SECRET": "shpss_test"}
    second = subprocess.run(
        [FLOWRUN, "serve", "-c", str(tmp_path / "flowrun.yaml")], env=env, capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 2
    assert "another `flowrun serve` is running on" in second.stderr and "use PostgreSQL" in second.stderr
    assert service._healthy()
    assert service.stop() == 0


def parts_of(pid: int) -> dict[str, int]:
    """pid's children by process name (flowrun-port, flowrun-engine, flowrun-sender), from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid and name.startswith("flowrun-"):
                found[name] = int(entry.name)
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


TELL_ENTERED = """
flow: tell
on: {event: segment.entered, segment: repeat}
steps:
  - http: {url: "SINK/segment", json: {who: "{{ customer.email }}", orders: "{{ profile.orders_count }}"}}
"""


def test_sighup_reloads_segments_and_keeps_the_running_ones_when_the_new_are_invalid(
    tmp_path: Path, sink: Sink
) -> None:
    def ada(n: int) -> bytes:
        return order(n).replace(b"c%d@" % n, b"ada@").replace(b'"id": %d}' % n, b'"id": 1}')

    service = Service(tmp_path, TELL_ENTERED, sink.url)
    (tmp_path / "flows" / "segments").mkdir()
    rule = tmp_path / "flows" / "segments" / "repeat.yaml"
    rule.write_text("segment: repeat\nrule: {orders: {at_least: 3}}\n")
    service.start()
    assert service.post(ada(1), "d-1") == 200
    rule.write_text("segment: repeat\nrule: {ordrs: {at_least: 2}}\n")
    service.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    service.wait_for(lambda: "keeping the running set" in service.log.read_text(), "the refusal")
    assert "unknown rule 'ordrs'" in service.log.read_text()
    rule.write_text("segment: repeat\nrule: {orders: {at_least: 2}}\n")
    service.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    service.wait_for(lambda: "reloaded 1 flows and 1 segments" in service.log.read_text(), "the reload")
    assert service.post(ada(2), "d-2") == 200  # a second order: in `repeat` only by the new rule
    service.wait_for(lambda: len(sink.requests) == 1, "the segment.entered run's request")
    assert [(r["path"], json.loads(r["body"])) for r in sink.requests] == [
        ("/segment", {"who": "ada@example.com", "orders": 2})
    ]
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
    stored = service.stored()
    assert stored >= 200 + len(acknowledged)

    service.start()  # restart on the same database
    for n in range(600, 620):  # the store retries what we never acknowledged; new ones keep coming
        assert service.post(order(n), f"d-{n}") == 200
    service.wait_for(lambda: service.spooled() == 0, "the spool moved into the inbox")
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
    assert service.count(outbox, outbox.c.status == "delivered", outbox.c.applied_at.is_not(None)) == total
    assert service.stop() == 0


SEND_AT_ONCE = """
flow: confirm
on: order.created
steps:
  - http: {url: "SINK/confirm", json: {order: "{{ order.id }}"}}
    retry: {attempts: 5, backoff: 1s}
"""


def test_a_webhook_acknowledged_while_another_writer_holds_the_database_survives_a_kill_9_and_is_sent_once(
    tmp_path: Path, sink: Sink
) -> None:
    """The acknowledgement waits for the spool only; a kill -9 before the row reached the inbox
    leaves it in the spool, listed by `flowrun inbox`, and the next start moves and sends it."""
    service = Service(tmp_path, SEND_AT_ONCE, sink.url)
    service.start()
    assert service.process is not None
    blocker = sqlite3.connect(service.db, timeout=0, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer (`flowrun prune`, say) holds the state database
    try:
        first = service.reply(order(7), "d-7")
        assert (first.status_code, first.json()["status"]) == (200, "accepted")
        listed = subprocess.run(
            [FLOWRUN, "inbox", "-c", str(tmp_path / "flowrun.yaml")], capture_output=True, text=True
        )
        assert listed.returncode == 0, listed.stderr
        assert "1 accepted delivery waits in" in listed.stdout and "state.spool.db" in listed.stdout
        service.process.kill()
        service.process.wait(timeout=30)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert service.count(inbox) == 0 and sink.requests == []
    service.start()
    service.wait_for(lambda: service.count(outbox, outbox.c.status == "delivered") == 1, "the send")
    assert [r["path"] for r in sink.requests] == ["/confirm"]
    assert json.loads(sink.requests[0]["body"]) == {"order": "7"}
    retry = service.reply(order(7), "d-7")  # the store's retry: a duplicate, not a second run
    assert (retry.status_code, retry.json()["status"]) == (200, "duplicate")
    assert service.stop() == 0
    assert service.count(runs) == 1 and len(sink.requests) == 1


def test_kill_9_between_a_providers_answer_and_its_commit_doubles_at_most_the_sends_in_flight(
    tmp_path: Path, sink: Sink
) -> None:
    """The one double-send window: sends the provider accepted whose answer was not yet written.
    It holds at most `limits.dispatch_concurrency` sends, each marked "outcome unknown" after."""
    concurrency = 8
    service = Service(tmp_path, SEND_AT_ONCE, sink.url, limits=f"dispatch_concurrency: {concurrency}")
    service.start()
    assert service.process is not None
    killed = threading.Event()
    supervisor, sender = service.process, parts_of(service.process.pid)["flowrun-sender"]

    def kill_after_answering(count: int) -> None:  # called by the sink right after it answered
        if count == 120 and not killed.is_set():
            killed.set()
            os.kill(sender, signal.SIGKILL)  # the dispatcher dies holding answers it has not written

    sink.after_answer = kill_after_answering
    for n in range(300):
        try:
            service.post(order(n), f"d-{n}")
        except httpx.HTTPError:
            break
        if killed.is_set():
            break
    assert supervisor.wait(timeout=60) == 1  # the supervisor saw its dispatcher die
    sink.after_answer = None
    stored = service.stored()
    service.start()
    service.wait_for(lambda: service.count(runs, runs.c.status == "completed") == stored, "every run to complete")
    keys = Counter(r["headers"]["Idempotency-Key"] for r in sink.requests)
    doubled = {k for k, n in keys.items() if n > 1}
    assert len(keys) == stored and all(n <= 2 for n in keys.values())
    assert len(doubled) <= concurrency
    engine = make_engine(f"sqlite:///{service.db}")
    with engine.connect() as conn:
        unknown = set(conn.execute(select(attempts.c.key).where(attempts.c.outcome == "unknown")).scalars())
    engine.dispose()
    assert doubled <= unknown and 1 <= len(unknown) <= concurrency  # every possible double is marked
    text = httpx.get(f"http://127.0.0.1:{service.port}/metrics", timeout=5).text
    service.wait_for(
        lambda: (
            f"flowrun_actions_outcome_unknown_total {float(len(unknown)):g}"
            in httpx.get(f"http://127.0.0.1:{service.port}/metrics", timeout=5).text
        ),
        f"the metric counting them ({text[-300:]})",
    )
    assert service.stop() == 0


def test_a_sigterm_stop_in_time_logs_no_error(tmp_path: Path, sink: Sink) -> None:
    service = Service(tmp_path, WAITING_FLOW, sink.url)
    service.start()
    assert service.post(order(1), "d-1") == 200
    service.wait_for(lambda: service.count(runs) == 1, "one run")
    assert service.stop() == 0
    log = service.log.read_text()
    assert "stopped cleanly" in log
    assert [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line] == []


def test_a_part_that_hangs_at_shutdown_is_killed_after_the_grace_period(tmp_path: Path, sink: Sink) -> None:
    service = Service(tmp_path, WAITING_FLOW, sink.url)
    service.start()
    assert service.process is not None
    port = parts_of(service.process.pid)["flowrun-port"]
    os.kill(port, signal.SIGSTOP)  # it cannot answer SIGTERM
    started = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    code = service.process.wait(timeout=60)
    assert time.monotonic() - started >= 5  # limits.shutdown_grace: 5s
    assert "the port process did not stop within 10 s; killing it" in service.log.read_text()
    assert code == 1  # a forced stop: systemd shows it; what the port acknowledged was committed before
