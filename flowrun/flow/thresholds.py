"""Thresholds a flow names where it starts (`after:`, `below:`, `above:`), and the check
that the flow's `if:` can ever be true for the derived events that start it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from jinja2 import nodes

from flowrun.durations import DurationSyntaxError, parse_duration
from flowrun.errors import YamlPath
from flowrun.flow.model import EventTrigger
from flowrun.templating import TEXT_ENV, Condition

LONGEST_QUIET = timedelta(days=36525)  # no customer is waited for longer than a century

# Which threshold key belongs to which derived event, and what it means.
KEYS = {
    "after": ("customer.inactive", "quiet this long since the last order", "after: 180d"),
    "below": ("inventory.low", "stock fell under N", "below: 10"),
    "above": ("inventory.restocked", "stock rose over N", "above: 0"),
}


def trigger_thresholds(
    value: dict[str, Any], events: tuple[str, ...], path: YamlPath, report: Callable[..., None]
) -> dict[str, Any]:
    """The `after`/`below`/`above` of an `on: {event: ...}` mapping, each checked against
    the event it belongs to: a threshold on any other event would never be used."""
    found: dict[str, Any] = {}
    for key, (event_type, meaning, example) in KEYS.items():
        if key not in value:
            continue
        where = (*path, key)
        if events != (event_type,):
            other = next((k for k, (t, _, _) in KEYS.items() if (t,) == events), None)
            if other:
                hint = f"for {events[0]} write `{KEYS[other][2]}`"
            elif key == "after":
                hint = "to act some time after another event, start on it and begin the steps with `- wait: 180d`"
            else:
                hint = f"start on {{event: {event_type}, {example}}}, or remove `{key}:`"
            report(where, f"`{key}:` ({meaning}) belongs to `event: {event_type}` alone", hint, key=True)
            continue
        if key == "after":
            try:
                span = parse_duration(str(value[key]))
            except DurationSyntaxError as exc:
                report(where, str(exc).split(";")[0], "whole days or weeks, e.g. 90d, 180d or 26w")
                continue
            if span > LONGEST_QUIET:
                report(
                    where, f"`after: {value[key]}` is more than a century of quiet: it would never fire", "e.g. 180d"
                )
                continue
            if span < timedelta(days=1) or span % timedelta(days=1):
                report(
                    where,
                    f"customer.inactive counts whole days of quiet; {value[key]!r} is not a whole number of days",
                    "write days or weeks, e.g. 90d, 180d or 26w",
                )
                continue
            found[key] = span
        else:
            found[key] = value[key]
    return found


# -- can the condition ever be true? -----------------------------------------------------


@dataclass(frozen=True)
class Known:
    """What the events that start a flow are known to carry in one field: one of `values`,
    or any whole number from `low` to `high` (None: unbounded)."""

    field: tuple[str, ...]
    because: str
    values: frozenset[int] | None = None
    low: int | None = None
    high: int | None = None


def known_fields(trigger: EventTrigger) -> list[Known]:
    from flowrun.runtime.settings import INACTIVE_AFTER

    if trigger.events == ("customer.inactive",):
        if trigger.after is not None:
            days = frozenset({trigger.after.days})
            because = f"the flow starts after {trigger.after.days} quiet days"
        else:
            days = frozenset(d.days for d in INACTIVE_AFTER)
            listed = ", ".join(str(d) for d in sorted(days))
            because = f"with no `after:` the flow starts at the project's thresholds (default {listed} days)"
        return [Known(("inactivity", "days"), because, values=days)]
    level = trigger.stock_level
    if level is None:
        return []
    if trigger.events == ("inventory.low",):
        because = f"the flow starts when stock falls under {trigger.below}"
        available = Known(("inventory", "available"), because, high=level)
    elif trigger.events == ("inventory.restocked",):
        because = f"the flow starts when stock rises over {trigger.above}"
        available = Known(("inventory", "available"), because, low=level + 1)
    else:
        return []
    return [available, Known(("inventory", "threshold"), because, values=frozenset({level}))]


_SYMBOLS = {"eq": "==", "ne": "!=", "lt": "<", "lteq": "<=", "gt": ">", "gteq": ">="}
_FLIPPED = {"eq": "eq", "ne": "ne", "lt": "gt", "lteq": "gteq", "gt": "lt", "gteq": "lteq"}


def _chain(node: nodes.Node) -> tuple[str, ...] | None:
    parts: list[str] = []
    while isinstance(node, nodes.Getattr):
        parts.append(node.attr)
        node = node.node
    if isinstance(node, nodes.Name):
        return (node.name, *reversed(parts))
    return None


def _number(node: nodes.Node) -> float | None:
    if isinstance(node, nodes.Const) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, nodes.Neg):
        inner = _number(node.node)
        return -inner if inner is not None else None
    return None


def _comparisons(expression: nodes.Node) -> Iterator[tuple[tuple[str, ...], str, float]]:
    """`field op number` facts every true evaluation needs: the comparisons joined by a
    top-level `and` (chains like `30 <= x < 90` count as two). Anything else is left out."""
    if isinstance(expression, nodes.And):
        yield from _comparisons(expression.left)
        yield from _comparisons(expression.right)
        return
    if not isinstance(expression, nodes.Compare):
        return
    left = expression.expr
    for operand in expression.ops:
        right = operand.expr
        if operand.op in _SYMBOLS:
            field, number = _chain(left), _number(right)
            if field is not None and number is not None:
                yield field, operand.op, number
            field, number = _chain(right), _number(left)
            if field is not None and number is not None:
                yield field, _FLIPPED[operand.op], number
        left = right


def _holds(value: int, op: str, number: float) -> bool:
    return {
        "eq": value == number,
        "ne": value != number,
        "lt": value < number,
        "lteq": value <= number,
        "gt": value > number,
        "gteq": value >= number,
    }[op]


def _satisfiable(known: Known, tests: list[tuple[str, float]]) -> bool:
    if known.values is not None:
        return any(all(_holds(v, op, n) for op, n in tests) for v in known.values)
    low = -math.inf if known.low is None else float(known.low)
    high = math.inf if known.high is None else float(known.high)
    excluded: set[float] = set()
    for op, n in tests:
        if op == "eq":
            if n != int(n):
                return False
            low, high = max(low, n), min(high, n)
        elif op in ("lt", "lteq"):
            high = min(high, (math.ceil(n) - 1 if op == "lt" else math.floor(n)))
        elif op in ("gt", "gteq"):
            low = max(low, (math.floor(n) + 1 if op == "gt" else math.ceil(n)))
        else:
            excluded.add(n)
    return low <= high and not (low == high and low in excluded)


def never_true(trigger: EventTrigger, condition: Condition) -> list[tuple[str, str]]:
    """(message, fix) for each field the condition needs a value of that the starting
    events never carry: such a flow validates but never starts a run."""
    known = {k.field: k for k in known_fields(trigger)}
    if not known:
        return []
    try:
        tree = TEXT_ENV.parse(f"{{{{ ({condition.source}) }}}}")
    except Exception:  # a syntax error is reported where the condition is parsed
        return []
    output = tree.body[0]
    if not isinstance(output, nodes.Output) or len(output.nodes) != 1:
        return []
    tests: dict[tuple[str, ...], list[tuple[str, float]]] = {}
    for field, op, number in _comparisons(output.nodes[0]):
        if field in known:
            tests.setdefault(field, []).append((op, number))
    problems = []
    for field, field_tests in tests.items():
        fact = known[field]
        if _satisfiable(fact, field_tests):
            continue
        needs = " and ".join(f"{'.'.join(field)} {_SYMBOLS[op]} {_shown(n)}" for op, n in field_tests)
        problems.append((f"`if:` is never true: {fact.because}, so {needs} never holds", _fix(trigger, field_tests)))
    return problems


def _shown(number: float) -> str:
    return str(int(number)) if number == int(number) else str(number)


def _fix(trigger: EventTrigger, tests: list[tuple[str, float]]) -> str:
    if trigger.events == ("customer.inactive",):
        wanted = next((n for op, n in tests if op in ("eq", "gteq")), None)
        if wanted is None:
            wanted = next((n + 1 for op, n in tests if op == "gt"), None)
        days = f"{int(wanted)}d" if wanted is not None and wanted >= 1 else "180d"
        return f"name the threshold where the flow starts: on: {{event: customer.inactive, after: {days}}}"
    return "change the trigger's `below:`/`above:` or the condition so that both can hold"
