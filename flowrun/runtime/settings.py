"""The project settings the runtime decides with: derivation thresholds, guardrails, attempts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from flowrun.attribution.windows import Attribution
from flowrun.guardrails import Guardrails
from flowrun.segments.model import Segment

INACTIVE_AFTER = (timedelta(days=30), timedelta(days=60), timedelta(days=90))


@dataclass(frozen=True)
class Settings:
    checkout_idle: timedelta = timedelta(hours=1)
    low_stock_threshold: int = 5
    inactive_after: tuple[timedelta, ...] = INACTIVE_AFTER
    guardrails: Guardrails = field(default_factory=Guardrails)
    action_attempts: int = 5
    attribution: Attribution = field(default_factory=Attribution)
    inactivity: bool = True  # dry-run without a horizon: one order would stretch it by months
    segments: tuple[Segment, ...] = ()  # from segments/*.yaml beside the flows
    timezone: str = "UTC"  # the shop's: periods of `orders.count(since='yesterday')`
