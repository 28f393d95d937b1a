"""The serve path in-process: inbox → worker → outbox → dispatcher → a real HTTP sink.
Time is driven by a test clock; every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError

from flowrun.dryrun.session import load_all_flows
from flowrun.serve.dispatcher import Dispatcher, backoff_delay
from flowrun.serve.metrics import Metrics
from flowrun.serve.worker import Worker
from flowrun.state import codec
from flowrun.state.sqlstore import SqlStore, insert_inbox_rows
from flowrun.state.tables import make_engine, migrate, outbox, runs
from tests.conftest import ROOT
from tests.servekit import Clock, Sink, config, database_params, database_url


@pytest.fixture(params=database_params())
def db(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Rig:
    def __init__(self, tmp_path: Path, db: str, flow_text: str, sink: Sink) -> None:
        self.folder = tmp_path / "flows"
        self.folder.mkdir(exist_ok=True)
        (self.folder / "f.yaml").write_text(flow_text.replace("SINK", sink.url))
        self.sink, self.clock = sink, Clock()
        self.config = config(tmp_path, database_url(db, tmp_path), self.folder, action_attempts=3)
        self.engine = make_engine(self.config.database)
        migrate(self.engine)
        self.restart()

    def restart(self) -> None:
        """A new worker and dispatcher on the same database: what a restarted service has."""
        self.metrics = Metrics()
        self.worker = Worker(self.config, self.engine, load_all_flows([self.folder]), self.metrics, self.clock)
        self.results: list[tuple[Any, ...]] = []

    def deliver(self, source: str, topic: str, body: bytes, delivery: str) -> bool:
        with self.engine.begin() as conn:
            [new] = insert_inbox_rows(
                conn,
                [
                    {
                        "source": source,
                        "topic": topic,
                        "body": body,
                        "delivery_id": delivery,
                        "received_at": self.clock(),
                        "triggered_at": None,
                    }
                ],
            )
        return new

    def settle(self) -> None:
        """Run the worker and the dispatcher until neither has anything due now."""
        for _ in range(20):
            moved = self.worker.step()
            sent = asyncio.run(self._dispatch())
            if not moved and not sent:
                return
        raise AssertionError("did not settle")

    async def _dispatch(self) -> int:
        worker = self.worker
        dispatcher = Dispatcher(
            self.config, self.engine, self.metrics, worker.complete, worker.wake.set, self.clock, worker.manager.flow_of
        )
        rows = dispatcher._claim(100)
        await asyncio.gather(*(dispatcher._perform(row) for row in rows))
        await dispatcher.http.aclose()
        return len(rows)

    def count(self, table: Any, *where: Any) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar() or 0)

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def rig(tmp_path: Path, db: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    rigs: list[Rig] = []
    with Sink() as sink:

        def make(flow_text: str) -> Rig:
            rigs.append(Rig(tmp_path, db, flow_text, sink))
            return rigs[-1]

        yield make
    for r in rigs:
        r.close()


WAIT_THEN_POST = """
flow: wait-then-post
on: order.created
steps:
  - wait: 1h
  - http: {url: "SINK/hook", json: {order: "{{ order.number }}"}}
    retry: {attempts: 3, backoff: 10s}
