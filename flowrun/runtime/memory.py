"""The in-memory adapters: the runtime's ports over dicts, for dry-run and `flowrun test`.
They own every partition, and keep due times in heaps so the simulated clock can jump to the
next one."""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from flowrun.engine.state import RunState, Status
from flowrun.events import Event
from flowrun.loyalty import MemoryLedger
from flowrun.runtime.memory_messages import MemoryMessages
from flowrun.runtime.memory_profiles import MemoryOrders, MemoryProfiles
from flowrun.runtime.records import UNSENT, Attempt, Check, Send, SendStatus


class _Due:
    """A heap of (time, key) whose entries are checked against the current state when popped."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, str]] = []
        self._seq = itertools.count()

    def push(self, at: datetime, key: str) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), key))

    def peek(self, still: object) -> datetime | None:
        while self._heap and not still(self._heap[0]):  # type: ignore[operator]
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime, still: object) -> list[str]:
        keys = []
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            if still(entry):  # type: ignore[operator]
                keys.append(entry[2])
        return keys


class MemoryRuns:
    def __init__(self) -> None:
        self.runs: dict[str, RunState] = {}
        self.order: list[str] = []  # first saved first
        self._by_customer: dict[str, set[str]] = defaultdict(set)
        self._by_key: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._last: dict[tuple[str, str], str] = {}
        self._awaiting: dict[str, set[str]] = defaultdict(set)
        self.timers = _Due()

    def get(self, run_id: str) -> RunState | None:
        return self.runs.get(run_id)

    def save(self, run: RunState) -> None:
        previous = self.runs.get(run.id)
        if previous is None:
            self.order.append(run.id)
        else:
            for event_type in previous.awaiting:
                self._awaiting[event_type].discard(run.id)
        self.runs[run.id] = run
        if run.status is Status.AWAITING:
            for event_type in run.awaiting:
                self._awaiting[event_type].add(run.id)
        if run.wake_at is not None and not run.status.final:
            self.timers.push(run.wake_at, run.id)
        active = not run.status.final
        if run.customer_key:
            (self._by_customer[run.customer_key].add if active else self._by_customer[run.customer_key].discard)(run.id)
        if run.concurrency_key:
            index = self._by_key[(run.flow_id, run.concurrency_key)]
            (index.add if active else index.discard)(run.id)
        if previous is None and run.customer_key and run.status is not Status.SKIPPED:
            self._last[(run.flow_id, run.customer_key)] = run.id

    def active_for_customer(self, customer_key: str, flow_ids: Collection[str]) -> list[RunState]:
        found = (self.runs[i] for i in self._by_customer.get(customer_key, ()))
        return sorted((r for r in found if r.flow_id in flow_ids), key=_order)

    def active_for_key(self, flow_id: str, concurrency_key: str) -> list[RunState]:
        return sorted((self.runs[i] for i in self._by_key.get((flow_id, concurrency_key), ())), key=_order)

    def last_started(self, flow_id: str, customer_key: str) -> RunState | None:
        run_id = self._last.get((flow_id, customer_key))
        return self.runs[run_id] if run_id else None

    def awaiting(self, event_type: str) -> list[RunState]:
        return sorted((self.runs[i] for i in self._awaiting.get(event_type, ())), key=_order)

    def _timer_live(self, entry: tuple[datetime, int, str]) -> bool:
        run = self.runs.get(entry[2])
        return run is not None and run.wake_at == entry[0] and not run.status.final

    def next_timer(self) -> datetime | None:
        return self.timers.peek(self._timer_live)

    def due_timers(self, now: datetime) -> list[tuple[str, datetime]]:
        return [(k, self.runs[k].wake_at) for k in self.timers.pop_due(now, self._timer_live)]  # type: ignore[misc]


class MemoryOutbox:
    def __init__(self) -> None:
        self.rows: dict[str, Send] = {}
        self.attempts: list[Attempt] = []
        self._by_run: dict[str, list[str]] = defaultdict(list)
        self.due = _Due()
        self.outcomes: list[str] = []  # delivered or failed, not applied yet, in order

    def add(self, send: Send) -> bool:
        if send.key in self.rows:
            return False
        self.rows[send.key] = send
        self._by_run[send.run_id].append(send.key)
        return True

    def get(self, key: str) -> Send | None:
        return self.rows.get(key)

    def put(self, send: Send) -> None:
        self.rows[send.key] = send
        if send.status in (SendStatus.PENDING, SendStatus.READY):
            self.due.push(send.next_attempt_at, send.key)
        if send.status in (SendStatus.DELIVERED, SendStatus.FAILED) and not send.applied:
            self.outcomes.append(send.key)

    def cancel_unsent(self, run_id: str, reason: str, now: datetime) -> list[str]:
        keys = [k for k in self._by_run.get(run_id, ()) if self.rows[k].status in UNSENT]
        for key in keys:
            self.rows[key] = self.rows[key].evolve(status=SendStatus.CANCELLED, last_error=reason, updated_at=now)
        return keys

    def note(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)

    def _live(self, entry: tuple[datetime, int, str]) -> bool:
        row = self.rows[entry[2]]
        return row.status in (SendStatus.PENDING, SendStatus.READY) and row.next_attempt_at == entry[0]

    def next_due(self) -> datetime | None:
        return self.due.peek(self._live)

    def due_now(self, now: datetime) -> list[Send]:
        return [self.rows[k] for k in self.due.pop_due(now, self._live)]

    def take_outcomes(self) -> list[str]:
        taken, self.outcomes = self.outcomes, []
        return taken


class MemorySendLog:
    def __init__(self) -> None:
        self._sent: dict[tuple[str, str], dict[str, datetime]] = defaultdict(dict)
        self._where: dict[str, tuple[str, str]] = {}

    def recent(self, customer_key: str, channel: str, since: datetime) -> list[datetime]:
        return [at for at in self._sent[(customer_key, channel)].values() if at > since]

    def reserve(self, key: str, customer_key: str, channel: str, at: datetime) -> None:
        self._sent[(customer_key, channel)][key] = at
        self._where[key] = (customer_key, channel)

    def release(self, key: str) -> None:
        where = self._where.pop(key, None)
        if where is not None:
            self._sent[where].pop(key, None)


class MemoryConsent:
    def __init__(self) -> None:
        self.unsubscribed: dict[str, str] = {}

    def suppressed(self, customer_key: str) -> bool:
        return customer_key in self.unsubscribed

    def record(self, customer_key: str, suppressed: bool, reason: str, at: datetime) -> None:
        if suppressed:
            self.unsubscribed[customer_key] = reason
        else:
            self.unsubscribed.pop(customer_key, None)


class MemoryChecks:
    def __init__(self) -> None:
        self.checks: dict[str, Check] = {}
        self.due = _Due()

    def get(self, name: str) -> Check | None:
        return self.checks.get(name)

    def put(self, check: Check) -> None:
        self.checks[check.name] = check
        if check.due_at is not None:
            self.due.push(check.due_at, check.name)

    def delete(self, name: str) -> None:
        self.checks.pop(name, None)

    def _live(self, entry: tuple[datetime, int, str]) -> bool:
        check = self.checks.get(entry[2])
        return check is not None and check.due_at == entry[0]

    def next_due(self) -> datetime | None:
        return self.due.peek(self._live)

    def due_now(self, now: datetime) -> list[Check]:
        return [self.checks[name] for name in self.due.pop_due(now, self._live)]


@dataclass
class MemoryUnitOfWork:
    """One set of in-memory repositories; every unit of work of a dry-run is this one."""

    runs: MemoryRuns = field(default_factory=MemoryRuns)
    outbox: MemoryOutbox = field(default_factory=MemoryOutbox)
    sends: MemorySendLog = field(default_factory=MemorySendLog)
    consent: MemoryConsent = field(default_factory=MemoryConsent)
    checks: MemoryChecks = field(default_factory=MemoryChecks)
    ledger: MemoryLedger = field(default_factory=MemoryLedger)
    profiles: MemoryProfiles = field(default_factory=MemoryProfiles)
    orders: MemoryOrders = field(default_factory=MemoryOrders)
    messages: MemoryMessages = field(default_factory=MemoryMessages)

    def owns(self, part: int) -> bool:
        return True

    def fan_out(self, event: Event, part: int, *, reach_only: bool) -> None:
        raise AssertionError("an in-memory unit of work owns every partition")


def _order(run: RunState) -> tuple[object, str]:
    return (run.started_at, run.id)
