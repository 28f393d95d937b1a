"""From a run's `Perform` to an outbox row, and the guardrail decision on it: send (the row is
ready for a dispatcher), defer (quiet hours: decided again at their end) or skip (the run goes on).

The decision is made by whoever moves the customer's runs, in the unit of work that applies the
input, so two sends to one customer cannot both pass a cap.
"""

from __future__ import annotations

from datetime import datetime

from flowrun.actions import REGISTRY
from flowrun.engine.state import Perform, RunState
from flowrun.flow.model import Flow
from flowrun.guardrails import Decision, Guardrails, decide
from flowrun.runtime.protocols import UnitOfWork
from flowrun.runtime.records import Attempt, Send, SendStatus, event_key, partition_of


def run_part(run: RunState) -> int:
    return partition_of(event_key(run.trigger))


def new_send(perform: Perform, run: RunState, now: datetime, default_attempts: int) -> Send:
    action = REGISTRY[perform.action]
    retry = perform.retry
    return Send(
        key=perform.key,
        run_id=run.id,
        part=run_part(run),
        action=perform.action,
        step=perform.step,
        params=perform.params,
        status=SendStatus.PENDING,
        customer_key=run.customer_key,
        channel=action.channel,
        category=str(perform.params.get("category", "marketing")),
        on_error=perform.on_error,
        max_attempts=retry.attempts or default_attempts,
        backoff_s=retry.backoff.total_seconds(),
        max_backoff_s=retry.max_backoff.total_seconds(),
        timeout_s=perform.timeout_s,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )


def guarded(send: Send) -> bool:
    return send.channel is not None and send.category != "transactional"


def decision_for(uow: UnitOfWork, rules: Guardrails, send: Send, run: RunState, now: datetime) -> Decision:
    if not guarded(send):
        return decide(rules, now, None, send.category, {}, None, (), False)
    assert send.channel is not None
    who = run.customer_key
    customer = run.trigger.data.get("customer") or {}
    recent = uow.sends.recent(who, send.channel, now - rules.longest_cap) if who and rules.caps else []
    suppressed = uow.consent.suppressed(who) if who else False
    return decide(rules, now, send.channel, send.category, customer, who, recent, suppressed)


def apply_decision(uow: UnitOfWork, send: Send, decision: Decision, now: datetime) -> Send:
    """The row as the decision leaves it (written back), with its line in the history."""
    if decision.kind == "send":
        if guarded(send) and send.customer_key and send.channel:
            uow.sends.reserve(send.key, send.customer_key, send.channel, now)
        decided = send.evolve(status=SendStatus.READY, next_attempt_at=now, updated_at=now)
    elif decision.kind == "defer" and decision.at is not None:
        decided = send.evolve(status=SendStatus.PENDING, next_attempt_at=decision.at, updated_at=now)
        uow.outbox.note(Attempt(send.key, now, "deferred", decision.reason))
    else:
        decided = send.evolve(status=SendStatus.SKIPPED, last_error=decision.reason, updated_at=now, applied=True)
        uow.outbox.note(Attempt(send.key, now, "skipped", decision.reason))
    uow.outbox.put(decided)
    return decided


def cancel_sends(uow: UnitOfWork, run: RunState, now: datetime) -> None:
    """A run that ended takes its unsent actions with it, in the same unit of work."""
    reason = f"run {run.status.value}" + (f": {run.reason}" if run.reason else "")
    for key in uow.outbox.cancel_unsent(run.id, reason, now):
        uow.sends.release(key)
        uow.outbox.note(Attempt(key, now, "cancelled", reason))


def rules_for(base: Guardrails, flow: Flow | None) -> Guardrails:
    return base.overridden(flow.guardrails if flow else None)