"""
ORDER = (ROOT / "examples/events/shopify/orders/create.json").read_bytes()


def test_a_wait_fires_exactly_once_and_survives_a_restart(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST)
    assert r.deliver("shopify", "orders/create", ORDER, "d-1")
    r.settle()
    assert r.count(runs, runs.c.status == "waiting") == 1
    r.clock.advance(timedelta(minutes=59))
    r.settle()
    assert r.sink.requests == []
    r.restart()  # the service restarts while the run waits
    r.clock.advance(timedelta(minutes=1))
    r.settle()
    r.settle()
    assert [req["body"] for req in r.sink.requests] == [b'{"order":"1042"}']
    assert r.count(runs, runs.c.status == "completed") == 1
    r.restart()
    r.clock.advance(timedelta(hours=5))
    r.settle()
    assert len(r.sink.requests) == 1  # never twice


def test_timers_due_while_down_fire_late_at_start(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST)
    r.deliver("shopify", "orders/create", ORDER, "d-1")
    r.settle()
    r.clock.advance(timedelta(hours=6))  # down for six hours
    r.restart()
    r.settle()
    assert len(r.sink.requests) == 1
    assert r.metrics.lateness_max == pytest.approx(5 * 3600)


def test_replayed_deliveries_and_repeated_events_make_one_run(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST)
    assert r.deliver("shopify", "orders/create", ORDER, "d-1")
    assert not r.deliver("shopify", "orders/create", ORDER, "d-1")
    r.settle()
    assert r.count(runs) == 1


def test_retries_honour_retry_after_then_succeed_with_one_idempotency_key(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST.replace("  - wait: 1h\n", ""))
    r.sink.script = [(503, {"Retry-After": "120.5"}), (500, {}), (200, {})]
    r.deliver("shopify", "orders/create", ORDER, "d-1")
    r.settle()
    assert len(r.sink.requests) == 1
    with r.engine.connect() as conn:
        row = conn.execute(select(outbox)).mappings().one()
    assert row["status"] == "pending" and "HTTP 503" in row["last_error"]
    assert (row["next_attempt_at"].replace(tzinfo=None) - r.clock().replace(tzinfo=None)) >= timedelta(seconds=120.5)
    r.clock.advance(timedelta(seconds=121))
    r.settle()
    r.clock.advance(timedelta(seconds=30))
    r.settle()
    assert len(r.sink.requests) == 3
    assert len({req["headers"]["Idempotency-Key"] for req in r.sink.requests}) == 1
    assert r.count(runs, runs.c.status == "completed") == 1


def test_a_permanent_error_parks_at_once_and_retry_requeues(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST.replace("  - wait: 1h\n", ""))
    r.sink.script = [(422, {})]
    r.deliver("shopify", "orders/create", ORDER, "d-1")
    r.settle()
    assert r.count(outbox, outbox.c.status == "parked") == 1
    assert r.count(runs, runs.c.status == "acting") == 1  # the run waits for the parked action
    with r.engine.begin() as conn:
        assert SqlStore(conn).requeue(None, r.clock()) == 1
    r.settle()
    assert len(r.sink.requests) == 2
    assert r.count(runs, runs.c.status == "completed") == 1


def test_giving_up_after_the_last_attempt_parks(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST.replace("  - wait: 1h\n", ""))
    r.sink.script = [(500, {})] * 3
    r.deliver("shopify", "orders/create", ORDER, "d-1")
    for _ in range(4):
        r.settle()
        r.clock.advance(timedelta(minutes=5))
    assert len(r.sink.requests) == 3
    with r.engine.connect() as conn:
        row = conn.execute(select(outbox)).mappings().one()
    assert row["status"] == "parked" and row["last_error"].startswith("gave up after 3 attempts: HTTP 500")


def test_checkout_abandoned_is_derived_after_the_idle_time(rig, db: str) -> None:
    r = rig("""
flow: remind
on: checkout.abandoned
until: order.created
steps:
  - http: {url: "SINK/remind", json: {to: "{{ customer.email }}"}}
""")
    r.deliver(
        "shopify", "checkouts/create", (ROOT / "examples/events/shopify/checkouts/create.json").read_bytes(), "c-1"
    )
    r.settle()
    r.clock.advance(timedelta(minutes=59))
    r.settle()
    assert r.sink.requests == []
    r.clock.advance(timedelta(minutes=1))
    r.settle()
    r.settle()
    assert [req["body"] for req in r.sink.requests] == [b'{"to":"ada@example.com"}']


def test_an_order_cancels_the_abandonment(rig, db: str) -> None:
    r = rig("""
