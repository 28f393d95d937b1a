"""The runtime: an input in, run transitions, derived events, guardrail decisions, ledger
effects and outbox rows out, all through one unit of work. Dry-run and serve both drive it;
there is no second copy of any of this.

Per input, in this order: what the event changes in derivation state (consent, abandonment,
inactivity, stock), the goals and waits of existing runs, new runs (re-entry, concurrency),
then the events derived at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from flowrun.actions import REGISTRY
from flowrun.attribution import tie
from flowrun.engine import engine
from flowrun.engine.state import (
    ActionFailed,
    ActionSkipped,
    ActionSucceeded,
    EventArrived,
    Finished,
    Input,
    Perform,
    RunState,
    Status,
    TimerFired,
    TraceEntry,
    Transition,
)
from flowrun.errors import RenderError
from flowrun.events import Event
from flowrun.flow.model import Flow, ScheduleTrigger
from flowrun.guardrails import CONSENT_TYPES
from flowrun.runtime import inputs as i
from flowrun.runtime.derivations import Derivations
from flowrun.runtime.flows import FlowSet
from flowrun.runtime.profiles import Memory
from flowrun.runtime.protocols import UnitOfWork
from flowrun.runtime.records import PARTITIONS, Applied, Send, SendStatus, event_key, partition_of
from flowrun.runtime.sending import apply_decision, cancel_sends, decision_for, new_send, rules_for
from flowrun.runtime.settings import Settings
from flowrun.segments.model import Segment


def run_id_for(flow_id: str, event_id: str) -> str:
    """Deterministic: the same event never starts the same flow twice."""
    return "r_" + hashlib.sha256(f"{flow_id}\0{event_id}".encode()).hexdigest()[:20]


def schedule_tick(flow: Flow, fired_at: datetime) -> Event:
    label = flow.trigger.label if isinstance(flow.trigger, ScheduleTrigger) else ""
    return Event(
        type="schedule.tick",
        source="flowrun",
        id=f"schedule:{flow.id}:{fired_at.isoformat()}",
        occurred_at=fired_at,
        data={"schedule": {"fired_at": fired_at, "trigger": label}},
    )


class _Pass:
    """One input being applied: the unit of work, `now`, and what it changed so far."""

    def __init__(self, uow: UnitOfWork, now: datetime) -> None:
        self.uow, self.now, self.applied = uow, now, Applied()


class Runtime:
    def __init__(self, flows: Iterable[Flow], settings: Settings) -> None:
        self.settings = settings
        self.flows = FlowSet(flows)
        self.derivations = Derivations(settings, self.flows)
        self.memory = Memory(settings, self.flows)

    def load(self, flows: Iterable[Flow], segments: tuple[Segment, ...] | None = None) -> None:
        """New flows (and segments, if given): runs in flight keep their version; a customer's
        membership follows changed segments at their next event or due check."""
        if segments is not None:
            self.settings = replace(self.settings, segments=segments)
        self.flows.load(flows)
        self.derivations.reload(self.flows)
        self.memory.reload(self.flows, self.settings.segments)

    def reads(self, event_type: str) -> bool:
        """Whether anything would read an event of this type: a flow, a kept derivation, consent."""
        tracking = self.derivations.tracking
        listens = self.flows.listens_to(event_type) or tracking.reads(event_type) or event_type in CONSENT_TYPES
        return listens or tie.reads(event_type, self.flows.current.values()) or self.memory.reads(event_type)

    def apply(self, uow: UnitOfWork, unit: i.Input, now: datetime) -> Applied:
        with self.memory.facts(uow, now):  # `profile`, `orders`, `segment(…)` for conditions and templates
            return self._apply_input(uow, unit, now)

    def _apply_input(self, uow: UnitOfWork, unit: i.Input, now: datetime) -> Applied:
        step = _Pass(uow, now)
        if isinstance(unit, i.EventIn):
            self._event(step, unit.event, unit.reach_only)
        elif isinstance(unit, i.TimerDue):
            self._input(step, unit.run_id, TimerFired(unit.due))
        elif isinstance(unit, i.TickDue):
            flow = self.flows.current.get(unit.flow_id)
            if flow is not None:
                self._start(step, flow, schedule_tick(flow, unit.at))
        elif isinstance(unit, i.CheckDue):
            for derived in (*self.derivations.fire(uow, unit.check, now), *self.memory.fire(uow, unit.check, now)):
                self._event(step, derived)
        elif isinstance(unit, i.SendDue):
            self._redecide(step, unit.key)
        else:
            self._outcome(step, unit.key)
        return step.applied

    def started_by(self, unit: i.Input) -> list[str]:
        """The ids of the runs an event would start (a unit of work reads them ahead, in one
        query, instead of one query per new run)."""
        if not isinstance(unit, i.EventIn) or unit.reach_only:
            return []
        return [run_id_for(flow.id, unit.event.id) for flow in self.flows.triggered(unit.event)]

    def fail_run(self, uow: UnitOfWork, run_id: str, error: str, now: datetime) -> Applied:
        """Quarantine: an input that broke the runtime ends its run `failed` with the error,
        instead of being tried again every round."""
        step = _Pass(uow, now)
        run = uow.runs.get(run_id)
        if run is not None and not run.status.final:
            flow = self.flows.flow_of(run)
            entry = TraceEntry(now, "(runtime)", "error", "failed", {"error": error})
            failed = run.evolve(
                status=Status.FAILED, reason=error, wake_at=None, updated_at=now, trace=(*run.trace, entry)
            )
            if flow is not None:
                self._apply(step, flow, Transition(failed, (Finished(run.id, Status.FAILED),)))
            else:
                uow.runs.save(failed)
                cancel_sends(uow, failed, now)
        return step.applied

    # -- events ---------------------------------------------------------------------------

    def _event(self, step: _Pass, event: Event, reach_only: bool = False) -> None:
        uow, now = step.uow, step.now
        if event.type.startswith(tie.PREFIX) and not reach_only:  # tied to its send, or kept as unknown
            tied = tie.engagement(uow, event, now)
            if tied is None:
                return
            event = tied
            step.applied.engaged.append(bool((event.data.get("message") or {}).get("run")))
        derived = [] if reach_only else self.derivations.observe(uow, event, now) + self.memory.observe(uow, event, now)
        if not reach_only:
            tie.order(uow, event, self.settings.attribution)
        candidates: dict[str, RunState] = {}
        waiting = self.flows.awaiting_flows(event.type)
        reaching = waiting | (self.flows.goal_flows(event.type) if not reach_only else set())
        if event.customer_key and reaching:  # the customer's own goals and waits
            candidates.update((r.id, r) for r in uow.runs.active_for_customer(event.customer_key, reaching))
        elif waiting and self.flows.awaited_by_anyone(event.type):  # no customer: waits with `where:`
            candidates.update((r.id, r) for r in uow.runs.awaiting(event.type))
            if not reach_only:
                self._hand_over(step, event)
        for run in sorted(candidates.values(), key=lambda r: (r.started_at, r.id)):
            flow = self.flows.flow_of(run)
            if flow is not None and run.trigger.id != event.id:
                self._apply(step, flow, engine.advance(flow, run, EventArrived(event), now))
        if reach_only:
            return
        for flow in self.flows.triggered(event):
            self._start(step, flow, event)
        for more in derived:
            self._emit(step, more)

    def _emit(self, step: _Pass, event: Event) -> None:
        """An event this input produced: applied here, or handed to its partition's owner."""
        part = partition_of(event_key(event))
        if step.uow.owns(part):
            self._event(step, event)
        else:
            step.uow.fan_out(event, part, reach_only=False)

    def _hand_over(self, step: _Pass, event: Event) -> None:
        """Waits with `where:` match any customer's event: partitions owned elsewhere get it too."""
        for part in range(PARTITIONS):
            if not step.uow.owns(part):
                step.uow.fan_out(event, part, reach_only=True)

    # -- runs -----------------------------------------------------------------------------

    def _input(self, step: _Pass, run_id: str, given: Input) -> None:
        run = step.uow.runs.get(run_id)
        flow = self.flows.flow_of(run) if run else None
        if run is not None and flow is not None:
            self._apply(step, flow, engine.advance(flow, run, given, step.now))

    def _start(self, step: _Pass, flow: Flow, event: Event) -> None:
        uow, now = step.uow, step.now
        run_id = run_id_for(flow.id, event.id)
        if uow.runs.get(run_id) is not None:
            return  # a replayed event: this run exists already
        key = self._concurrency_key(flow, event, now)
        run = engine.new_run(flow, event, run_id, now, key)
        reason = self._reentry_refusal(uow, flow, event, now)
        if reason:
            self._apply(step, flow, engine.skip(run, now, reason))
            return
        if key is not None and flow.concurrency.mode != "parallel":
            active = uow.runs.active_for_key(flow.id, key)
            if active and flow.concurrency.mode == "single":
                self._apply(step, flow, engine.skip(run, now, f"concurrency single: run {active[0].id} is active"))
                return
            if active and flow.concurrency.mode == "queue":
                self._apply(step, flow, Transition(run.evolve(status=Status.QUEUED)))
                return
            if active and flow.concurrency.mode == "restart":
                for old in active:
                    self._apply(step, flow, _cancelled(old, now, f"restarted by {run_id}"))
        self._apply(step, flow, engine.start(flow, run, now))

    def _concurrency_key(self, flow: Flow, event: Event, now: datetime) -> str | None:
        if flow.concurrency.key is None:
            return event.customer_key
        try:
            return flow.concurrency.key.render({**event.context(), "now": now}) or None
        except RenderError:
            return event.customer_key

    def _reentry_refusal(self, uow: UnitOfWork, flow: Flow, event: Event, now: datetime) -> str:
        rule = flow.reentry
        if rule.mode == "always" or not event.customer_key:
            return ""
        last = uow.runs.last_started(flow.id, event.customer_key)
        if last is None:
            return ""
        if rule.mode == "once":
            return f"re-entry once: this customer entered already (run {last.id})"
        assert rule.window is not None
        if now - last.started_at < rule.window:
            return f"re-entry window: entered {now - last.started_at} ago (run {last.id}), window {rule.window}"
        return ""

    def _apply(self, step: _Pass, flow: Flow, transition: Transition) -> None:
        if not transition.changed:
            return
        uow, now, run = step.uow, step.now, transition.run
        uow.runs.save(run)
        step.applied.runs.append(run)
        for command in transition.commands:
            if isinstance(command, Perform):
                self._perform(step, flow, run, command)
            elif isinstance(command, Finished):
                cancel_sends(uow, run, now)
                if command.status is Status.CONVERTED:
                    tie.converted(uow, run, now)
        if run.status.final and run.concurrency_key and flow.concurrency.mode == "queue":
            queued = [r for r in uow.runs.active_for_key(flow.id, run.concurrency_key) if r.status is Status.QUEUED]
            if queued:
                self._apply(step, flow, engine.start(flow, queued[0], now))

    # -- actions --------------------------------------------------------------------------

    def _perform(self, step: _Pass, flow: Flow, run: RunState, perform: Perform) -> None:
        send = new_send(perform, run, step.now, self.settings.action_attempts)
        if step.uow.outbox.add(send):
            self._decide(step, flow, run, send)

    def _decide(self, step: _Pass, flow: Flow, run: RunState, send: Send) -> None:
        rules = rules_for(self.settings.guardrails, flow)
        decided = apply_decision(step.uow, send, decision_for(step.uow, rules, send, run, step.now), step.now)
        if decided.status is SendStatus.READY:
            step.applied.ready.append(decided)
        elif decided.status is SendStatus.SKIPPED:
            self._apply(step, flow, engine.advance(flow, run, ActionSkipped(send.key, decided.last_error), step.now))

    def _redecide(self, step: _Pass, key: str) -> None:
        send = step.uow.outbox.get(key)
        if send is None or send.status is not SendStatus.PENDING:
            return
        run = step.uow.runs.get(send.run_id)
        flow = self.flows.flow_of(run) if run else None
        if run is not None and flow is not None and not run.status.final:
            self._decide(step, flow, run, send)
        else:
            why = "its run is gone" if run is None else f"run {run.status.value}"
            step.uow.outbox.put(send.evolve(status=SendStatus.CANCELLED, last_error=why, updated_at=step.now))

    def _outcome(self, step: _Pass, key: str) -> None:
        uow = step.uow
        send = uow.outbox.get(key)
        if send is None or send.applied or send.status not in (SendStatus.DELIVERED, SendStatus.FAILED):
            return
        run = uow.runs.get(send.run_id)  # possibly ended since: the send's own effects still settle
        if send.status is SendStatus.FAILED or run is None:
            uow.outbox.put(send.evolve(applied=True))
            if run is not None:
                self._input(step, run.id, ActionFailed(key, send.last_error))
            return
        result, events = REGISTRY[send.action].settle(
            send.params, key, dict(send.result or {}), run, uow.ledger, send.updated_at
        )
        uow.outbox.put(send.evolve(applied=True, result=result))
        tie.sent(uow, self.flows.flow_of(run), run, send, result)
        self._input(step, run.id, ActionSucceeded(key, result))
        for event in events:
            self._emit(step, event)


def _cancelled(run: RunState, now: datetime, reason: str) -> Transition:
    entry = TraceEntry(now, "(concurrency)", "cancel", reason)
    done = run.evolve(status=Status.CANCELLED, reason=reason, wake_at=None, updated_at=now, trace=(*run.trace, entry))
    return Transition(done, (Finished(run.id, Status.CANCELLED),))
