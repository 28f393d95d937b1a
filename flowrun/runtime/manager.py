"""Routes inputs to runs: goals and waits of existing runs, then new runs, with re-entry
and concurrency rules. Shared by `dry-run` (memory store, simulated clock) and `serve`."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from flowrun.actions import REGISTRY
from flowrun.engine import engine
from flowrun.engine.program import Await
from flowrun.engine.state import (
    ActionFailed,
    ActionSucceeded,
    EventArrived,
    Finished,
    RunState,
    Status,
    TimerFired,
    TraceEntry,
    Transition,
)
from flowrun.errors import RenderError
from flowrun.events import Event
from flowrun.flow.model import EventTrigger, Flow, ScheduleTrigger
from flowrun.loyalty import Ledger
from flowrun.runtime.store import RunStore


class Delivered(Protocol):
    """What names a delivered action: serve's Completion and dry-run's Perform both do."""

    @property
    def run_id(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def params(self) -> Mapping[str, Any]: ...


def run_id_for(flow_id: str, event_id: str) -> str:
    """Deterministic: the same event never starts the same flow twice."""
    return "r_" + hashlib.sha256(f"{flow_id}\0{event_id}".encode()).hexdigest()[:20]


def schedule_tick(flow: Flow, fired_at: datetime) -> Event:
    label = flow.trigger.label if isinstance(flow.trigger, ScheduleTrigger) else ""
    stamp = fired_at.isoformat()
    return Event(
        type="schedule.tick",
        source="flowrun",
        id=f"schedule:{flow.id}:{stamp}",
        occurred_at=fired_at,
        data={"schedule": {"fired_at": fired_at, "trigger": label}},
    )


class Manager:
    def __init__(self, flows: Iterable[Flow], store: RunStore) -> None:
        self.store = store
        self.flows: dict[str, Flow] = {}
        self.versions: dict[tuple[str, str], Flow] = {}
        self._by_type: dict[str, list[Flow]] = defaultdict(list)
        self._goals: dict[str, set[str]] = defaultdict(set)
        self._awaited: set[str] = set()  # event types some flow's wait_for listens to
        self.load(flows)

    def load(self, flows: Iterable[Flow]) -> None:
        """(Re)load flows; old versions stay known so runs in flight finish on them."""
        self.flows = {f.id: f for f in flows}
        self._by_type.clear()
        for flow in self.flows.values():
            self.versions[(flow.id, flow.version)] = flow
            self._awaited.update(e for ins in flow.program if isinstance(ins, Await) for e in ins.step.events)
            for event_type in flow.goal.events if flow.goal else ():
                self._goals[event_type].add(flow.id)  # kept across reloads: old versions' runs
            for event_type in flow.event_types:
                self._by_type[event_type].append(flow)

    def listens_to(self, event_type: str) -> bool:
        """Whether an event of this type could start a run or reach one (a goal or a wait,
        of any flow version loaded since start)."""
        if event_type in self._awaited or self._goals.get(event_type) or self._by_type.get(event_type):
            return True
        return event_type.startswith("custom.") and bool(self._by_type.get("custom.*"))

    def flow_of(self, run: RunState) -> Flow | None:
        return self.versions.get((run.flow_id, run.flow_version)) or self.flows.get(run.flow_id)

    # -- inputs ---------------------------------------------------------------------------

    def on_event(self, event: Event, now: datetime) -> list[Transition]:
        out: list[Transition] = []
        awaited = event.type in self._awaited
        candidates = {r.id: r for r in self.store.awaiting(event.type)} if awaited else {}
        goal_flows = self._goals.get(event.type)
        if event.customer_key and goal_flows:  # only runs whose goal this event could reach
            candidates.update((r.id, r) for r in self.store.active_for_customer(event.customer_key, goal_flows))
        for run in sorted(candidates.values(), key=lambda r: (r.started_at, r.id)):
            flow = self.flow_of(run)
            if flow is not None and run.trigger.id != event.id:
                out.extend(self._apply(flow, engine.advance(flow, run, EventArrived(event), now), now))
        for flow in self._triggered(event):
            out.extend(self._start(flow, event, now))
        return out

    def on_tick(self, flow_id: str, fired_at: datetime, now: datetime) -> list[Transition]:
        """A schedule or interval trigger fired for one flow."""
        flow = self.flows.get(flow_id)
        if flow is None:
            return []
        return self._start(flow, schedule_tick(flow, fired_at), now)

    def on_timer(self, run_id: str, due: datetime, now: datetime) -> list[Transition]:
        return self._input(run_id, TimerFired(due), now)

    def on_result(
        self, run_id: str, key: str, result: dict[str, object] | None, error: str | None, now: datetime
    ) -> list[Transition]:
        given = ActionSucceeded(key, result or {}) if error is None else ActionFailed(key, error)
        return self._input(run_id, given, now)

    def on_delivered(
        self, perform: Delivered, result: dict[str, Any], ledger: Ledger, at: datetime, now: datetime
    ) -> tuple[dict[str, Any], list[Transition]]:
        """A delivered action: its local effects settled (the loyalty ledger) at `at`, then its
        result handed to the run, then any events settling emitted. Returns the settled result."""
        run = self.store.get(perform.run_id)
        events: list[Event] = []
        if run is not None:
            result, events = REGISTRY[perform.action].settle(perform.params, perform.key, result, run, ledger, at)
        out = self.on_result(perform.run_id, perform.key, result, None, now)
        for event in events:
            out.extend(self.on_event(event, now))
        return result, out

    def _input(
        self, run_id: str, given: TimerFired | ActionSucceeded | ActionFailed, now: datetime
    ) -> list[Transition]:
        run = self.store.get(run_id)
        flow = self.flow_of(run) if run else None
        if run is None or flow is None:
            return []
        return self._apply(flow, engine.advance(flow, run, given, now), now)

    # -- starting runs --------------------------------------------------------------------

    def _triggered(self, event: Event) -> list[Flow]:
        candidates = self._by_type.get(event.type, [])
        if event.type.startswith("custom."):
            candidates = [*candidates, *self._by_type.get("custom.*", [])]
        return [f for f in candidates if isinstance(f.trigger, EventTrigger) and f.trigger.matches(event)]

    def _start(self, flow: Flow, event: Event, now: datetime) -> list[Transition]:
        run_id = run_id_for(flow.id, event.id)
        if self.store.get(run_id) is not None:
            return []  # a replayed event: this run exists already
        key = self._concurrency_key(flow, event, now)
        run = engine.new_run(flow, event, run_id, now, key)
        reason = self._reentry_refusal(flow, event, now)
        if reason:
            return self._apply(flow, engine.skip(run, now, reason), now)
        out: list[Transition] = []
        if key is not None and flow.concurrency.mode != "parallel":
            active = self.store.active_for_key(flow.id, key)
            if active and flow.concurrency.mode == "single":
                return self._apply(
                    flow, engine.skip(run, now, f"concurrency single: run {active[0].id} is active"), now
                )
            if active and flow.concurrency.mode == "queue":
                queued = run.evolve(status=Status.QUEUED)
                self.store.save(queued)
                return [Transition(queued, ())]
            if active and flow.concurrency.mode == "restart":
                for old in active:
                    out.extend(self._apply(flow, self._cancel(old, now, f"restarted by {run_id}"), now))
        out.extend(self._apply(flow, engine.start(flow, run, now), now))
        return out

    def _concurrency_key(self, flow: Flow, event: Event, now: datetime) -> str | None:
        if flow.concurrency.key is None:
            return event.customer_key
        try:
            return flow.concurrency.key.render({**event.context(), "now": now}) or None
        except RenderError:
            return event.customer_key

    def _reentry_refusal(self, flow: Flow, event: Event, now: datetime) -> str:
        rule = flow.reentry
        if rule.mode == "always" or not event.customer_key:
            return ""
        last = self.store.last_started(flow.id, event.customer_key)
        if last is None:
            return ""
        if rule.mode == "once":
            return f"re-entry once: this customer entered already (run {last.id})"
        assert rule.window is not None
        if now - last.started_at < rule.window:
            return f"re-entry window: entered {now - last.started_at} ago (run {last.id}), window {rule.window}"
        return ""

    def _cancel(self, run: RunState, now: datetime, reason: str) -> Transition:
        entry = TraceEntry(now, "(concurrency)", "cancel", reason)
        done = run.evolve(
            status=Status.CANCELLED, reason=reason, wake_at=None, updated_at=now, trace=(*run.trace, entry)
        )
        return Transition(done, (Finished(run.id, Status.CANCELLED),))

    # -- saving ---------------------------------------------------------------------------

    def _apply(self, flow: Flow, transition: Transition, now: datetime) -> list[Transition]:
        if not transition.changed:
            return []
        self.store.save(transition.run)
        out = [transition]
        run = transition.run
        if run.status.final and run.concurrency_key and flow.concurrency.mode == "queue":
            waiting = [r for r in self.store.active_for_key(flow.id, run.concurrency_key) if r.status is Status.QUEUED]
            if waiting:
                out.extend(self._apply(flow, engine.start(flow, waiting[0], now), now))
        return out
