"""The one thread that moves runs: inbox events, due timers, schedule ticks, derived
events and action results. Each input is applied in its own transaction, together with
the outbox rows and timers it creates, so a crash leaves either all of it or none.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from flowrun.config import Config
from flowrun.derive import CHECKOUT_TYPES, ORDER_TYPES, abandoned, checkout_completed, checkout_key, stock_edge
from flowrun.engine.state import Perform, Transition
from flowrun.errors import FlowrunError
from flowrun.events import Event
from flowrun.events.normalise import normalise, parse_json
from flowrun.flow.model import Flow, ScheduleTrigger
from flowrun.runtime.manager import Manager
from flowrun.runtime.store import MemoryStore
from flowrun.serve.metrics import Metrics
from flowrun.state import codec
from flowrun.state.sqlstore import SqlStore

log = logging.getLogger("flowrun.worker")
BATCH = 200
Clock = Callable[[], datetime]


class Worker:
    def __init__(
        self,
        config: Config,
        engine: Engine,
        flows: list[Flow],
        metrics: Metrics,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.config, self.engine, self.metrics, self.clock = config, engine, metrics, clock
        self.manager = Manager(flows, MemoryStore())
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.on_outbox: Callable[[], None] = lambda: None
        self._thread = threading.Thread(target=self._loop, name="flowrun-worker", daemon=True)
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self._thread.join(timeout=60)

    def reload(self, flows: list[Flow]) -> None:
        with self._lock:
            self.manager.load(flows)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(timeout=0.5)
            self.wake.clear()
            try:
                while self.step() and not self.stopping.is_set():
                    pass
            except Exception:  # keep serving; the input stays pending and is tried again
                log.exception("worker step failed; retrying shortly")
                self.stopping.wait(1.0)

    def step(self) -> bool:
        """One round of every kind of input; True if anything was done."""
        with self._lock:
            did = self._results()
            did |= self._inbox()
            did |= self._timers()
            did |= self._schedules()
            did |= self._abandoned()
            return did

    # -- applying transitions ------------------------------------------------------------

    def _apply(self, conn: Connection, transitions: list[Transition], now: datetime) -> None:
        store = SqlStore(conn)
        for transition in transitions:
            for command in transition.commands:
                if isinstance(command, Perform):
                    store.enqueue(command, now, self.config.action_attempts)
            self.metrics.count("flowrun_run_transitions_total", status=transition.run.status.value)
        if any(isinstance(c, Perform) for t in transitions for c in t.commands):
            self.on_outbox()

    def _transact(self, fn: Callable[[Manager, SqlStore], list[Transition]]) -> list[Transition]:
        now = self.clock()
        with self.engine.begin() as conn:
            store = SqlStore(conn)
            self.manager.store = store
            transitions = fn(self.manager, store)
            self._apply(conn, transitions, now)
        return transitions

    # -- inputs --------------------------------------------------------------------------

    def _inbox(self) -> bool:
        with self.engine.begin() as conn:
            rows = SqlStore(conn).pending_inbox(BATCH)
        for row in rows:
            self._event_row(row)
        return bool(rows)

    def _event_row(self, row: dict[str, Any]) -> None:
        try:
            events = normalise(
                parse_json(row["body"]),
                source=row["source"],
                topic=row["topic"] if row["source"] != "custom" else None,
                delivery_id=row["delivery_id"] if row["source"] == "shopify" else None,
                received_at=codec._aware(row["received_at"]),
            )
        except (FlowrunError, ValueError, KeyError, TypeError) as exc:
            log.warning("inbox %s/%s cannot be normalised: %s", row["source"], row["delivery_id"], exc)
            with self.engine.begin() as conn:
                SqlStore(conn).mark_inbox(row["seq"], "rejected", str(exc))
            self.metrics.count("flowrun_events_unprocessable_total", source=row["source"])
            return

        def handle(manager: Manager, store: SqlStore) -> list[Transition]:
            now = self.clock()
            out: list[Transition] = []
            for event in events:
                for derived in self._derive(store, event, now):
                    out.extend(manager.on_event(derived, now))
                out.extend(manager.on_event(event, now))
            store.mark_inbox(row["seq"], "done")
            return out

        self._transact(handle)

    def _timers(self) -> bool:
        now = self.clock()
        with self.engine.begin() as conn:
            due = SqlStore(conn).due_timers(now, BATCH)
        for run_id, due_at in due:
            self.metrics.observe_lateness((self.clock() - due_at).total_seconds())

            def fire(manager: Manager, _store: SqlStore, r: str = run_id, d: datetime = due_at) -> list[Transition]:
                return manager.on_timer(r, d, self.clock())

            self._transact(fire)
        return bool(due)

    def _results(self) -> bool:
        """Apply finished actions from the outbox (the durable hand-over from the dispatcher)."""
        with self.engine.begin() as conn:
            finished = SqlStore(conn).results_to_apply(BATCH)
        for row in finished:

            def apply(manager: Manager, store: SqlStore, r: dict[str, Any] = row) -> list[Transition]:
                store.mark_applied(r["key"])
                result = codec.loads(r["result"]) if r["result"] else {}
                error = r["last_error"] if r["status"] == "failed" else None
                return manager.on_result(r["run_id"], r["key"], result, error, self.clock())

            self._transact(apply)
        return bool(finished)

    # -- schedules: next due tick per flow, stored as a cursor ---------------------------

    def _schedules(self) -> bool:
        now, did = self.clock(), False
        for flow in list(self.manager.flows.values()):
            trigger = flow.trigger
            if not isinstance(trigger, ScheduleTrigger):
                continue
            name = f"schedule:{flow.id}"
            with self.engine.begin() as conn:
                due = SqlStore(conn).get_cursor(name)
                if due is None:  # first start: the next tick from now
                    SqlStore(conn).set_cursor(name, _next_tick(trigger, now))
                    continue
            if due > now:
                continue
            missed = due
            following = _next_tick(trigger, due)
            while following <= now:  # ticks that fell due while the service was down
                following = _next_tick(trigger, following)
            fire = trigger.missed == "run_once" or _next_tick(trigger, missed) > now

            def tick(
                manager: Manager,
                store: SqlStore,
                f: Flow = flow,
                at: datetime = missed,
                nxt: datetime = following,
                go: bool = fire,
            ) -> list[Transition]:
                store.set_cursor(f"schedule:{f.id}", nxt)
                return manager.on_tick(f.id, at, self.clock()) if go else []

            self._transact(tick)
            did = True
        return did

    # -- derived events ------------------------------------------------------------------

    def _derive(self, store: SqlStore, event: Event, now: datetime) -> list[Event]:
        """The same derivation as dry-run (flowrun.derive), with its state kept as cursors."""
        if event.type in CHECKOUT_TYPES and event.customer_key:
            name = f"abandon:{event.customer_key}:{checkout_key(event)}"
            due = None if checkout_completed(event) else now + self.config.checkout_idle
            store.set_cursor(name, {"due": due, "event": codec.event_to_dict(event)} if due else None)
        elif event.type in ORDER_TYPES and event.customer_key:
            for name in _cursor_names(store, f"abandon:{event.customer_key}:"):
                store.set_cursor(name, None)
        elif event.type == "inventory.changed":
            key, _, _ = stock_edge(event, False, self.config.low_stock_threshold)
            if key:
                was_low = bool(store.get_cursor(f"low:{key}"))
                key, is_low, derived = stock_edge(event, was_low, self.config.low_stock_threshold)
                store.set_cursor(f"low:{key}", is_low)
                return [derived] if derived else []
        return []

    def _abandoned(self) -> bool:
        now = self.clock()
        with self.engine.begin() as conn:
            store = SqlStore(conn)
            due = []
            for name in _cursor_names(store, "abandon:"):
                value = store.get_cursor(name)
                if value and value["due"] <= now:
                    due.append((name, value))
        for name, value in due:
            seen = codec.event_from_dict(value["event"])
            derived = abandoned(seen, name.rsplit(":", 1)[-1], value["due"])

            def fire(manager: Manager, store: SqlStore, n: str = name, e: Event = derived) -> list[Transition]:
                store.set_cursor(n, None)
                return manager.on_event(e, self.clock())

            self._transact(fire)
        return bool(due)


def _next_tick(trigger: ScheduleTrigger, after: datetime) -> datetime:
    if trigger.cron is not None:
        return trigger.cron.next_after(after)
    assert trigger.every is not None
    return after + trigger.every


def _cursor_names(store: SqlStore, prefix: str) -> list[str]:
    from sqlalchemy import select

    from flowrun.state.tables import cursors

    query = select(cursors.c.name).where(cursors.c.name.like(prefix.replace("%", r"\%") + "%", escape="\\"))
    return list(store.conn.execute(query).scalars())


def store_polled(engine: Any, name: str, polled: list[Any], cursor: datetime, now: datetime) -> int:
    """Polled bodies into the inbox and the cursor forward, in one transaction."""
    from flowrun.state.sqlstore import insert_inbox_rows

    with engine.begin() as conn:
        stored = insert_inbox_rows(
            conn,
            [
                {
                    "source": p.source,
                    "topic": p.topic,
                    "body": p.body,
                    "delivery_id": p.delivery_id,
                    "received_at": now,
                    "triggered_at": None,
                }
                for p in polled
            ],
        )
        SqlStore(conn).set_cursor(name, cursor)
    return sum(stored)
