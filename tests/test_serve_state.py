"""The serve path in-process: inbox → engine → outbox → dispatcher → a real HTTP sink, on the
same runtime dry-run uses. Time is driven by a test clock; every test runs on SQLite and on
PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from flowrun.dryrun.session import load_all_flows
from flowrun.runtime.attempts import backoff_delay
from flowrun.state import admin
from flowrun.state.schema import attempts, cursors, inbox, outbox, runs
from tests.conftest import ROOT
from tests.node import Node
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
        self.node = Node(self.config, self.clock)

    def restart(self, killed: bool = False) -> None:
        """A new engine and dispatcher on the same database: what a restarted service has."""
        self.node.die() if killed else self.node.close()
        self.node = Node(self.config, self.clock)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.node, name)


@pytest.fixture
def rig(tmp_path: Path, db: str):  # type: ignore[no-untyped-def]
    rigs: list[Rig] = []
    with Sink() as sink:

        def make(flow_text: str) -> Rig:
            rigs.append(Rig(tmp_path, db, flow_text, sink))
            return rigs[-1]

        yield make
    for r in rigs:
        r.node.close()


WAIT_THEN_POST = """
flow: wait-then-post
on: order.created
steps:
  - wait: 1h
  - http: {url: "SINK/hook", json: {order: "{{ order.number }}"}}
    retry: {attempts: 3, backoff: 10s}
"""
ORDER = (ROOT / "examples/events/shopify/orders/create.json").read_bytes()
CHECKOUT = (ROOT / "examples/events/shopify/checkouts/create.json").read_bytes()


def _order(n: int, **extra: Any) -> bytes:
    return json.dumps({**json.loads(ORDER), "id": 5000 + n, "order_number": 2000 + n, **extra}).encode()


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
    with r.db.connect() as conn:
        resumed = [t for t in _trace(conn) if t[2] == "wait" and t[3] == "resumed"]
    assert resumed and resumed[0][4]["late_s"] == pytest.approx(5 * 3600)


def _trace(conn: Any) -> list[Any]:
    from flowrun.state.runs import SqlRuns

    run_id = conn.execute(select(runs.c.id)).scalar_one()
    run = SqlRuns(conn, None).get(run_id)
    assert run is not None
    return [(t.at, t.step, t.kind, t.outcome, dict(t.detail)) for t in run.trace]


def test_replayed_deliveries_and_repeated_events_make_one_run(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST)
    assert r.deliver("shopify", "orders/create", ORDER, "d-1")
    assert not r.deliver("shopify", "orders/create", ORDER, "d-1")
    assert r.deliver("shopify", "orders/create", ORDER, "d-2")  # the same order redelivered: one event id
    r.settle()
    assert r.count(runs) == 1


def test_retries_honour_retry_after_then_succeed_with_one_idempotency_key(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST.replace("  - wait: 1h\n", ""))
    r.sink.script = [(503, {"Retry-After": "120.5"}), (500, {}), (200, {})]
    r.deliver("shopify", "orders/create", ORDER, "d-1")
    r.settle()
    assert len(r.sink.requests) == 1
    [row] = r.outbox_rows()
    assert row["status"] == "ready" and "HTTP 503" in row["last_error"]
    assert (row["next_attempt_at"].replace(tzinfo=None) - r.clock().replace(tzinfo=None)) >= timedelta(seconds=120.5)
    r.run_until(r.clock() + timedelta(minutes=5))
    assert len(r.sink.requests) == 3
    assert len({req["headers"]["Idempotency-Key"] for req in r.sink.requests}) == 1
    assert r.count(runs, runs.c.status == "completed") == 1


def test_a_429_waits_for_retry_after_without_spending_an_attempt(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST.replace("  - wait: 1h\n", "").replace("attempts: 3", "attempts: 1"))
    r.sink.script = [(429, {"Retry-After": "30"}), (429, {"Retry-After": "30"}), (200, {})]
    r.deliver("shopify", "orders/create", ORDER, "d-1")
    r.run_until(r.clock() + timedelta(minutes=2))
    assert len(r.sink.requests) == 3  # one attempt allowed, yet two 429s did not use it up
    assert r.count(runs, runs.c.status == "completed") == 1
    with r.db.connect() as conn:
        outcomes = [o for (o,) in conn.execute(select(attempts.c.outcome).order_by(attempts.c.seq))]
    assert outcomes == ["rate_limited", "rate_limited", "ok"]


def test_a_permanent_error_parks_at_once_and_retry_requeues(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST.replace("  - wait: 1h\n", ""))
    r.sink.script = [(422, {})]
    r.deliver("shopify", "orders/create", ORDER, "d-1")
    r.settle()
    assert r.count(outbox, outbox.c.status == "parked") == 1
    assert r.count(runs, runs.c.status == "acting") == 1  # the run waits for the parked action
    with r.db.begin() as conn:
        assert admin.requeue(conn, None, r.clock()) == (1, [])
    r.settle()
    assert len(r.sink.requests) == 2
    assert r.count(runs, runs.c.status == "completed") == 1


def test_giving_up_after_the_last_attempt_parks(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST.replace("  - wait: 1h\n", ""))
    r.sink.script = [(500, {})] * 3
    r.deliver("shopify", "orders/create", ORDER, "d-1")
    r.run_until(r.clock() + timedelta(minutes=20))
    assert len(r.sink.requests) == 3
    [row] = r.outbox_rows()
    assert row["status"] == "parked" and row["last_error"].startswith("gave up after 3 attempts: HTTP 500")


GOAL_THEN_DEFERRED = """
flow: remind-until-order
on: checkout.abandoned
until: order.created
steps:
  - http: {url: "SINK/first", json: {n: 1}}
    retry: {attempts: 5, backoff: 1h}
