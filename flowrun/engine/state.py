"""A run's state, its inputs and the commands the engine hands back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Union

from flowrun.events import Event
from flowrun.flow.model import RetryPolicy


class Status(StrEnum):
    QUEUED = "queued"  # concurrency: queue, waiting for the key's active run to end
    RUNNING = "running"
    ACTING = "acting"  # an action is out; waiting for its result
    WAITING = "waiting"  # a timer
    AWAITING = "awaiting_event"  # wait: {for: ...}
    COMPLETED = "completed"
    CONVERTED = "converted"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({Status.COMPLETED, Status.CONVERTED, Status.FAILED, Status.SKIPPED, Status.CANCELLED})


@dataclass(frozen=True)
class TraceEntry:
    at: datetime
    step: str
    kind: str
    outcome: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunState:
    id: str
    flow_id: str
    flow_version: str
    trigger: Event
    status: Status
    started_at: datetime
    updated_at: datetime
    customer_key: str | None = None
    concurrency_key: str | None = None
    pc: int = 0
    vars: Mapping[str, Any] = field(default_factory=dict)
    wake_at: datetime | None = None
    awaiting: tuple[str, ...] = ()
    reason: str = ""
    trace: tuple[TraceEntry, ...] = ()

    def evolve(self, **changes: Any) -> RunState:
        """`dataclasses.replace` without re-running __init__: the engine's hot path."""
        new = object.__new__(RunState)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new


# -- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimerFired:
    due: datetime


@dataclass(frozen=True)
class EventArrived:
    event: Event


@dataclass(frozen=True)
class ActionSucceeded:
    key: str
    result: Mapping[str, Any]


@dataclass(frozen=True)
class ActionFailed:
    key: str
    error: str


@dataclass(frozen=True)
class ActionSkipped:
    """A guardrail said no: the run goes on, `as:` sees `{"skipped": reason}`."""

    key: str
    reason: str


Input = Union[TimerFired, EventArrived, ActionSucceeded, ActionFailed, ActionSkipped]


# -- commands ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Perform:
    run_id: str
    key: str  # idempotency key: run + step
    step: str
    action: str
    params: Mapping[str, Any]
    retry: RetryPolicy
    timeout_s: float
    on_error: str = "fail"


@dataclass(frozen=True)
class Wake:
    run_id: str
    at: datetime


@dataclass(frozen=True)
class Finished:
    run_id: str
    status: Status


Command = Union[Perform, Wake, Finished]


@dataclass(frozen=True)
class Transition:
    run: RunState
    commands: tuple[Command, ...] = ()
    changed: bool = True