flow: remind
on: checkout.abandoned
steps:
  - http: {url: "SINK/remind"}
""")
    r.deliver(
        "shopify", "checkouts/create", (ROOT / "examples/events/shopify/checkouts/create.json").read_bytes(), "c-1"
    )
    r.settle()
    r.clock.advance(timedelta(minutes=30))
    r.deliver("shopify", "orders/create", ORDER, "o-1")
    r.settle()
    r.clock.advance(timedelta(hours=2))
    r.settle()
    assert r.sink.requests == []


@pytest.mark.parametrize("missed", ["skip", "run_once"])
def test_schedule_ticks_missed_while_down_follow_the_policy(rig, db: str, missed: str) -> None:
    r = rig(f"""
flow: hourly
on: {{every: 1h, missed: {missed}}}
steps:
  - http: {{url: "SINK/tick"}}
""")
    r.settle()  # first start: the next tick is an hour away
    r.clock.advance(timedelta(hours=1))
    r.settle()
    r.settle()
    assert len(r.sink.requests) == 1
    r.clock.advance(timedelta(hours=5, minutes=30))  # down: five ticks missed
    r.restart()
    r.settle()
    r.settle()
    assert len(r.sink.requests) == (2 if missed == "run_once" else 1)


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    assert backoff_delay(1, 10, 3600, None, rand=lambda: 1.0) == 10
    assert backoff_delay(3, 10, 3600, None, rand=lambda: 1.0) == 40
    assert backoff_delay(3, 10, 3600, None, rand=lambda: 0.0) == 20
    assert backoff_delay(20, 10, 3600, None, rand=lambda: 1.0) == 3600
    assert backoff_delay(1, 10, 3600, 99.5, rand=lambda: 0.0) == 99.5


def test_a_claimed_action_is_leased_for_its_own_timeout(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST.replace("  - wait: 1h\n", "").replace("retry: {attempts: 3, backoff: 10s}", "timeout: 2m"))
    r.deliver("shopify", "orders/create", ORDER, "d-1")
    r.worker.step()
    with r.engine.begin() as conn:
        [row] = SqlStore(conn).claim_due(r.clock(), 10, timedelta(seconds=35))
    assert row["timeout_s"] == 120
    with r.engine.connect() as conn:
        leased = conn.execute(select(outbox.c.next_attempt_at)).scalar_one()
    assert leased.replace(tzinfo=None) == (r.clock() + timedelta(seconds=155)).replace(tzinfo=None)


def test_customer_inactive_fires_once_per_threshold_and_an_order_resets_it(rig, db: str) -> None:
    r = rig("""
flow: nudge
on: customer.inactive
steps:
  - http: {url: "SINK/nudge", json: {days: "{{ inactivity.days }}", to: "{{ customer.email }}"}}
