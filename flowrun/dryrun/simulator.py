"""Dry-run: the runtime with in-memory adapters, a simulated clock that jumps to the next due
time, and a deliverer that records instead of sending. Each round at a time takes the inputs in
the order serve's engine does: action outcomes, events (and schedule ticks), timers, derivation
checks, sends due."""

from __future__ import annotations

import gc
import heapq
import itertools
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from flowrun.delivery.throttle import Throttle
from flowrun.dryrun.stubs import Stubs
from flowrun.engine.state import RunState
from flowrun.events import Event
from flowrun.flow.model import Flow, ScheduleTrigger
from flowrun.runtime import inputs as i
from flowrun.runtime.attempts import Delivered, after_attempt
from flowrun.runtime.memory import MemoryUnitOfWork
from flowrun.runtime.memory_messages import MemoryMessages
from flowrun.runtime.records import Send, SendStatus
from flowrun.runtime.runtime import Runtime
from flowrun.runtime.settings import Settings


@dataclass(frozen=True)
class RecordedAction:
    at: datetime
    run_id: str
    flow_id: str
    step: str
    type: str
    params: dict[str, Any]
    result: dict[str, Any]
    skipped: str = ""  # a guardrail's reason: recorded, not sent


@dataclass
class SimulationResult:
    start: datetime
    runs: list[RunState]
    actions: list[RecordedAction]
    horizon: datetime | None
    events_played: int = 0
    messages: MemoryMessages | None = None  # what attribution kept (flowrun.attribution.sources.from_memory)


@dataclass
class Simulator:
    flows: list[Flow]
    start: datetime
    settings: Settings = field(default_factory=Settings)
    stubs: Stubs = field(default_factory=Stubs)  # results given by a timeline or test instead of simulated
    throttle: Throttle = field(default_factory=Throttle)  # providers' rate limits, as serve's dispatcher keeps them
    uow: MemoryUnitOfWork = field(default_factory=MemoryUnitOfWork)

    def __post_init__(self) -> None:
        self._events: list[tuple[datetime, int, Event]] = []
        self._seq = itertools.count()
        self._played = 0

    def add_event(self, at: datetime, event: Event) -> None:
        heapq.heappush(self._events, (at, next(self._seq), event))

    def run(self, until: datetime | None = None) -> SimulationResult:
        # Run states are immutable and cycle-free; with tens of thousands alive the cyclic
        # collector spends its time re-scanning them, so pause it while playing.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run(until)
        finally:
            if enabled:
                gc.enable()

    def _run(self, until: datetime | None) -> SimulationResult:
        # Inactivity is derived only up to a horizon: without one, every order would stretch
        # the simulation to its last threshold.
        settings = self.settings if until is not None else replace(self.settings, inactivity=False)
        runtime = Runtime(self.flows, settings)
        ticks = _ticks(self.flows, self.start, until)
        while True:
            now = self._next(ticks)
            if now is None or (until is not None and now > until):
                break
            self._round(runtime, now, ticks)
        runs = [self.uow.runs.runs[r] for r in self.uow.runs.order]
        return SimulationResult(self.start, runs, self._recorded(), until, self._played, self.uow.messages)

    def _next(self, ticks: list[tuple[datetime, int, str]]) -> datetime | None:
        uow = self.uow
        times = [
            self._events[0][0] if self._events else None,
            ticks[0][0] if ticks else None,
            uow.runs.next_timer(),
            uow.checks.next_due(),
            uow.outbox.next_due(),
        ]
        found = [t for t in times if t is not None]
        return min(found) if found else None

    def _round(self, runtime: Runtime, now: datetime, ticks: list[tuple[datetime, int, str]]) -> None:
        uow = self.uow
        while True:
            units: list[i.Input] = [i.OutcomeDue(key) for key in uow.outbox.take_outcomes()]
            while self._events and self._events[0][0] <= now:
                units.append(i.EventIn(heapq.heappop(self._events)[2]))
                self._played += 1
            while ticks and ticks[0][0] <= now:
                at, _, flow_id = heapq.heappop(ticks)
                units.append(i.TickDue(flow_id, at))
            units += [i.TimerDue(run_id, due) for run_id, due in uow.runs.due_timers(now)]
            units += [i.CheckDue(check) for check in uow.checks.due_now(now)]
            ready: list[Send] = []
            for send in uow.outbox.due_now(now):
                if send.status is SendStatus.PENDING:
                    units.append(i.SendDue(send.key))
                else:
                    ready.append(send)
            if not units and not ready:
                return
            for unit in units:
                runtime.apply(uow, unit, now)
            for send in ready:
                self._deliver(send, now)

    def _deliver(self, send: Send, now: datetime) -> None:
        """What serve's dispatcher does, recorded: the answer is simulated (or stubbed)."""
        waiting = self.throttle.admit(send, now)
        if waiting is not None:
            settled = after_attempt(send, waiting, now)
            self.uow.outbox.put(settled.send)
            return
        flow_id = self.uow.runs.runs[send.run_id].flow_id
        answer = self.stubs.result_for(flow_id, send.step, send.action, send.params, send.key)
        settled = after_attempt(send, Delivered(answer), now)
        self.uow.outbox.put(settled.send)
        self.uow.outbox.note(settled.attempt)

    def _recorded(self) -> list[RecordedAction]:
        recorded = []
        for attempt in self.uow.outbox.attempts:
            if attempt.outcome not in ("ok", "skipped"):
                continue
            send = self.uow.outbox.rows[attempt.key]
            run = self.uow.runs.runs[send.run_id]
            skipped = attempt.detail if attempt.outcome == "skipped" else ""
            result = {"skipped": skipped} if skipped else dict(send.result or {})
            recorded.append(
                RecordedAction(
                    attempt.at, send.run_id, run.flow_id, send.step, send.action, dict(send.params), result, skipped
                )
            )
        return recorded


def _ticks(flows: list[Flow], start: datetime, until: datetime | None) -> list[tuple[datetime, int, str]]:
    """Schedule ticks up to the horizon (none without one: a schedule never ends)."""
    found: list[tuple[datetime, int, str]] = []
    if until is None:
        return found
    seq = itertools.count()
    for flow in flows:
        trigger = flow.trigger
        if not isinstance(trigger, ScheduleTrigger):
            continue
        at = start
        while True:
            at = trigger.cron.next_after(at) if trigger.cron is not None else at + trigger.every  # type: ignore[operator]
            if at > until:
                break
            found.append((at, next(seq), flow.id))
    heapq.heapify(found)
    return found
