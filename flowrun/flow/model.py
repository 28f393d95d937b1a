"""A loaded flow: frozen dataclasses with compiled conditions and templates.

Nothing here is a raw YAML dict; the loader builds these and the engine reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any, Union

from flowrun.actions.base import ActionType
from flowrun.errors import Problem, YamlPath
from flowrun.events import DEFAULT_THRESHOLD, Event
from flowrun.guardrails import FlowGuardrails
from flowrun.templating import Condition, Template
from flowrun.timing import CronSchedule


@dataclass(frozen=True)
class EventTrigger:
    """`on:` an event. A derived event's threshold can be named where the flow starts:
    `after` (customer.inactive: quiet for this long), `below` (inventory.low: stock fell
    under N) or `above` (inventory.restocked: stock rose over N). A trigger naming none gets
    the project's thresholds (`derive:` in flowrun.yaml)."""

    events: tuple[str, ...]
    sources: tuple[str, ...] = ()
    after: timedelta | None = None
    below: int | None = None
    above: int | None = None
    segment: str | None = None  # segment.entered/exited: only this segment's (segments/*.yaml)

    @property
    def stock_level(self) -> int | None:
        """The stock level at or under which an item counts as low for this trigger."""
        return self.below - 1 if self.below is not None else self.above

    def matches(self, event: Event) -> bool:
        kind = event.type
        if not (kind in self.events or ("custom.*" in self.events and kind.startswith("custom."))):
            return False
        if self.sources and event.source not in self.sources:
            return False
        if kind == "customer.inactive":
            if self.after is None:
                return bool(event.meta.get(DEFAULT_THRESHOLD, True))
            return (event.data.get("inactivity") or {}).get("days") == self.after.days
        if kind in ("inventory.low", "inventory.restocked"):
            if self.stock_level is None:
                return bool(event.meta.get(DEFAULT_THRESHOLD, True))
            return (event.data.get("inventory") or {}).get("threshold") == self.stock_level
        if self.segment is not None and kind in ("segment.entered", "segment.exited"):
            return (event.data.get("segment") or {}).get("name") == self.segment
        return True


@dataclass(frozen=True)
class ScheduleTrigger:
    """`schedule: cron` or `every: 30m`; `missed` says what happens to ticks missed while down."""

    cron: CronSchedule | None
    every: timedelta | None
    missed: str = "skip"  # skip | run_once

    @property
    def label(self) -> str:
        if self.cron is not None:
            return f"schedule {self.cron.expression!r} ({self.cron.tz.key})"
        return f"every {self.every}"


Trigger = Union[EventTrigger, ScheduleTrigger]


@dataclass(frozen=True)
class Goal:
    """`until`: a later event for the same customer ends the run as converted."""

    events: tuple[str, ...]
    where: Condition | None = None


@dataclass(frozen=True)
class Reentry:
    mode: str = "always"  # always | once | window
    window: timedelta | None = None


@dataclass(frozen=True)
class Concurrency:
    key: Template | None
    mode: str = "parallel"  # single | restart | queue | parallel


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff: timedelta = timedelta(seconds=30)
    max_backoff: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class Step:
    path: YamlPath
    name: str | None


@dataclass(frozen=True)
class ActionStep(Step):
    action: ActionType
    params: Any
    as_name: str | None = None
    on_error: str = "fail"  # fail | continue
    retry: RetryPolicy = RetryPolicy()
    timeout: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class DelayStep(Step):
    duration: timedelta


@dataclass(frozen=True)
class WaitUntilStep(Step):
    at: time
    timezone: str | None  # None: the flow's zone; "customer": the customer's, else the flow's


@dataclass(frozen=True)
class WaitForStep(Step):
    events: tuple[str, ...]
    timeout: timedelta
    where: Condition | None
    as_name: str | None
    then: tuple[AnyStep, ...]
    otherwise: tuple[AnyStep, ...]
    message_step: str | None = None  # `step:` a message.* event about what that step of this run sent


@dataclass(frozen=True)
class IfStep(Step):
    condition: Condition
    then: tuple[AnyStep, ...]
    otherwise: tuple[AnyStep, ...]


@dataclass(frozen=True)
class ChooseOption:
    when: Condition
    steps: tuple[AnyStep, ...]


@dataclass(frozen=True)
class ChooseStep(Step):
    options: tuple[ChooseOption, ...]
    otherwise: tuple[AnyStep, ...]


@dataclass(frozen=True)
class SplitBranch:
    name: str
    weight: float
    steps: tuple[AnyStep, ...]


@dataclass(frozen=True)
class SplitStep(Step):
    branches: tuple[SplitBranch, ...]


@dataclass(frozen=True)
class StopStep(Step):
    reason: str


AnyStep = Union[ActionStep, DelayStep, WaitUntilStep, WaitForStep, IfStep, ChooseStep, SplitStep, StopStep]


@dataclass(frozen=True)
class Flow:
    id: str
    file: Path
    version: str
    description: str
    trigger: Trigger
    condition: Condition | None
    goal: Goal | None
    reentry: Reentry
    concurrency: Concurrency
    timezone: str
    steps: tuple[AnyStep, ...]
    program: tuple[Any, ...] = field(default=(), compare=False)
    guardrails: FlowGuardrails | None = None
    locale: str = "en_US"  # how `money` writes amounts: the flow's `locale:`, else the project's
    # What `validate` says without refusing the flow: warnings (errors with --strict), notes.
    warnings: tuple[Problem, ...] = field(default=(), compare=False)
    notes: tuple[Problem, ...] = field(default=(), compare=False)
    memory: bool = field(default=False, compare=False)  # reads `profile`, `orders` or `in_segment(…)`
    segments_read: tuple[tuple[str, Problem], ...] = field(default=(), compare=False)  # `in_segment('x')`, where

    @property
    def event_types(self) -> tuple[str, ...]:
        return self.trigger.events if isinstance(self.trigger, EventTrigger) else ("schedule.tick",)
