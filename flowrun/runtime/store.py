"""The run store protocol, and the in-memory store used by dry-run and tests."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from typing import Protocol

from flowrun.engine.state import RunState, Status


class RunStore(Protocol):
    def get(self, run_id: str) -> RunState | None: ...

    def save(self, run: RunState) -> None: ...

    def active_for_customer(self, customer_key: str, flow_ids: Collection[str]) -> list[RunState]:
        """Active runs of these flows for this customer."""
        ...

    def active_for_key(self, flow_id: str, concurrency_key: str) -> list[RunState]: ...

    def last_started(self, flow_id: str, customer_key: str) -> RunState | None: ...

    def awaiting(self, event_type: str) -> list[RunState]: ...


class MemoryStore:
    """Everything in dicts; the same contract as the SQL store."""

    def __init__(self) -> None:
        self.runs: dict[str, RunState] = {}
        self._by_customer: dict[str, set[str]] = defaultdict(set)
        self._by_key: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._last: dict[tuple[str, str], str] = {}
        self._awaiting: dict[str, set[str]] = defaultdict(set)

    def get(self, run_id: str) -> RunState | None:
        return self.runs.get(run_id)

    def save(self, run: RunState) -> None:
        previous = self.runs.get(run.id)
        if previous is not None:
            for event_type in previous.awaiting:
                self._awaiting[event_type].discard(run.id)
        self.runs[run.id] = run
        if run.status is Status.AWAITING:
            for event_type in run.awaiting:
                self._awaiting[event_type].add(run.id)
        active = not run.status.final
        for index, key in (
            (self._by_customer, run.customer_key),
            (self._by_key, (run.flow_id, run.concurrency_key) if run.concurrency_key else None),
        ):
            if key is None:
                continue
            if active:
                index[key].add(run.id)  # type: ignore[index]
            else:
                index[key].discard(run.id)  # type: ignore[index]
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


def _order(run: RunState) -> tuple[object, str]:
    return (run.started_at, run.id)
