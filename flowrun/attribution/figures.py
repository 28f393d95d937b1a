"""The report's figures, per flow, step and split arm, built the same way from either store:
the sources (flowrun.attribution.sources: in-memory for dry-run, SQL for serve) hand over
grouped counts, and everything after that — totals, rates, the arm comparison — is here once.

Counts are of messages (each went to one recipient): recipients (sent), delivered, opened (any,
and without machine opens), clicked, unsubscribed, bounced, complained, converted (its run
reached its goal after it, or an order was attributed to it), attributed orders and revenue per
currency. The arm comparison is a two-proportion z-test on conversion per run that entered the
arm: an arm is ahead when it beats every other arm of its split with |z| >= 1.96 (two-sided,
95 %) and each arm has at least `min_sample` runs."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from flowrun.attribution.records import COUNTS
from flowrun.attribution.windows import Z_THRESHOLD

MICROS = Decimal(1_000_000)
CENT = Decimal("0.01")


@dataclass(frozen=True, order=True)
class Key:
    flow: str
    step: str
    split: str = ""  # "" when the step is in no split
    arm: str = ""
    channel: str = ""


@dataclass
class Figures:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    orders: int = 0
    revenue: dict[str, Decimal] = field(default_factory=dict)  # currency -> exact amount

    def add(self, other: Figures) -> None:
        for name, value in other.counts.items():
            self.counts[name] += value
        self.orders += other.orders
        for currency, amount in other.revenue.items():
            self.revenue[currency] = self.revenue.get(currency, Decimal(0)) + amount


@dataclass(frozen=True)
class ArmResult:
    arm: str
    runs: int
    converted: int

    @property
    def rate(self) -> float:
        return self.converted / self.runs if self.runs else 0.0


@dataclass(frozen=True)
class Comparison:
    flow: str
    split: str
    arms: tuple[ArmResult, ...]
    ahead: str | None  # the arm ahead with enough evidence, else None
    z: float | None  # the leader's smallest z against another arm
    verdict: str


@dataclass(frozen=True)
class Unknown:
    """Engagement events whose message id no send has: kept and counted, never an error."""

    count: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    examples: tuple[tuple[str, str, str], ...] = ()  # (provider, kind, message id), newest first


@dataclass(frozen=True)
class Report:
    since: datetime | None
    flow: str | None
    steps: list[tuple[Key, Figures]]
    flows: list[tuple[str, Figures]]
    comparisons: list[Comparison]
    unknown: Unknown
    min_sample: int


def build(
    counts: Iterable[tuple[Key, dict[str, int]]],
    revenue: Iterable[tuple[Key, str, int, int]],  # key, currency, orders, amount in millionths
    arms: Iterable[tuple[str, str, str, int, int]],  # flow, split, arm, runs, converted runs
    unknown: Unknown,
    *,
    since: datetime | None = None,
    flow: str | None = None,
    min_sample: int = 100,
) -> Report:
    by_key: dict[Key, Figures] = {}
    for key, found in counts:
        figures = by_key.setdefault(key, Figures())
        for name in COUNTS:
            figures.counts[name] += int(found.get(name, 0))
    for key, currency, orders, micros in revenue:
        figures = by_key.setdefault(key, Figures())
        figures.orders += int(orders)
        amount = _cents(Decimal(int(micros)) / MICROS)
        figures.revenue[currency] = figures.revenue.get(currency, Decimal(0)) + amount
    steps = sorted(by_key.items())
    totals: dict[str, Figures] = {}
    for key, figures in steps:
        totals.setdefault(key.flow, Figures()).add(figures)
    splits: dict[tuple[str, str], list[ArmResult]] = {}
    for flow_id, split, arm, runs, converted in sorted(arms):
        splits.setdefault((flow_id, split), []).append(ArmResult(arm, int(runs), int(converted)))
    comparisons = [compare(f, s, tuple(a), min_sample) for (f, s), a in sorted(splits.items())]
    return Report(since, flow, steps, sorted(totals.items()), comparisons, unknown, min_sample)


def _cents(amount: Decimal) -> Decimal:
    """At least two decimals (42.50, not 42.5), more where the amounts had them."""
    amount = amount.normalize()
    exponent = amount.as_tuple().exponent
    return amount.quantize(CENT) if isinstance(exponent, int) and exponent > -2 else amount


def z_score(a: ArmResult, b: ArmResult) -> float | None:
    """Two-proportion z-test with the pooled rate; None when it is undefined (no variance)."""
    if not a.runs or not b.runs:
        return None
    pooled = (a.converted + b.converted) / (a.runs + b.runs)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / a.runs + 1 / b.runs))
    return (a.rate - b.rate) / spread if spread > 0 else None


def compare(flow_id: str, split: str, arms: tuple[ArmResult, ...], min_sample: int) -> Comparison:
    def verdict(ahead: str | None, z: float | None, text: str) -> Comparison:
        return Comparison(flow_id, split, arms, ahead, z, text)

    if len(arms) < 2:
        return verdict(None, None, "only one arm has sent anything yet")
    small = [a for a in arms if a.runs < min_sample]
    if small:
        listed = ", ".join(f"{a.arm} has {a.runs}" for a in small)
        return verdict(None, None, f"not enough evidence: each arm needs {min_sample} runs ({listed})")
    leader = max(arms, key=lambda a: (a.rate, a.runs, a.arm))
    scores = [z_score(leader, other) for other in arms if other is not leader]
    if any(z is None for z in scores):
        return verdict(None, None, "no difference to test: every arm converts at the same rate")
    weakest = min(z for z in scores if z is not None)
    others = ", ".join(f"{a.arm} {a.rate:.1%}" for a in arms if a is not leader)
    if weakest >= Z_THRESHOLD:
        text = f"{leader.arm} is ahead: {leader.rate:.1%} vs {others} (z = {weakest:.2f} >= {Z_THRESHOLD})"
        return verdict(leader.arm, weakest, text)
    text = f"no arm is ahead yet: {leader.arm} {leader.rate:.1%} vs {others} (z = {weakest:.2f} < {Z_THRESHOLD})"
    return verdict(None, weakest, text)
