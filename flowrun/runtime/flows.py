"""The loaded flows as the runtime asks about them: which start on an event, which have it as
a goal or wait for it, and the version a run in flight started on."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from flowrun.engine.program import Await
from flowrun.engine.state import RunState
from flowrun.events import Event
from flowrun.flow.model import EventTrigger, Flow


class FlowSet:
    def __init__(self, flows: Iterable[Flow] = ()) -> None:
        self.current: dict[str, Flow] = {}
        self.versions: dict[tuple[str, str], Flow] = {}
        self._by_type: dict[str, list[Flow]] = defaultdict(list)
        self._goals: dict[str, set[str]] = defaultdict(set)
        self._awaited: dict[str, set[str]] = defaultdict(set)  # type -> flows with a wait on it (any version)
        self._awaited_anyone: set[str] = set()  # types a wait with `where:` listens to (customer-less events)
        self.load(flows)

    def load(self, flows: Iterable[Flow]) -> None:
        """(Re)load; versions loaded before stay known, so runs in flight finish on them."""
        self.current = {f.id: f for f in flows}
        self._by_type.clear()
        for flow in self.current.values():
            self.versions[(flow.id, flow.version)] = flow
            for ins in flow.program:
                if isinstance(ins, Await):
                    for event_type in ins.step.events:
                        self._awaited[event_type].add(flow.id)
                    if ins.step.where is not None:
                        self._awaited_anyone.update(ins.step.events)
            for event_type in flow.goal.events if flow.goal else ():
                self._goals[event_type].add(flow.id)
            for event_type in flow.event_types:
                self._by_type[event_type].append(flow)

    def __iter__(self) -> Iterator[Flow]:
        return iter(self.current.values())

    def flow_of(self, run: RunState) -> Flow | None:
        return self.versions.get((run.flow_id, run.flow_version)) or self.current.get(run.flow_id)

    def listens_to(self, event_type: str) -> bool:
        """Whether an event of this type could start a run or reach one (a goal or a wait of
        any flow version loaded since start)."""
        if self._awaited.get(event_type) or self._goals.get(event_type) or self._by_type.get(event_type):
            return True
        return event_type.startswith("custom.") and bool(self._by_type.get("custom.*"))

    def awaiting_flows(self, event_type: str) -> set[str]:
        return self._awaited.get(event_type, set())

    def awaited_by_anyone(self, event_type: str) -> bool:
        """A wait with `where:` takes events that name no customer: those cross partitions."""
        return event_type in self._awaited_anyone

    def goal_flows(self, event_type: str) -> set[str]:
        return self._goals.get(event_type, set())

    def triggered(self, event: Event) -> list[Flow]:
        candidates = self._by_type.get(event.type, [])
        if event.type.startswith("custom."):
            candidates = [*candidates, *self._by_type.get("custom.*", [])]
        return [f for f in candidates if isinstance(f.trigger, EventTrigger) and f.trigger.matches(event)]
