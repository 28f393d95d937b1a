"""advance(flow, run, input, now): the whole behaviour of a run, as a pure function."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from flowrun.actions.base import render_tree
from flowrun.engine import program as p
from flowrun.engine.facts import facts_for
from flowrun.engine.state import (
    ActionSkipped,
    ActionSucceeded,
    Command,
    EventArrived,
    Finished,
    Input,
    Perform,
    RunState,
    Status,
    TimerFired,
    TraceEntry,
    Transition,
    Wake,
)
from flowrun.errors import RenderError, format_path
from flowrun.events import Event
from flowrun.flow.model import Flow
from flowrun.templating import GLOBALS, Condition
from flowrun.timing import next_time_of_day, zone


def context(flow: Flow, run: RunState, now: datetime) -> dict[str, Any]:
    return {
        **GLOBALS,
        **run.trigger.context(),
        **facts_for(run, now),
        **run.vars,
        "run": {"id": run.id, "started_at": run.started_at},
        "flow": {"id": flow.id, "version": flow.version},
        "now": now,
    }


def new_run(
    flow: Flow,
    event: Event,
    run_id: str,
    now: datetime,
    concurrency_key: str | None = None,
    status: Status = Status.RUNNING,
) -> RunState:
    return RunState(
        id=run_id,
        flow_id=flow.id,
        flow_version=flow.version,
        trigger=event,
        status=status,
        started_at=now,
        updated_at=now,
        customer_key=event.customer_key,
        concurrency_key=concurrency_key,
    )


def skip(run: RunState, now: datetime, reason: str, detail: dict[str, Any] | None = None) -> Transition:
    entry = TraceEntry(now, "(entry)", "skip", reason, detail or {})
    done = run.evolve(status=Status.SKIPPED, reason=reason, updated_at=now, trace=(*run.trace, entry))
    return Transition(done, (Finished(run.id, Status.SKIPPED),))


def start(flow: Flow, run: RunState, now: datetime) -> Transition:
    """Check the entry condition, then play the run until it blocks or ends."""
    trace = [TraceEntry(now, "(trigger)", "trigger", run.trigger.type, {"event_id": run.trigger.id})]
    run = run.evolve(status=Status.RUNNING, started_at=now, updated_at=now)
    if flow.condition is not None:
        ctx = context(flow, run, now)
        try:
            ok = flow.condition.evaluate(ctx)
        except RenderError as exc:
            return _fail(run.evolve(trace=tuple(trace)), now, str(exc), "(entry)")
        if not ok:
            run = run.evolve(trace=tuple(trace))
            return skip(
                run,
                now,
                f"entry condition `{flow.condition.source}` was false",
                {"condition": flow.condition.source, "values": flow.condition.observed(ctx)},
            )
        trace.append(TraceEntry(now, "if", "condition", "true", {"condition": flow.condition.source}))
    return _play(flow, run, now, trace, [])


def advance(flow: Flow, run: RunState, given: Input, now: datetime) -> Transition:
    if run.status.final:
        return Transition(run, (), changed=False)
    if isinstance(given, EventArrived):
        return _on_event(flow, run, given.event, now)
    if isinstance(given, TimerFired):
        if run.wake_at is None or given.due != run.wake_at or run.status not in (Status.WAITING, Status.AWAITING):
            return Transition(run, (), changed=False)  # a stale or repeated timer
        step = format_path(_step_at(flow, run.pc))
        if run.status is Status.AWAITING:
            target = flow.program[run.pc].timeout_target  # type: ignore[union-attr]
            entry = TraceEntry(now, step, "wait_for", "timed out", {"events": list(run.awaiting)})
            run = run.evolve(pc=target, wake_at=None, awaiting=())
        else:
            entry = TraceEntry(now, step, "wait", "resumed", {"late_s": (now - given.due).total_seconds()})
            run = run.evolve(pc=run.pc + 1, wake_at=None)
        return _play(flow, run, now, [entry], [])
    if run.status is not Status.ACTING or given.key != _action_key(run, flow):
        return Transition(run, (), changed=False)
    step = flow.program[run.pc].step  # type: ignore[union-attr]
    where = format_path(step.path)
    if isinstance(given, (ActionSucceeded, ActionSkipped)):
        if isinstance(given, ActionSkipped):
            result: dict[str, Any] = {"skipped": given.reason}
            entry = TraceEntry(now, where, "result", "skipped", {"reason": given.reason})
        else:
            result = dict(given.result)
            entry = TraceEntry(now, where, "result", "ok", {"result": result})
        variables = {**run.vars, step.as_name: result} if step.as_name else run.vars
        return _play(flow, run.evolve(pc=run.pc + 1, vars=variables), now, [entry], [])
    entry = TraceEntry(now, where, "result", "failed", {"error": given.error})
    if step.on_error == "continue":
        return _play(flow, run.evolve(pc=run.pc + 1), now, [entry], [])
    return _fail(run.evolve(trace=(*run.trace, entry)), now, f"{step.action.name} failed: {given.error}", where)


def _on_event(flow: Flow, run: RunState, event: Event, now: datetime) -> Transition:
    """Goals and waits match the same customer's events. An event that names no customer (a stock
    level, a product) reaches the waits whose `where:` holds for it: back in stock, for anyone."""
    goal = flow.goal
    same_customer = event.customer_key is not None and event.customer_key == run.customer_key
    if goal is not None and same_customer and event.type in goal.events and _where(goal.where, flow, run, event, now):
        entry = TraceEntry(now, "until", "goal", "reached", {"event": event.type, "event_id": event.id})
        done = run.evolve(
            status=Status.CONVERTED,
            reason=f"goal reached: {event.type}",
            wake_at=None,
            updated_at=now,
            trace=(*run.trace, entry),
        )
        return Transition(done, (Finished(run.id, Status.CONVERTED),))
    if run.status is Status.AWAITING and event.type in run.awaiting:
        ins = flow.program[run.pc]
        assert isinstance(ins, p.Await)
        mine = same_customer if event.customer_key is not None else ins.step.where is not None
        if not mine:
            return Transition(run, (), changed=False)
        if not _where(ins.step.where, flow, run, event, now) or not _from_step(ins.step.message_step, run, event):
            return Transition(run, (), changed=False)
        variables = {**run.vars, ins.step.as_name: event.context()} if ins.step.as_name else run.vars
        entry = TraceEntry(now, format_path(ins.step.path), "wait_for", "received", {"event": event.type})
        return _play(flow, run.evolve(pc=run.pc + 1, vars=variables, wake_at=None, awaiting=()), now, [entry], [])
    return Transition(run, (), changed=False)


def _where(cond: Condition | None, flow: Flow, run: RunState, event: Event, now: datetime) -> bool:
    if cond is None:
        return True
    ctx = {**context(flow, run, now), **event.context(), "trigger": run.trigger.context()}
    try:
        return cond.evaluate(ctx)
    except RenderError:
        return False


def _from_step(step: str | None, run: RunState, event: Event) -> bool:
    """`wait: {for: message.opened, step: welcome-1}`: the event is about what that step of this
    run sent (the runtime tied it to the send through the provider's message id)."""
    if step is None:
        return True
    message = event.data.get("message") or {}
    return bool(message.get("run") == run.id and message.get("step") == step)


def _play(flow: Flow, run: RunState, now: datetime, trace: list[TraceEntry], commands: list[Command]) -> Transition:
    program, ctx = flow.program, context(flow, run, now)
    pc = run.pc
    try:
        while pc < len(program):
            ins = program[pc]
            if isinstance(ins, p.Jump):
                pc = ins.target
            elif isinstance(ins, p.Branch):
                pc = pc + 1 if _decide(ins.step.condition, ctx, ins.step.path, now, trace) else ins.else_target
            elif isinstance(ins, p.Choose):
                pc = ins.otherwise_target
                for option, target in zip(ins.step.options, ins.targets, strict=True):
                    if _decide(option.when, ctx, ins.step.path, now, trace):
                        pc = target
                        break
            elif isinstance(ins, p.Split):
                index = _bucket(run.id, ins.step)
                branch = ins.step.branches[index]
                trace.append(
                    TraceEntry(
                        now,
                        format_path(ins.step.path),
                        "split",
                        branch.name,
                        {"weights": {b.name: b.weight for b in ins.step.branches}},
                    )
                )
                pc = ins.targets[index]
            elif isinstance(ins, p.Stop):
                trace.append(TraceEntry(now, format_path(ins.step.path), "stop", ins.step.reason))
                return _finish(run, pc, now, trace, commands, Status.COMPLETED, ins.step.reason)
            elif isinstance(ins, (p.Delay, p.WaitUntil, p.Await)):
                wake = _wake_time(flow, ins, ctx, now)
                if wake <= now and not isinstance(ins, p.Await):
                    pc += 1
                    continue
                status = Status.AWAITING if isinstance(ins, p.Await) else Status.WAITING
                awaiting = ins.step.events if isinstance(ins, p.Await) else ()
                trace.append(
                    TraceEntry(
                        now,
                        format_path(ins.step.path),
                        "wait",
                        "until " + wake.isoformat(),
                        {"events": list(awaiting)} if awaiting else {},
                    )
                )
                blocked = run.evolve(
                    pc=pc,
                    status=status,
                    wake_at=wake,
                    awaiting=awaiting,
                    updated_at=now,
                    trace=(*run.trace, *trace),
                )
                return Transition(blocked, (*commands, Wake(run.id, wake)))
            else:
                step = ins.step
                params = step.action.finish_params(render_tree(step.params, ctx), ctx)
                key = f"{run.id}/{format_path(step.path)}"
                trace.append(TraceEntry(now, format_path(step.path), "action", step.action.name, {"params": params}))
                acting = run.evolve(pc=pc, status=Status.ACTING, updated_at=now, trace=(*run.trace, *trace))
                perform = Perform(
                    run.id,
                    key,
                    format_path(step.path),
                    step.action.name,
                    params,
                    step.retry,
                    step.timeout.total_seconds(),
                    step.on_error,
                )
                return Transition(acting, (*commands, perform))
    except RenderError as exc:
        failed = run.evolve(pc=pc, trace=(*run.trace, *trace))
        return _fail(failed, now, str(exc), format_path(_step_at(flow, pc)))
    return _finish(run, pc, now, trace, commands, Status.COMPLETED, "")


def _finish(
    run: RunState, pc: int, now: datetime, trace: list[TraceEntry], commands: list[Command], status: Status, reason: str
) -> Transition:
    done = run.evolve(
        pc=pc, status=status, reason=reason, wake_at=None, awaiting=(), updated_at=now, trace=(*run.trace, *trace)
    )
    return Transition(done, (*commands, Finished(run.id, status)))


def _fail(run: RunState, now: datetime, reason: str, where: str) -> Transition:
    entry = TraceEntry(now, where, "error", "failed", {"error": reason})
    done = run.evolve(status=Status.FAILED, reason=reason, wake_at=None, updated_at=now, trace=(*run.trace, entry))
    return Transition(done, (Finished(run.id, Status.FAILED),))


def _decide(cond: Condition, ctx: dict[str, Any], path: Any, now: datetime, trace: list[TraceEntry]) -> bool:
    result = cond.evaluate(ctx)
    detail: dict[str, Any] = {"condition": cond.source}
    if not result:
        detail["values"] = cond.observed(ctx)
    trace.append(TraceEntry(now, format_path(path), "condition", str(result).lower(), detail))
    return result


def _bucket(run_id: str, step: Any) -> int:
    digest = hashlib.sha256(f"{run_id}:{format_path(step.path)}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(b.weight for b in step.branches)
    for index, branch in enumerate(step.branches):
        point -= branch.weight
        if point < 0:
            return index
    return len(step.branches) - 1


def _wake_time(flow: Flow, ins: p.Delay | p.WaitUntil | p.Await, ctx: dict[str, Any], now: datetime) -> datetime:
    if isinstance(ins, p.Delay):
        return now + ins.step.duration
    if isinstance(ins, p.Await):
        return now + ins.step.timeout
    name = ins.step.timezone or flow.timezone
    if name == "customer":
        name = (ctx.get("customer") or {}).get("timezone") or flow.timezone
    return next_time_of_day(now, ins.step.at, zone(name))


def _step_at(flow: Flow, pc: int) -> tuple[str | int, ...]:
    ins = flow.program[pc] if 0 <= pc < len(flow.program) else None
    step = getattr(ins, "step", None)
    return step.path if step is not None else ()


def _action_key(run: RunState, flow: Flow) -> str:
    return f"{run.id}/{format_path(_step_at(flow, run.pc))}"
