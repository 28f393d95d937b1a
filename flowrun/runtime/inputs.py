"""The inputs the runtime applies. Serve's sources and dry-run's simulated clock both yield these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Union

from flowrun.events import Event
from flowrun.runtime.records import Check


@dataclass(frozen=True)
class EventIn:
    """An event (from a store, a poller, a generic webhook, another partition's owner)."""

    event: Event
    reach_only: bool = False  # handed over for waits with `where:` here: starts and derives nothing


@dataclass(frozen=True)
class TimerDue:
    run_id: str
    due: datetime


@dataclass(frozen=True)
class TickDue:
    """A schedule or interval trigger's tick for one flow."""

    flow_id: str
    at: datetime


@dataclass(frozen=True)
class CheckDue:
    check: Check


@dataclass(frozen=True)
class SendDue:
    """A pending outbox row whose decision time came (deferred by quiet hours, re-queued)."""

    key: str


@dataclass(frozen=True)
class OutcomeDue:
    """An outbox row the dispatcher finished (delivered, or failed with on_error: continue)."""

    key: str


Input = Union[EventIn, TimerDue, TickDue, CheckDue, SendDue, OutcomeDue]
