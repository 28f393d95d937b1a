"""Several real `flowrun serve` instances on one PostgreSQL database, with `kill -9`: every
acknowledged event has exactly one run, no wait is lost or fired twice, every schedule tick fires
once across the instances, and a dead instance's work (and the leader's duties) move to the
others within the lease. Time inside the instances comes from a clock file the test moves; the
lease is the database's own clock (two seconds here), which the test waits out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from flowrun.state.database import make_engine
from flowrun.state.schema import attempts, inbox, partitions, runs
from tests.fakestores import FakeShopify
from tests.servekit import Sink, database_params, database_url, shopify_headers
from tests.test_serve_process import free_port

pytestmark = pytest.mark.parametrize("db", [p for p in database_params() if p.id == "postgresql"])
FLOWRUN = str(Path(sys.executable).parent / "flowrun")
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
FLOWS = {
    "remind.yaml": """
flow: remind-later
on: order.created
steps:
  - wait: 1h
  - http: {url: "SINK/remind", json: {order: "{{ order.id }}"}}
    retry: {attempts: 5, backoff: 1s}
""",
    "hourly.yaml": """
flow: hourly
on: {every: 1h}
steps:
  - http: {url: "SINK/tick", json: {at: "{{ schedule.fired_at }}"}}
""",
}


class Instances:
    """N instances of `flowrun serve` sharing a database, a flows folder and a clock file."""

    def __init__(self, tmp_path: Path, url: str, sink: Sink, extra_config: str = "") -> None:
        self.dir, self.url = tmp_path, url
        (tmp_path / "flows").mkdir(exist_ok=True)
        for name, text in FLOWS.items():
            (tmp_path / "flows" / name).write_text(text.replace("SINK", sink.url))
        self.clock_file = tmp_path / "clock"
        self.set_time(T0)
        self.extra = extra_config
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def set_time(self, at: datetime) -> None:
        partial = self.clock_file.with_suffix(".new")
        partial.write_text(at.isoformat())
        partial.replace(self.clock_file)

    def start(self, name: str) -> None:
        port = self.ports.setdefault(name, free_port())
        config = self.dir / f"{name}.yaml"
        config.write_text(
            f"database: {self.url}\nlisten: {{host: 127.0.0.1, port: {port}}}\nflows: flows\n"
            "sources:\n  shopify:\n    webhook_secret: {env: TEST_SHOPIFY_SECRET}\n"
            + self.extra
            + "limits: {shutdown_grace: 5s, dispatch_concurrency: 8}\ncluster: {lease: 2s}\n"
            + "channels: {http: {allow_hosts: [127.0.0.1]}}\n"
        )
        env = {**os.environ, "TEST_SHOPIFY_SECRET": "shpss_test", "FLOWRUN_TEST_CLOCK_FILE": str(self.clock_file)}
        log = (self.dir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen([FLOWRUN, "serve", "-c", str(config)], env=env, stdout=log, stderr=log)

    def healthy(self, name: str) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.ports[name]}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, name: str, n: int) -> bool:
        body = order(n)
        try:
            response = httpx.post(
                f"http://127.0.0.1:{self.ports[name]}/webhooks/shopify",
                content=body,
                headers=shopify_headers(body, "orders/create", f"d-{n}"),
                timeout=10,
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)  # its parts die with it (PR_SET_PDEATHSIG)
        self.processes[name].wait()

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            process.wait(timeout=60)

    def query(self, statement: Any) -> Any:
        engine = make_engine(self.url)
        try:
            with engine.connect() as conn:
                return conn.execute(statement).all()
        finally:
            engine.dispose()

    def count(self, table: Any, *where: Any) -> int:
        return int(self.query(select(func.count()).select_from(table).where(*where))[0][0])

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
        """Wait for the other processes' work (and, for a takeover, the database clock's lease)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        logs = "\n".join((self.dir / f"{n}.log").read_text()[-1500:] for n in self.processes)
        raise AssertionError(f"timed out waiting for {what}\n{logs}")

    def leader(self) -> str:
        """The instance whose engine took the leader's lock last (from the logs); "" before any did."""
        found = []
        for name in self.processes:
            for line in (self.dir / f"{name}.log").read_text().splitlines():
                if "is now the leader" in line or "is no longer the leader" in line:
                    found.append((line[:23], name, "is now" in line))
        current = [name for _, name, now in sorted(found) if now]
        return current[-1] if current else ""


def order(n: int) -> bytes:
    return json.dumps(
        {
            "id": n,
            "email": f"c{n}@example.com",
            "total_price": "10.00",
            "currency": "USD",
            "created_at": "2026-01-05T09:00:00Z",
            "customer": {"id": n, "email": f"c{n}@example.com"},
        }
    ).encode()


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


def _ticks(sink: Sink) -> Counter[str]:
    return Counter(json.loads(r["body"])["at"] for r in sink.requests if r["path"] == "/tick")


