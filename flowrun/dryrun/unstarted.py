"""Events of a dry-run that started no run, and why: no flow listens to the type (with the
likely intended one), the flows that do take another source, or the event only feeds a
derivation, a goal or a wait."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from flowrun.derive import Tracking
from flowrun.dryrun.timeline import Scheduled
from flowrun.engine.state import RunState
from flowrun.events import Event
from flowrun.flow.model import EventTrigger, Flow, WaitForStep

_DERIVES = {"abandonment": "checkout.abandoned", "inactivity": "customer.inactive", "stock": "inventory.low/restocked"}


@dataclass(frozen=True)
class Unstarted:
    at: datetime
    type: str
    id: str
    why: str


def unstarted(flows: Sequence[Flow], inputs: Sequence[Scheduled], runs: Sequence[RunState]) -> list[Unstarted]:
    started = {run.trigger.id for run in runs}
    out = []
    for item in inputs:
        for event in item.events:
            if event.id not in started:
                out.append(Unstarted(item.at, event.type, event.id, why(event, flows)))
    return out


def why(event: Event, flows: Sequence[Flow]) -> str:
    triggers = [(f, f.trigger) for f in flows if isinstance(f.trigger, EventTrigger)]
    by_type = [(f, t) for f, t in triggers if _starts_on(t, event.type)]
    if by_type:
        wrong_source = [(f, t) for f, t in by_type if t.sources and event.source not in t.sources]
        if wrong_source and len(wrong_source) == len(by_type):
            takes = sorted({s for _, t in wrong_source for s in t.sources})
            return (
                f"flows on {event.type} ({', '.join(f.id for f, _ in wrong_source)}) take only events from "
                f"{', '.join(takes)}, and this one is from {event.source}"
            )
        return (
            f"{', '.join(f.id for f, _ in by_type)} listen(s) to {event.type} but started no run "
            "(its re-entry or concurrency rule, or an event id already played)"
        )
    listened = sorted({name for _, t in triggers for name in t.events})
    reason = f"no flow starts on {event.type}"
    close = difflib.get_close_matches(event.type, listened, n=1, cutoff=0.7)
    if close:
        reason += f" (did you mean {close[0]!r}? a flow starts on that)"
    uses = _other_uses(event.type, flows)
    if uses:
        reason += f"; {uses}"
    return reason


def _other_uses(event_type: str, flows: Sequence[Flow]) -> str:
    listened = {name for f in flows if isinstance(f.trigger, EventTrigger) for name in f.trigger.events}
    tracking = Tracking.for_flows(lambda t: t in listened)
    derived = [name for kind, name in _DERIVES.items() if getattr(tracking, kind) and _feeds(kind, event_type)]
    parts = []
    if derived and tracking.reads(event_type):
        parts.append(f"flowrun derives {', '.join(derived)} from it")
    goals = sorted(f.id for f in flows if f.goal is not None and event_type in f.goal.events)
    if goals:
        parts.append(f"it is a goal of {', '.join(goals)}")
    waits = sorted(f.id for f in flows if _waits_for(f, event_type))
    if waits:
        parts.append(f"runs of {', '.join(waits)} wait for it")
    return "; ".join(parts)


def _feeds(kind: str, event_type: str) -> bool:
    probe = {
        "abandonment": Tracking(True, False, False),
        "inactivity": Tracking(False, True, False),
        "stock": Tracking(False, False, True),
    }[kind]
    return probe.reads(event_type)


def _waits_for(flow: Flow, event_type: str) -> bool:
    from flowrun.dryrun.stubs import walk_steps

    return any(isinstance(s, WaitForStep) and event_type in s.events for s in walk_steps(flow.steps))


def _starts_on(trigger: EventTrigger, kind: str) -> bool:
    return kind in trigger.events or ("custom.*" in trigger.events and kind.startswith("custom."))
