"""The simulated clock: a queue of due items, the clock jumping from one to the next."""

from __future__ import annotations

import gc
import heapq
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flowrun.actions import REGISTRY
from flowrun.derive import AbandonmentWatcher, InactivityWatcher, StoreWatcher, thresholds_for
from flowrun.engine.state import Perform, RunState, Transition, Wake
from flowrun.events import Event, customer_key
from flowrun.flow.model import Flow, ScheduleTrigger
from flowrun.guardrails import SEND, Decision, Guardrails, decide, subscription_change
from flowrun.loyalty import MemoryLedger
from flowrun.runtime.manager import Manager
from flowrun.runtime.store import MemoryStore


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


@dataclass
class Simulator:
    flows: list[Flow]
    start: datetime
    abandonment_idle: timedelta = timedelta(hours=1)
    low_stock_threshold: int = 5
    # customer.inactive is derived only up to a horizon (`run(until=...)`): without one, every
    # order would stretch the simulation to its last threshold.
    inactive_after: tuple[timedelta, ...] = ()
    guardrails: Guardrails = field(default_factory=Guardrails)
    store: MemoryStore = field(default_factory=MemoryStore)
    ledger: MemoryLedger = field(default_factory=MemoryLedger)

    def __post_init__(self) -> None:
        self.manager = Manager(self.flows, self.store)
        self._queue: list[tuple[datetime, int, str, Any]] = []
        self._seq = itertools.count()
        self._run_order: list[str] = []
        self._seen: set[str] = set()
        self._actions: list[RecordedAction] = []
        self._abandon = AbandonmentWatcher(self.abandonment_idle)
        thresholds = thresholds_for(
            self.flows, inactive_after=self.inactive_after, low_stock_threshold=self.low_stock_threshold
        )
        self._stock = StoreWatcher(thresholds)
        self._inactive = InactivityWatcher(thresholds)
        self._last_order: dict[str, str] = {}
        self._sent: dict[tuple[str, str], list[datetime]] = {}
        self._unsubscribed: set[str] = set()
        self._until: datetime | None = None
        self._played = 0

    def _push(self, at: datetime, kind: str, payload: Any) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), kind, payload))

    def add_event(self, at: datetime, event: Event) -> None:
        self._push(at, "event", event)

    def run(self, until: datetime | None = None) -> SimulationResult:
        # Run states are immutable and cycle-free; with tens of thousands alive the
        # cyclic collector spends its time re-scanning them, so pause it while playing.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run(until)
        finally:
            if enabled:
                gc.enable()

    def _run(self, until: datetime | None) -> SimulationResult:
        self._until = until
        if until is not None:
            self._schedule_ticks(until)
        while self._queue:
            at, _, kind, payload = self._queue[0]
            if until is not None and at > until:
                break
            heapq.heappop(self._queue)
            self._dispatch(at, kind, payload)
        runs = [self.store.runs[i] for i in self._run_order]
        return SimulationResult(self.start, runs, self._actions, until, self._played)

    def _dispatch(self, now: datetime, kind: str, payload: Any) -> None:
        if kind == "event":
            self._played += 1
            consent = subscription_change(payload.type, payload.data)
            if consent is not None and payload.customer_key:
                (self._unsubscribed.discard if consent else self._unsubscribed.add)(payload.customer_key)
            for check in self._abandon.observe(payload, now):
                self._push(check.at, "abandon", check)
            self._follow(self.manager.on_event(payload, now), now)
            for stock_event in self._stock.observe(payload, now):
                self._follow(self.manager.on_event(stock_event, now), now)
            quiet = self._inactive.first_check(payload) if self._until is not None else None
            if quiet is not None and payload.customer_key:
                self._last_order[payload.customer_key] = payload.id
                self._push(quiet.at, "inactive", quiet.state)
        elif kind == "abandon":
            derived = self._abandon.check(payload.key, payload.marker, now)
            if derived is not None:
                self._dispatch(now, "event", derived)
        elif kind == "inactive":
            if self._last_order.get(customer_key(payload) or "") == payload["order"]:  # no order since
                inactive, following = self._inactive.fire(payload, now)
                if following is not None:
                    self._push(following.at, "inactive", following.state)
                self._dispatch(now, "event", inactive)
        elif kind == "timer":
            run_id, due = payload
            self._follow(self.manager.on_timer(run_id, due, now), now)
        elif kind == "tick":
            self._follow(self.manager.on_tick(payload, now, now), now)
        elif kind == "perform":  # a send deferred by quiet hours
            command, run = payload
            self._follow(self._perform(command, run, now), now)

    def _follow(self, transitions: list[Transition], now: datetime) -> None:
        pending = list(transitions)
        while pending:
            transition = pending.pop(0)
            if transition.run.id not in self._seen:
                self._seen.add(transition.run.id)
                self._run_order.append(transition.run.id)
            for command in transition.commands:
                if isinstance(command, Wake):
                    self._push(command.at, "timer", (command.run_id, command.at))
                elif isinstance(command, Perform):
                    pending.extend(self._perform(command, transition.run, now))

    def _perform(self, command: Perform, run: RunState, now: datetime) -> list[Transition]:
        """What serve's dispatcher does, simulated: guardrails first, then the provider's answer."""
        decision = self._guard(command, run, now)
        if decision.kind == "defer" and decision.at is not None:
            self._push(decision.at, "perform", (command, run))
            return []
        skipped = decision.reason if decision.kind == "skip" else ""
        if skipped:
            result: dict[str, Any] = {"skipped": skipped}
            transitions = self.manager.on_result(command.run_id, command.key, result, None, now)
        else:
            simulated = REGISTRY[command.action].simulate(command.params, command.key)
            result, transitions = self.manager.on_delivered(command, simulated, self.ledger, now, now)
        self._actions.append(
            RecordedAction(
                now, command.run_id, run.flow_id, command.step, command.action, dict(command.params), result, skipped
            )
        )
        return transitions

    def _guard(self, command: Perform, run: RunState, now: datetime) -> Decision:
        channel = REGISTRY[command.action].channel
        category = str(command.params.get("category", "marketing"))
        if channel is None:
            return SEND
        who = run.customer_key
        sent = self._sent.setdefault((who, channel), []) if who else []
        customer = run.trigger.data.get("customer") or {}
        flow = self.manager.flow_of(run)
        rules = self.guardrails.overridden(flow.guardrails if flow else None)
        decision = decide(rules, now, channel, category, customer, who, sent, bool(who and who in self._unsubscribed))
        if decision.kind == "send":
            sent.append(now)
        return decision

    def _schedule_ticks(self, until: datetime) -> None:
        for flow in self.flows:
            trigger = flow.trigger
            if not isinstance(trigger, ScheduleTrigger):
                continue
            at = self.start
            while True:
                if trigger.cron is not None:
                    at = trigger.cron.next_after(at)
                else:
                    assert trigger.every is not None
                    at = at + trigger.every
                if at > until:
                    break
                self._push(at, "tick", flow.id)