def test_three_instances_one_killed_under_load(tmp_path: Path, sink: Sink, db: str) -> None:
    group = Instances(tmp_path, database_url(db, tmp_path), sink)
    for name in ("a", "b", "c"):
        group.start(name)
    for name in ("a", "b", "c"):
        group.wait_for(lambda n=name: group.healthy(n), f"{name} to answer /healthz")
    owners = lambda: {o for (o,) in group.query(select(partitions.c.owner)) if o}  # noqa: E731
    group.wait_for(lambda: len(owners()) == 3, "the partitions shared by three engines")

    acknowledged: list[int] = []

    def load() -> None:
        for n in range(240):
            via = "abc"[n % 3]
            if group.post(via, n):
                acknowledged.append(n)

    sender = threading.Thread(target=load)
    sender.start()
    while len(acknowledged) < 80:
        time.sleep(0.01)
    group.kill("b")  # kill -9 while webhooks arrive
    sender.join()
    stored = group.count(inbox, inbox.c.source == "shopify")
    assert stored >= len(acknowledged)
    group.wait_for(lambda: len(owners()) == 2, "b's partitions taken over")
    group.wait_for(lambda: group.count(runs, runs.c.flow_id == "remind-later") == stored, "a run for every event")

    for hours in (1, 2, 3):  # every wait falls due at 1h; the hourly schedule ticks at 1h, 2h and 3h
        group.set_time(T0 + timedelta(hours=hours, seconds=1))
        group.wait_for(lambda h=hours: len(_ticks(sink)) == h, f"the tick of hour {hours}")
    group.wait_for(
        lambda: group.count(runs, runs.c.flow_id == "remind-later", runs.c.status == "completed") == stored,
        "every wait fired",
    )
    group.stop_all()

    reminders = Counter(r["headers"]["Idempotency-Key"] for r in sink.requests if r["path"] == "/remind")
    assert len(reminders) == stored
    doubled = {k for k, n in reminders.items() if n > 1}
    unknown = {k for (k,) in group.query(select(attempts.c.key).where(attempts.c.outcome == "unknown"))}
    assert doubled <= unknown and len(doubled) <= 8  # at most b's sends in flight, each marked
    for n in acknowledged:  # every acknowledged event has exactly one run
        assert group.count(inbox, inbox.c.delivery_id == f"d-{n}") == 1
    per_event = group.query(select(runs.c.trigger_event).where(runs.c.flow_id == "remind-later"))
    assert len({json.loads(t)["id"] for (t,) in per_event}) == stored
    assert all(n == 1 for n in _ticks(sink).values()) and len(_ticks(sink)) == 3


def test_the_leader_killed_schedules_and_pollers_resume_on_another(tmp_path: Path, sink: Sink, db: str) -> None:
    polled = [
        {
            "id": 900,
            "email": "p0@example.com",
            "created_at": T0.isoformat(),
            "updated_at": T0.isoformat(),
            "total_price": "10.00",
            "currency": "USD",
            "financial_status": "pending",
            "customer": {"id": 900, "email": "p0@example.com"},
        }
    ]
    shop = FakeShopify("shpat_poll", [])
    try:
        extra = (
            "    shop: knit.example\n    api_token: {env: TEST_SHOPIFY_TOKEN}\n"
            f"    api_url: {shop.api}\n    poll: {{orders: 1s}}\n"
        )
        os.environ["TEST_SHOPIFY_TOKEN"] = "shpat_poll"
        group = Instances(tmp_path, database_url(db, tmp_path), sink, extra)
        for name in ("a", "b"):
            group.start(name)
            group.wait_for(lambda n=name: group.healthy(n), f"{name} to answer /healthz")
        group.wait_for(lambda: bool(group.leader()), "a leader")
        first = group.leader()
        group.set_time(T0 + timedelta(hours=1, seconds=1))
        group.wait_for(lambda: len(_ticks(sink)) == 1, "the first tick")
        done = runs.c.flow_id == "hourly", runs.c.status == "completed"
        group.wait_for(lambda: group.count(runs, *done) == 1, "its answer recorded")  # no send left in flight
        group.kill(first)
        survivor = "b" if first == "a" else "a"
        group.wait_for(lambda: group.leader() == survivor, "the survivor to lead")
        shop.orders.extend(polled)  # a new order that only a poller can see
        group.set_time(T0 + timedelta(hours=2, seconds=1))
        group.wait_for(lambda: len(_ticks(sink)) == 2, "the second tick, from the new leader")
        group.wait_for(lambda: group.count(runs, runs.c.customer_key == "email:p0@example.com") == 1, "the poll")
        group.stop_all()
        assert all(n == 1 for n in _ticks(sink).values())
        assert group.count(inbox, inbox.c.source == "flowrun") == 2  # one stored tick per hour
    finally:
        os.environ.pop("TEST_SHOPIFY_TOKEN", None)
        shop.close()
