"""The one thread that moves runs: inbox events, due timers, schedule ticks, derived
events and action results.

Inputs are applied in batches: one transaction holds as many inputs as fit in about
`CHUNK_SECONDS`, with the run transitions, timers and outbox rows they create, so a crash
leaves all of a batch or none of it, and the webhook port's inbox writer waits at most
about that long for SQLite's single write lock. The inputs themselves are found in a
read-only snapshot, which takes no lock. If a batch raises, its inputs are
applied again one per transaction; an inbox event that still fails is marked `failed`
(with the error, visible in the inbox) instead of blocking every event behind it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from flowrun.config import Config
from flowrun.derive import (
    CHECKOUT_TYPES,
    ORDER_TYPES,
    InactivityWatcher,
    Tracking,
    abandoned,
    checkout_completed,
    checkout_key,
    store_events,
    thresholds_for,
)
from flowrun.engine.state import Perform, RunState, Transition
from flowrun.errors import FlowrunError
from flowrun.events import Event
from flowrun.events.normalise import known_topics, normalise, parse_json, topic_types
from flowrun.flow.model import Flow, ScheduleTrigger
from flowrun.guardrails import CONSENT_TYPES, subscription_change
from flowrun.runtime.manager import Manager
from flowrun.runtime.store import MemoryStore
from flowrun.serve.ingest import SetAside
from flowrun.serve.metrics import Metrics
from flowrun.state import codec
from flowrun.state.ledger import SqlLedger
from flowrun.state.sqlstore import SqlStore
from flowrun.state.tables import reading, urgent_waiting

log = logging.getLogger("flowrun.worker")
BATCH = 500
CHUNK_SECONDS = 0.05
YIELD_AFTER_SECONDS = 0.003  # past this, a batch ends early when a webhook's commit waits for the lock
READ_AHEAD = 32  # due timers' runs read in one query per this many inputs
ROUND_GAP = 0.02  # seconds between rounds begun by wake-ups (rounds with work left run at once)
KNOWN_RUNS = 1024  # recently committed runs kept decoded: those whose action is out
Clock = Callable[[], datetime]
Apply = Callable[[Manager, SqlStore], list[Transition]]


@dataclass(frozen=True)
class Unit:
    """One input: applied inside a transaction; `quarantine` records it as failed for good."""

    label: str
    apply: Apply
    quarantine: Callable[[SqlStore, str], None] | None = None
    run_id: str | None = None  # the run it resumes, read ahead with its batch


@dataclass(frozen=True)
class Completion:
    """An action the dispatcher performed: applied (outbox row + run) in the worker's next batch.
    Until that commits the row stays `sending`, so a crash here means a re-send after the lease."""

    key: str
    run_id: str
    action: str
    params: dict[str, Any]
    result: dict[str, Any]
    at: datetime


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
        self.tracking = Tracking.for_flows(self.manager.listens_to)
        self._read: dict[tuple[str, str | None], bool] = {}  # (source, topic): anything reads it
        self._watch(flows)
        self.wake = threading.Event()
        self._everything = threading.Event()  # a round reads every input, not just the inbox
        self._everything.set()
        self.stopping = threading.Event()
        self.on_outbox: Callable[[], None] = lambda: None
        self.completions: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="flowrun-worker", daemon=True)
        self._lock = threading.Lock()
        self._known: OrderedDict[str, RunState] = OrderedDict()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self._thread.join(timeout=60)

    def reload(self, flows: list[Flow]) -> SetAside:
        """The new flows, and what the webhook port should set aside from now on: `since` is
        the last inbox row stored before them (rows after it were accepted under the new set)."""
        with self._lock:
            self.manager.load(flows)
            self.tracking = Tracking.for_flows(self.manager.listens_to)
            self._watch(flows)
            self._read.clear()
            with reading(self.engine) as conn:
                since = SqlStore(conn).last_inbox_seq()
            aside = SetAside(self.unread_topics(), since)
        self.poke()
        return aside

    def _watch(self, flows: list[Flow]) -> None:
        """The derivations' thresholds: those the flows name, and the project's defaults."""
        self.thresholds = thresholds_for(
            flows, inactive_after=self.config.inactive_after, low_stock_threshold=self.config.low_stock_threshold
        )
        self.inactivity = InactivityWatcher(self.thresholds)

    def unread_topics(self) -> frozenset[tuple[str, str]]:
        """The (source, topic) pairs nothing reads, which the webhook port stores as `ignored`
        so the engine never has to touch them."""
        return frozenset(
            (source, topic)
            for source, topics in known_topics().items()
            for topic in topics
            if not self._anything_reads(source, topic)
        )

    def poke(self) -> None:
        """Anything may be due (the sweep's tick, an action that failed or was skipped): the
        next round reads every kind of input. A plain `wake` (new inbox rows, an action's
        result) reads only the inbox and the results handed over in memory."""
        self._everything.set()
        self.wake.set()

    def complete(self, completion: Completion) -> None:
        """Called from the dispatcher's thread when a provider accepted an action."""
        self.completions.put(completion)
        self.wake.set()

    def _loop(self) -> None:
        started = 0.0
        while True:
            if not self.wake.wait(timeout=0.5):
                self._everything.set()
            # The port wakes the worker at each of its commits (hundreds a second under load),
            # and a round costs its reads and a commit however few rows it finds: rounds begun
            # by a wake-up are spaced, so each takes more rows, for at most ROUND_GAP of latency.
            self.stopping.wait(ROUND_GAP - (time.perf_counter() - started))
            started = time.perf_counter()
            self.wake.clear()
            stopping = self.stopping.is_set()
            try:
                while not self.stopping.is_set():
                    everything = self._everything.is_set()
                    self._everything.clear()  # before reading: a poke during the round is kept
                    moved, more = self._round(everything)
                    if more:  # a full batch of timers, say: read them all again next round
                        self._everything.set()
                    if not moved:
                        break
                if stopping:  # one last round after the dispatcher drained: keep its results
                    self.step()
                    return
            except Exception:  # keep serving; the input stays pending and is tried again
                log.exception("worker step failed; retrying shortly")
                self.stopping.wait(1.0)

    def step(self) -> bool:
        """One round of every kind of input; True if anything was done."""
        return self._round(everything=True)[0]

    def _round(self, everything: bool) -> tuple[bool, bool]:
        """Whether anything was done, and whether inputs other than the inbox were."""
        with self._lock:
            results: list[Unit] = []
            due: list[Unit] = []
            completed = self._completed()
            with reading(self.engine) as conn, conn.begin():
                store = SqlStore(conn)
                if everything:
                    results = self._results(store)
                new = self._inbox(store)
                if everything:
                    due = self._timers(store) + self._schedules(store) + self._due_checks(store)
            units = completed + results + new + due
            self._run(units)
            return bool(units), bool(results or due)

    # -- applying units in batches -------------------------------------------------------

    def _run(self, units: list[Unit]) -> None:
        i = 0
        while i < len(units):
            j = i
            try:
                with self.engine.begin() as conn:
                    j, settled = self._chunk(conn, units, i)
                self._remember(settled)
            except Exception:
                # The batch rolled back. Apply its first input alone (quarantined if it fails
                # again) and go on from the next one: order is kept, nothing is lost, and a
                # poison input is isolated after at most one retry per input ahead of it.
                log.exception("a batch starting at %s failed; applying it alone", units[i].label)
                self._alone(units[i])
                j = i + 1
            i = j

    def _chunk(self, conn: Connection, units: list[Unit], i: int) -> tuple[int, dict[str, RunState]]:
        """Apply units from i while time allows; returns the index after the last one applied,
        and the runs as they stand at the end (to remember once committed)."""
        store = SqlStore(conn, batched=True, known=self._known)
        self.manager.store = store
        now, started = self.clock(), time.perf_counter()
        waited_for = urgent_waiting(conn)
        transitions: list[Transition] = []
        j, read = i, set[str]()  # runs read ahead and not resumed yet: finish them in this batch

        def more() -> bool:
            spent = time.perf_counter() - started
            return spent < CHUNK_SECONDS and (spent < YIELD_AFTER_SECONDS or not waited_for())

        while j < len(units) and (j == i or units[j].run_id in read or more()):
            unit = units[j]
            if unit.run_id and unit.run_id not in read:
                ahead = [u.run_id for u in units[j : j + READ_AHEAD] if u.run_id]
                store.prefetch(ahead)
                read.update(ahead)
            transitions.extend(unit.apply(self.manager, store))
            read.discard(unit.run_id or "")
            j += 1
        self._enqueue(store, transitions, now)
        store.flush()
        return j, store.settled()

    def _remember(self, settled: dict[str, RunState]) -> None:
        """Runs just committed, so an action's result or a timer soon after needs no read and
        no decoding. Only this thread writes runs, and a store drops a run from here when it
        saves it, so an entry is always the committed state. Ended runs are forgotten."""
        for run_id, run in settled.items():
            if run.status.final:
                self._known.pop(run_id, None)
            else:
                self._known[run_id] = run
                self._known.move_to_end(run_id)
        while len(self._known) > KNOWN_RUNS:
            self._known.popitem(last=False)

    def _alone(self, unit: Unit) -> None:
        try:
            with self.engine.begin() as conn:
                _, settled = self._chunk(conn, [unit], 0)
            self._remember(settled)
        except Exception as exc:
            log.exception("input %s failed", unit.label)
            if unit.quarantine is not None:
                with self.engine.begin() as conn:
                    unit.quarantine(SqlStore(conn), f"{type(exc).__name__}: {exc}")

    def _enqueue(self, store: SqlStore, transitions: list[Transition], now: datetime) -> None:
        performs = False
        for transition in transitions:
            for command in transition.commands:
                if isinstance(command, Perform):
                    store.enqueue(command, now, self.config.action_attempts)
                    performs = True
            self.metrics.count("flowrun_run_transitions_total", status=transition.run.status.value)
        if performs:
            self.on_outbox()

    # -- inputs --------------------------------------------------------------------------

    def _completed(self) -> list[Unit]:
        units: list[Unit] = []
        while len(units) < BATCH:
            try:
                done = self.completions.get_nowait()
            except queue.Empty:
                break

            def apply(manager: Manager, store: SqlStore, c: Completion = done) -> list[Transition]:
                result, out = manager.on_delivered(c, c.result, SqlLedger(store.conn), c.at, self.clock())
                store.apply_result(c.key, c.at, result)
                return out

            units.append(Unit(f"result {done.key}", apply, run_id=done.run_id))
        return units

    def _results(self, store: SqlStore) -> list[Unit]:
        """Finished actions left in the outbox: failures handed to the run (on_error: continue)."""
        units = []
        for row in store.results_to_apply(BATCH):

            def apply(manager: Manager, store: SqlStore, r: dict[str, Any] = row) -> list[Transition]:
                store.mark_applied(r["key"])
                result = codec.loads(r["result"]) if r["result"] else {}
                error = r["last_error"] if r["status"] == "failed" else None
                return manager.on_result(r["run_id"], r["key"], result, error, self.clock())

            units.append(Unit(f"result {row['key']}", apply))
        return units

    def _inbox(self, store: SqlStore) -> list[Unit]:
        units = []
        for row in store.pending_inbox(BATCH):
            seq, label = row["seq"], f"inbox {row['source']}/{row['delivery_id']}"
            if not self._anything_reads(row["source"], row["topic"]):
                units.append(Unit(label, _set_aside(seq)))
                continue

            def quarantine(store: SqlStore, why: str, s: int = seq) -> None:
                store.mark_inbox(s, "failed", why)

            units.append(Unit(label, self._event_unit(row), quarantine))
        return units

    def _anything_reads(self, source: str, topic: str | None) -> bool:
        """Whether a flow, a wait, a goal, a kept derivation or the consent ledger could read
        an event of this topic; True when only the body can tell its type."""
        known = self._read.get((source, topic))
        if known is None:
            types = topic_types(source, topic)
            known = types is None or any(
                self.manager.listens_to(t) or self.tracking.reads(t) or t in CONSENT_TYPES for t in types
            )
            self._read[(source, topic)] = known
        return known

    def _event_unit(self, row: dict[str, Any]) -> Apply:
        """Parsed and normalised here, outside the write transaction: the webhook port's
        commits wait for the lock only while the unit is applied."""
        try:
            events = normalise(
                parse_json(row["body"]),
                source=row["source"],
                topic=row["topic"] if row["source"] != "custom" else None,
                delivery_id=row["delivery_id"] if row["source"] == "shopify" else None,
                received_at=codec._aware(row["received_at"]),
            )
        except (FlowrunError, ValueError, KeyError, TypeError) as exc:
            reason = str(exc)

            def reject(manager: Manager, store: SqlStore) -> list[Transition]:
                log.warning("inbox %s/%s cannot be normalised: %s", row["source"], row["delivery_id"], reason)
                store.mark_inbox(row["seq"], "rejected", reason)
                self.metrics.count("flowrun_events_unprocessable_total", source=row["source"])
                return []

            return reject
        except Exception as exc:  # a bug: raised when applied, so the input is quarantined
            failure = exc

            def fail(manager: Manager, store: SqlStore) -> list[Transition]:
                raise failure

            return fail

        def apply(manager: Manager, store: SqlStore) -> list[Transition]:
            now = self.clock()
            out: list[Transition] = []
            for event in events:
                out.extend(manager.on_event(event, now))
                for derived in self._derive(store, event, now):
                    out.extend(manager.on_event(derived, now))
            store.mark_inbox(row["seq"], "done")
            return out

        return apply

    def _timers(self, store: SqlStore) -> list[Unit]:
        units = []
        for run_id, due_at in store.due_timers(self.clock(), BATCH):

            def fire(manager: Manager, _store: SqlStore, r: str = run_id, d: datetime = due_at) -> list[Transition]:
                now = self.clock()
                self.metrics.observe_lateness((now - d).total_seconds())
                return manager.on_timer(r, d, now)

            units.append(Unit(f"timer {run_id}", fire, run_id=run_id))
        return units

    # -- schedules: next due tick per flow, stored as a cursor ---------------------------

    def _schedules(self, store: SqlStore) -> list[Unit]:
        now, units = self.clock(), []
        for flow in list(self.manager.flows.values()):
            trigger = flow.trigger
            if not isinstance(trigger, ScheduleTrigger):
                continue
            name = f"schedule:{flow.id}"
            due = store.get_cursor(name)
            if due is None:  # first start: the next tick from now
                units.append(Unit(f"schedule {flow.id}", _set_cursor(name, _next_tick(trigger, now))))
                continue
            if due > now:
                continue
            following = _next_tick(trigger, due)
            while following <= now:  # ticks that fell due while the service was down
                following = _next_tick(trigger, following)
            go = trigger.missed == "run_once" or _next_tick(trigger, due) > now

            def tick(
                manager: Manager,
                store: SqlStore,
                f: str = flow.id,
                at: datetime = due,
                nxt: datetime = following,
                go: bool = go,
            ) -> list[Transition]:
                store.set_cursor(f"schedule:{f}", nxt)
                return manager.on_tick(f, at, self.clock()) if go else []

            units.append(Unit(f"schedule {flow.id}", tick))
        return units

    # -- derived events ------------------------------------------------------------------

    def _derive(self, store: SqlStore, event: Event, now: datetime) -> list[Event]:
        """The same derivation as dry-run (flowrun.derive), with its state kept as cursors."""
        consent = subscription_change(event.type, event.data)
        if consent is not None and event.customer_key:
            store.set_suppressed(event.customer_key, not consent, f"{event.type} {event.id}", now)
        tracking = self.tracking
        if event.type in CHECKOUT_TYPES and event.customer_key and tracking.abandonment:
            name = f"abandon:{event.customer_key}:{checkout_key(event)}"
            due = None if checkout_completed(event) else now + self.config.checkout_idle
            store.set_cursor(name, codec.event_to_dict(event) if due else None, due=due)
        elif event.type in ORDER_TYPES and event.customer_key:
            if tracking.abandonment:
                store.clear_cursors(f"abandon:{event.customer_key}:")
            first = self.inactivity.first_check(event) if tracking.inactivity else None
            if first is not None:
                store.set_cursor(f"inactive:{event.customer_key}", first.state, due=first.at)
        elif tracking.reads(event.type):  # stock levels crossed, product images added
            return store_events(event, self.thresholds, store.get_cursor, store.set_cursor)
        return []

    def _due_checks(self, store: SqlStore) -> list[Unit]:
        """Abandonment and inactivity checks whose time has come (an indexed `due_at`)."""
        units = []
        for name, value, due in store.due_cursors(self.clock(), BATCH):

            def fire(
                manager: Manager, store: SqlStore, n: str = name, v: Any = value, d: datetime = due
            ) -> list[Transition]:
                now = self.clock()
                if n.startswith("abandon:"):
                    store.set_cursor(n, None)
                    derived = abandoned(codec.event_from_dict(v), n.rsplit(":", 1)[-1], d)
                    return manager.on_event(derived, now)
                inactive, following = self.inactivity.fire(v, d)
                store.set_cursor(n, following.state if following else None, due=following.at if following else None)
                return manager.on_event(inactive, now)

            units.append(Unit(f"check {name}", fire))
        return units


def _set_aside(seq: int) -> Apply:
    """An inbox event nothing reads: marked `ignored`, its body kept, never parsed."""

    def apply(_: Manager, store: SqlStore) -> list[Transition]:
        store.mark_inbox(seq, "ignored")
        return []

    return apply


def _set_cursor(name: str, value: Any) -> Apply:
    def apply(_: Manager, store: SqlStore) -> list[Transition]:
        store.set_cursor(name, value)
        return []

    return apply


def _next_tick(trigger: ScheduleTrigger, after: datetime) -> datetime:
    if trigger.cron is not None:
        return trigger.cron.next_after(after)
    assert trigger.every is not None
    return after + trigger.every


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
