"""A segment's rules, and what they say about one profile at one time: whether it is in, and
the next moment that answer can change with no new event (an order sliding out of a window,
a quiet period reaching its length). The runtime stores that moment as a due check, so time
alone moves customers in and out without scanning anyone else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Union

from flowrun.profile.record import Profile
from flowrun.profile.view import profile_view

Verdict = tuple[bool, datetime | None]  # in or not, and when that can next change by time alone


@dataclass(frozen=True)
class Spent:
    currency: str
    within: timedelta | None  # None: ever
    over: Decimal | None = None
    under: Decimal | None = None


@dataclass(frozen=True)
class Ordered:
    within: timedelta | None
    at_least: int | None = None
    at_most: int | None = None


@dataclass(frozen=True)
class LastOrder:
    before: timedelta | None = None  # the last order is more than this long ago
    after: timedelta | None = None  # the last order is less than this long ago


@dataclass(frozen=True)
class Bought:
    products: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Engaged:
    within: timedelta
    engaged: bool = True  # False: `not_engaged`


@dataclass(frozen=True)
class Abandoned:
    """A checkout left idle (the project's checkout idle time) within the window, no order since."""

    within: timedelta


@dataclass(frozen=True)
class Field:
    path: tuple[str, ...]
    op: str  # equals | in | at_least | at_most | contains
    value: Any


@dataclass(frozen=True)
class All:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class AnyOf:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Not:
    rule: Rule


Rule = Union[Spent, Ordered, LastOrder, Bought, Engaged, Abandoned, Field, All, AnyOf, Not]


@dataclass(frozen=True)
class Segment:
    name: str
    rule: Rule
    description: str = ""
    file: str = ""


def evaluate(rule: Rule, p: Profile, now: datetime, idle: timedelta) -> Verdict:
    if isinstance(rule, (Spent, Ordered)):
        return _window(rule, p, now)
    if isinstance(rule, LastOrder):
        return _last_order(rule, p.last_order_at, now)
    if isinstance(rule, Bought):
        hit = bool(rule.products & set(p.products) or rule.types & set(p.types) or rule.categories & set(p.categories))
        return hit, None
    if isinstance(rule, Engaged):
        inside, until = _within(p.last_engaged_at, rule.within, now)
        return inside == rule.engaged, until
    if isinstance(rule, Abandoned):
        return _abandoned(rule, p, now, idle)
    if isinstance(rule, Field):
        return _field(rule, profile_view(p, p.key, now)), None
    if isinstance(rule, Not):
        inside, until = evaluate(rule.rule, p, now, idle)
        return not inside, until
    verdicts = [evaluate(r, p, now, idle) for r in rule.rules]
    inside = all(v for v, _ in verdicts) if isinstance(rule, All) else any(v for v, _ in verdicts)
    return inside, _first(t for _, t in verdicts)


def _window(rule: Spent | Ordered, p: Profile, now: datetime) -> Verdict:
    currency = rule.currency if isinstance(rule, Spent) else None
    if rule.within is None:
        if isinstance(rule, Spent):
            amount = p.spend.get(rule.currency, Decimal(0))
            return _bounded(amount, rule.over, rule.under), None
        return _bounded(p.order_count, rule.at_least, rule.at_most, strict=False), None
    since = now - rule.within
    inside = [(at, t) for at, cur, t in p.recent if since < at <= now and (currency is None or cur == currency)]
    exits = min((at + rule.within for at, _ in inside), default=None)
    if isinstance(rule, Spent):
        amount = sum((t for _, t in inside), Decimal(0))
        return _bounded(amount, rule.over, rule.under), exits
    return _bounded(len(inside), rule.at_least, rule.at_most, strict=False), exits


def _bounded(value: Any, low: Any, high: Any, *, strict: bool = True) -> bool:
    if low is not None and (value <= low if strict else value < low):
        return False
    return not (high is not None and (value >= high if strict else value > high))


def _last_order(rule: LastOrder, last: datetime | None, now: datetime) -> Verdict:
    if last is None:
        return False, None
    ok, changes = True, []
    if rule.before is not None:
        ok &= now - last >= rule.before
        changes.append(last + rule.before)
    if rule.after is not None:
        ok &= now - last < rule.after
        changes.append(last + rule.after)
    return ok, _first(t for t in changes if t > now)


def _within(at: datetime | None, window: timedelta, now: datetime) -> Verdict:
    if at is None or now - at >= window:
        return False, None
    return True, at + window


def _abandoned(rule: Abandoned, p: Profile, now: datetime, idle: timedelta) -> Verdict:
    started = p.last_checkout_at
    if started is None or (p.last_order_at is not None and p.last_order_at >= started):
        return False, None
    left = started + idle
    if now < left:
        return False, left
    if now < left + rule.within:
        return True, left + rule.within
    return False, None


def _field(rule: Field, view: dict[str, Any]) -> bool:
    value: Any = view
    for part in rule.path:
        value = value.get(part) if isinstance(value, dict) else None
    want = rule.value
    try:
        if rule.op == "equals":
            return bool(value == want)
        if rule.op == "in":
            return value in want
        if rule.op == "contains":
            return isinstance(value, (list, tuple)) and want in value
        if value is None:
            return False
        return bool(value >= want) if rule.op == "at_least" else bool(value <= want)
    except TypeError:
        return False


def _first(times: Any) -> datetime | None:
    found = [t for t in times if t is not None]
    return min(found) if found else None


def membership(
    segments: Sequence[Segment], p: Profile, now: datetime, idle: timedelta
) -> tuple[list[str], datetime | None]:
    """The segments this profile is in now, and the next time any of them can change."""
    names, nexts = [], []
    for segment in segments:
        inside, until = evaluate(segment.rule, p, now, idle)
        if inside:
            names.append(segment.name)
        if until is not None and until > now:
            nexts.append(until)
    return names, min(nexts, default=None)