"""


def test_a_run_that_reaches_its_goal_takes_its_pending_retry_with_it(rig, db: str) -> None:
    """A send waiting for a retry must not go out after the run converted (nor be re-queued)."""
    r = rig(GOAL_THEN_DEFERRED)
    r.sink.script = [(503, {})]
    r.deliver("shopify", "checkouts/create", CHECKOUT, "c-1")
    r.run_until(r.clock() + timedelta(hours=1, minutes=1))
    assert len(r.sink.requests) == 1  # the first attempt failed; the retry is an hour away
    r.deliver("shopify", "orders/create", ORDER, "o-1")  # the goal
    r.run_until(r.clock() + timedelta(days=2))
    assert len(r.sink.requests) == 1  # the peer received nothing more
    assert r.count(runs, runs.c.status == "converted") == 1
    [row] = r.outbox_rows()
    assert row["status"] == "cancelled" and row["last_error"].startswith("run converted")
    with r.db.begin() as conn:
        moved, refused = admin.requeue(conn, [row["key"]], r.clock())
    assert moved == 0 and "its run is converted" in refused[0][1]


def test_restart_cancels_the_older_runs_unsent_actions(rig, db: str) -> None:
    r = rig("""
flow: latest-only
on: order.created
concurrency: {key: "{{ customer.email }}", mode: restart}
steps:
  - http: {url: "SINK/x", json: {order: "{{ order.number }}"}}
    retry: {attempts: 5, backoff: 1h}
""")
    r.sink.script = [(503, {})]
    r.deliver("shopify", "orders/create", _order(1), "d-1")
    r.settle()
    r.deliver("shopify", "orders/create", _order(2), "d-2")
    r.run_until(r.clock() + timedelta(days=1))
    assert sorted(json.loads(q["body"])["order"] for q in r.sink.requests) == ["2001", "2002"]
    assert r.count(outbox, outbox.c.status == "cancelled") == 1


def test_checkout_abandoned_is_derived_after_the_idle_time(rig, db: str) -> None:
    r = rig("""
flow: remind
on: checkout.abandoned
until: order.created
steps:
  - http: {url: "SINK/remind", json: {to: "{{ customer.email }}"}}