""")

    def order_now(n: int) -> bytes:  # inactivity counts from the order's own time
        stamp = r.clock().isoformat()
        return json.dumps({**json.loads(ORDER), "id": n, "created_at": stamp, "updated_at": stamp}).encode()

    r.deliver("shopify", "orders/create", order_now(1), "o-1")
    r.settle()
    r.clock.advance(timedelta(days=29, hours=23))
    r.settle()
    assert r.sink.requests == []
    r.clock.advance(timedelta(hours=1))  # 30 days after the order
    r.settle()
    # a whole {{ expression }} keeps its type: days is the number 30
    assert [req["body"] for req in r.sink.requests] == [b'{"days":30,"to":"ada@example.com"}']
    r.deliver("shopify", "orders/create", order_now(2), "o-2")  # the clock starts again
    r.settle()
    r.clock.advance(timedelta(days=59))
    r.settle()
    assert [json.loads(req["body"])["days"] for req in r.sink.requests] == [30, 30]
    r.clock.advance(timedelta(days=1))
    r.settle()
    assert [json.loads(req["body"])["days"] for req in r.sink.requests] == [30, 30, 60]


def _order(n: int) -> bytes:
    return json.dumps({**json.loads(ORDER), "id": 5000 + n, "order_number": 2000 + n}).encode()


def test_a_batch_that_rolls_back_is_applied_again_from_the_database(rig, db: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The worker keeps committed runs decoded between batches; a batch whose commit fails
    must not leave its transitions there, or the retried timers would find runs that had
    already moved and never fire."""
    r = rig(WAIT_THEN_POST)
    for n in range(3):
        r.deliver("shopify", "orders/create", _order(n), f"d-{n}")
    r.settle()
    assert r.count(runs, runs.c.status == "waiting") == 3
    r.clock.advance(timedelta(hours=1))
    real_flush, flushed, failures = SqlStore.flush, [], []

    def flush_noting_runs(store: SqlStore) -> None:
        flushed.extend(store._dirty)
        real_flush(store)

    def fail_the_timers_commit(conn: Any) -> None:
        if len(flushed) == 3 and not failures:
            failures.append(sorted(flushed))
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))
        flushed.clear()

    monkeypatch.setattr(SqlStore, "flush", flush_noting_runs)
    event.listen(r.engine, "commit", fail_the_timers_commit)
    r.settle()
    assert len(failures[0]) == 3  # the three timers were in the batch that rolled back
    assert sorted(json.loads(req["body"])["order"] for req in r.sink.requests) == ["2000", "2001", "2002"]
    assert r.count(runs, runs.c.status == "completed") == 3


def test_runs_stored_before_the_trigger_column_still_resume(rig, db: str) -> None:
    """Schema v5 moved a run's trigger event out of `state` into `trigger_event`; a run
    written by v4 (event inside `state`, no column) resumes after the upgrade."""
    r = rig(WAIT_THEN_POST)
    r.deliver("shopify", "orders/create", ORDER, "d-1")
    r.settle()
    with r.engine.begin() as conn:
        row = conn.execute(select(runs)).mappings().one()
        state = {"trigger": codec.loads(row["trigger_event"]), **codec.loads(row["state"])}
        conn.execute(text("ALTER TABLE runs DROP COLUMN trigger_event"))
        conn.execute(text("UPDATE runs SET state = :state"), {"state": codec.dumps(state)})
        conn.execute(text("DELETE FROM schema_version WHERE version = 5"))
    r.engine.dispose()
    assert migrate(r.engine) == 5
    r.restart()
    r.clock.advance(timedelta(hours=1))
    r.settle()
    assert [req["body"] for req in r.sink.requests] == [b'{"order":"1042"}']
    with r.engine.connect() as conn:
        assert conn.execute(select(runs.c.trigger_event)).scalar_one() is not None  # written on the next save


def test_a_waiting_webhook_commit_is_visible_to_the_lock_holder_in_another_process(tmp_path: Path) -> None:
    """The webhook port raises a flag in the lock file while its commit waits; the worker
    (another process: here another engine, with its own locks) sees it and ends its batch."""
    import threading

    from flowrun.state.tables import URGENT, urgent_waiting

    url = f"sqlite:///{tmp_path / 'state.db'}"
    worker_side, port_side = make_engine(url), make_engine(url)
    migrate(worker_side)
    committed = threading.Event()

    def webhook_commit() -> None:
        URGENT.writes = True
        with port_side.begin() as conn:
            conn.execute(text("SELECT 1"))
        committed.set()

    with worker_side.begin() as conn:
        waiting = urgent_waiting(conn)
        assert not waiting()
        threading.Thread(target=webhook_commit, daemon=True).start()
        for _ in range(10_000):  # the thread reaches the lock within milliseconds
            if waiting():
                break
            committed.wait(0.001)
        assert waiting() and not committed.is_set()
    assert committed.wait(10)
    with worker_side.begin() as conn:
        assert not urgent_waiting(conn)()  # lowered once the webhook had the lock
    worker_side.dispose()
    port_side.dispose()