""")
    r.deliver("shopify", "checkouts/create", CHECKOUT, "c-1")
    r.settle()
    r.clock.advance(timedelta(minutes=59))
    r.settle()
    assert r.sink.requests == []
    r.clock.advance(timedelta(minutes=1))
    r.settle()
    assert [req["body"] for req in r.sink.requests] == [b'{"to":"ada@example.com"}']


def test_an_order_cancels_the_abandonment(rig, db: str) -> None:
    r = rig("""
flow: remind
on: checkout.abandoned
steps:
  - http: {url: "SINK/remind"}
""")
    r.deliver("shopify", "checkouts/create", CHECKOUT, "c-1")
    r.settle()
    r.clock.advance(timedelta(minutes=30))
    r.deliver("shopify", "orders/create", ORDER, "o-1")
    r.run_until(r.clock() + timedelta(hours=2))
    assert r.sink.requests == []


@pytest.mark.parametrize("missed", ["skip", "run_once"])
def test_schedule_ticks_missed_while_down_follow_the_policy(rig, db: str, missed: str) -> None:
    r = rig(f"""
flow: hourly
on: {{every: 1h, missed: {missed}}}
steps:
  - http: {{url: "SINK/tick"}}
""")
    from flowrun.serve.engine.leader import tick_schedules

    def tick() -> None:  # what the leader does each round
        tick_schedules(r.db, list(r.loop.runtime.flows.current.values()), r.clock())
        r.settle()

    tick()  # first start: the next tick is an hour away
    r.clock.advance(timedelta(hours=1))
    tick()
    assert len(r.sink.requests) == 1
    r.clock.advance(timedelta(hours=5, minutes=30))  # down: five ticks missed
    r.restart()
    tick()
    tick()
    assert len(r.sink.requests) == (2 if missed == "run_once" else 1)


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    assert backoff_delay(1, 10, 3600, None, rand=lambda: 1.0) == 10
    assert backoff_delay(3, 10, 3600, None, rand=lambda: 1.0) == 40
    assert backoff_delay(3, 10, 3600, None, rand=lambda: 0.0) == 20
    assert backoff_delay(20, 10, 3600, None, rand=lambda: 1.0) == 3600
    assert backoff_delay(1, 10, 3600, 99.5, rand=lambda: 0.0) == 99.5


def test_sends_a_dead_dispatcher_held_go_again_marked_outcome_unknown(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST.replace("  - wait: 1h\n", ""))
    r.deliver("shopify", "orders/create", ORDER, "d-1")
    r.loop.round()
    from flowrun.serve.dispatcher import claims

    with r.db.begin() as conn:  # claimed, then the dispatcher dies before the answer is written
        assert len(claims.claim(conn, r.dispatch_cluster.id, r.clock(), 10)) == 1
    assert r.count(outbox, outbox.c.status == "sending") == 1
    r.restart(killed=True)
    assert r.node.taken_back == 1
    r.settle()
    assert len(r.sink.requests) == 1 and r.count(runs, runs.c.status == "completed") == 1
    with r.db.connect() as conn:
        outcomes = [o for (o,) in conn.execute(select(attempts.c.outcome).order_by(attempts.c.seq))]
    assert outcomes == ["unknown", "ok"]


def test_inactivity_counts_from_when_flowrun_learnt_of_the_order(rig, db: str) -> None:
    """A backfilled order dated months ago must not make its customer inactive at once."""
    r = rig("""
flow: nudge
on: customer.inactive
steps:
  - http: {url: "SINK/nudge", json: {days: "{{ inactivity.days }}", to: "{{ customer.email }}"}}
""")
    old = (r.clock() - timedelta(days=400)).isoformat()
    r.deliver("shopify", "orders/create", _order(1, created_at=old, updated_at=old), "o-1")
    r.settle()
    r.run_until(r.clock() + timedelta(days=29, hours=23))
    assert r.sink.requests == []
    r.run_until(r.clock() + timedelta(hours=1))  # 30 days after flowrun learnt of it
    # a whole {{ expression }} keeps its type: days is the number 30
    assert [json.loads(req["body"]) for req in r.sink.requests] == [{"days": 30, "to": "ada@example.com"}]
    r.deliver("shopify", "orders/create", _order(2), "o-2")  # the clock starts again
    r.run_until(r.clock() + timedelta(days=59))
    assert [json.loads(req["body"])["days"] for req in r.sink.requests] == [30, 30]
    r.run_until(r.clock() + timedelta(days=1))
    assert [json.loads(req["body"])["days"] for req in r.sink.requests] == [30, 30, 60]


def test_a_commit_that_fails_leaves_nothing_remembered_and_is_applied_again(rig, db: str) -> None:
    """The engine keeps committed runs decoded between units of work; a unit whose commit fails
    must not leave its transitions there, or the retried timers would find runs already moved."""
    r = rig(WAIT_THEN_POST)
    for n in range(3):
        r.deliver("shopify", "orders/create", _order(n), f"d-{n}")
    r.settle()
    assert r.count(runs, runs.c.status == "waiting") == 3
    r.clock.advance(timedelta(hours=1))
    failures: list[int] = []

    def fail_once(conn: Any) -> None:
        if not failures:
            failures.append(1)
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    event.listen(r.db, "commit", fail_once)
    with pytest.raises(OperationalError):
        r.loop.round()
    event.remove(r.db, "commit", fail_once)
    r.settle()
    assert sorted(json.loads(req["body"])["order"] for req in r.sink.requests) == ["2000", "2001", "2002"]
    assert r.count(runs, runs.c.status == "completed") == 3


def test_unreadable_and_crashing_inbox_events_are_set_aside_and_the_rest_go_on(rig, db: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import flowrun.serve.engine.sources as sources

    r = rig(WAIT_THEN_POST)
    real = sources.normalise

    def normalise(body: Any, **how: Any) -> Any:
        if how.get("delivery_id") == "d-crash":
            raise RuntimeError("a bug in normalisation")
        return real(body, **how)

    monkeypatch.setattr(sources, "normalise", normalise)
    r.deliver("shopify", "orders/create", b"{not json", "d-bad")
    r.deliver("shopify", "orders/create", ORDER, "d-crash")
    r.deliver("shopify", "orders/create", _order(1), "d-good")
    r.settle()
    with r.db.connect() as conn:
        status = dict(conn.execute(select(inbox.c.delivery_id, inbox.c.status)).all())
    assert status == {"d-bad": "rejected", "d-crash": "failed", "d-good": "done"}
    assert r.count(runs) == 1
    monkeypatch.setattr(sources, "normalise", real)  # the fix; then `flowrun inbox --replay`
    from flowrun.state import inbox as inbox_rows

    with r.db.begin() as conn:
        assert inbox_rows.replay(conn, None) == 2
    r.settle()
    assert r.count(runs) == 2  # the crashed one became its run; the broken body is rejected again


def test_a_timer_that_breaks_the_runtime_fails_its_run_and_the_others_go_on(rig, db: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from flowrun.engine import engine as pure

    r = rig(WAIT_THEN_POST)
    for n in range(3):
        r.deliver("shopify", "orders/create", _order(n), f"d-{n}")
    r.settle()
    poisoned = r.outbox_rows() or None
    assert poisoned is None
    with r.db.connect() as conn:
        victim = sorted(conn.execute(select(runs.c.id)).scalars())[1]
    real = pure.advance

    def advance(flow: Any, run: Any, given: Any, now: Any) -> Any:
        if run.id == victim:
            raise ZeroDivisionError("a bug")
        return real(flow, run, given, now)

    monkeypatch.setattr(pure, "advance", advance)
    r.clock.advance(timedelta(hours=1))
    r.settle()
    assert r.count(runs, runs.c.status == "completed") == 2
    with r.db.connect() as conn:
        (status,) = conn.execute(select(runs.c.status).where(runs.c.id == victim)).one()
    assert status == "failed"
    assert len(r.sink.requests) == 2
    r.settle()  # and it is not tried again every round
    assert len(r.sink.requests) == 2


def test_a_stored_payload_that_looks_like_a_marker_reads_back_as_stored(rig, db: str) -> None:
    r = rig(WAIT_THEN_POST.replace('json: {order: "{{ order.number }}"}', 'json: {note: "{{ event.raw.note }}"}'))
    r.deliver("shopify", "orders/create", _order(1, note={"$time": "not a time"}), "d-1")
    r.settle()
    r.restart()  # decoded from the database, not from memory
    r.clock.advance(timedelta(hours=1))
    r.settle()
    assert json.loads(r.sink.requests[0]["body"]) == {"note": {"$time": "not a time"}}


def test_events_nothing_reads_are_set_aside_unread_until_a_flow_listens(rig, db: str, tmp_path: Path) -> None:
    r = rig("flow: welcome\non: customer.created\nsteps:\n  - log: {message: hi}\n")
    # nothing reads orders: no flow, goal or wait on them, and no customer.inactive or
    # checkout.abandoned flow that would need them; so not even a broken body is parsed
    r.deliver("shopify", "orders/create", b"{not json", "d-1")
    r.deliver("shopify", "orders/create", ORDER, "d-2")
    r.deliver("shopify", "carts/create", b"{}", "d-3")  # an unknown topic is read, and rejected
    r.settle()
    with r.db.connect() as conn:
        status = dict(conn.execute(select(inbox.c.delivery_id, inbox.c.status)).all())
    assert status == {"d-1": "ignored", "d-2": "ignored", "d-3": "rejected"}
    assert r.count(runs) == 0 and r.count(cursors, cursors.c.name.like("inactive:%")) == 0
    unread = r.loop.sources.unread_topics()  # what the webhook port stores as ignored itself
    assert ("shopify", "orders/create") in unread and ("woocommerce", "order.created") in unread
    assert ("shopify", "customers/create") not in unread and ("woocommerce", "customer.created") not in unread

    (r.folder / "g.yaml").write_text("flow: win-back\non: customer.inactive\nsteps:\n  - log: {message: hi}\n")
    r.loop.reload(load_all_flows([r.folder]))  # what SIGHUP does
    unread = r.loop.sources.unread_topics()
    assert ("shopify", "orders/create") not in unread and ("shopify", "customers/create") not in unread
    r.deliver("shopify", "orders/create", ORDER, "d-4")
    r.settle()
    with r.db.connect() as conn:
        assert conn.execute(select(inbox.c.status).where(inbox.c.delivery_id == "d-4")).scalar() == "done"
    assert r.count(cursors, cursors.c.name.like("inactive:%")) == 1  # now tracked


SMS_ON_ORDER = """
flow: text-the-shop
on: order.created
steps:
  - sms: {to: "+14155550199", text: "order {{ order.number }}", category: transactional}