def test_unreadable_and_crashing_inbox_events_are_set_aside_and_the_rest_go_on(rig, db: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import flowrun.serve.worker as worker_module
    from flowrun.state.tables import inbox

    r = rig(WAIT_THEN_POST)
    real = worker_module.normalise

    def normalise(body: Any, **how: Any) -> Any:
        if how.get("delivery_id") == "d-crash":
            raise RuntimeError("a bug in normalisation")
        return real(body, **how)

    monkeypatch.setattr(worker_module, "normalise", normalise)
    r.deliver("shopify", "orders/create", b"{not json", "d-bad")
    r.deliver("shopify", "orders/create", ORDER, "d-crash")
    r.deliver("shopify", "orders/create", ORDER, "d-good")
    r.settle()
    with r.engine.connect() as conn:
        status = dict(conn.execute(select(inbox.c.delivery_id, inbox.c.status)).all())
    assert status == {"d-bad": "rejected", "d-crash": "failed", "d-good": "done"}
    assert r.count(runs) == 1


def test_events_nothing_reads_are_set_aside_unread_until_a_flow_listens(rig, db: str, tmp_path: Path) -> None:
    from flowrun.state.tables import cursors, inbox

    r = rig("flow: welcome\non: customer.created\nsteps:\n  - log: {message: hi}\n")
    # nothing reads orders: no flow, goal or wait on them, and no customer.inactive or
    # checkout.abandoned flow that would need them; so not even a broken body is parsed
    r.deliver("shopify", "orders/create", b"{not json", "d-1")
    r.deliver("shopify", "orders/create", ORDER, "d-2")
    r.deliver("shopify", "carts/create", b"{}", "d-3")  # an unknown topic is read, and rejected
    r.settle()
    with r.engine.connect() as conn:
        status = dict(conn.execute(select(inbox.c.delivery_id, inbox.c.status)).all())
    assert status == {"d-1": "ignored", "d-2": "ignored", "d-3": "rejected"}
    assert r.count(runs) == 0 and r.count(cursors, cursors.c.name.like("inactive:%")) == 0
    unread = r.worker.unread_topics()  # what the webhook port stores as ignored itself
    assert ("shopify", "orders/create") in unread and ("woocommerce", "order.created") in unread
    assert ("shopify", "customers/create") not in unread and ("woocommerce", "customer.created") not in unread

    (r.folder / "g.yaml").write_text("flow: win-back\non: customer.inactive\nsteps:\n  - log: {message: hi}\n")
    aside = r.worker.reload(load_all_flows([r.folder]))  # what SIGHUP does
    assert ("shopify", "orders/create") not in aside.unread and ("shopify", "customers/create") not in aside.unread
    assert aside.since == 3  # the port makes what it set aside after row 3 under the old set pending
    r.deliver("shopify", "orders/create", ORDER, "d-4")
    r.settle()
    with r.engine.connect() as conn:
        assert conn.execute(select(inbox.c.status).where(inbox.c.delivery_id == "d-4")).scalar() == "done"
    assert r.count(cursors, cursors.c.name.like("inactive:%")) == 1  # now tracked


def test_a_wake_for_new_webhooks_reads_the_inbox_alone_and_a_poke_reads_everything(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST)
    r.deliver("shopify", "orders/create", ORDER, "d-1")
    r.settle()
    r.clock.advance(timedelta(hours=2))  # d-1's wait is over
    other = json.dumps({**json.loads(ORDER), "id": 1, "order_number": 2}).encode()
    r.deliver("shopify", "orders/create", other, "d-2")
    assert r.worker._round(everything=False) == (True, False)  # the webhook port's wake-up
    assert r.count(runs, runs.c.status == "waiting") == 2  # d-2 started; d-1's timer not read yet
    assert r.worker._round(everything=True) == (True, True)  # the sweep's poke
    assert r.count(runs, runs.c.status == "waiting") == 1
    assert r.count(outbox) == 1