"""


def test_sends_to_one_twilio_sender_keep_to_its_documented_rate_and_a_429_holds_the_bucket(rig, db: str) -> None:
    from flowrun.config import Secret
    from tests.fakeproviders import FakeTwilio

    twilio = FakeTwilio("twilio-token")
    try:
        r = rig(SMS_ON_ORDER)
        channels = {
            "sms": {
                "account_sid": FakeTwilio.SID,
                "auth_token": Secret("twilio-token", "T"),
                "from": "+14155550100",
                "api_url": twilio.url,
            }
        }
        r.config = replace(r.config, channels=channels)
        r.restart()
        for n in range(3):
            r.deliver("shopify", "orders/create", _order(n), f"d-{n}")
        r.settle()
        assert len(twilio.sent) == 1  # Twilio: one message a second per long code
        r.clock.advance(timedelta(seconds=1))
        r.settle()
        assert len(twilio.sent) == 2
        twilio.failures = [(429, {"Retry-After": "30"})]
        r.clock.advance(timedelta(seconds=1))
        r.settle()
        r.clock.advance(timedelta(seconds=29))
        r.settle()
        assert len(twilio.sent) == 2  # Twilio said 30 s: the bucket waits for it
        r.clock.advance(timedelta(seconds=1))
        r.settle()
        assert len(twilio.sent) == 3
        with r.db.connect() as conn:
            attempts_of = dict(conn.execute(select(outbox.c.key, outbox.c.attempts)).all())
        assert sorted(attempts_of.values()) == [1, 1, 1]  # waiting for a rate limit spends no attempt
    finally:
        twilio.close()
