"""Rules that can never hold together: found at load time so `validate` refuses the segment."""

from __future__ import annotations

from flowrun.segments import model as m

BOTH_WAYS = "the last order is both older than `before` and newer than `after`"


def impossible(rule: m.Rule) -> str:
    """Why `rule` can never match ("" if it can)."""
    if isinstance(rule, m.Spent):
        if rule.under is not None and rule.under <= 0:
            return f"spend under {rule.under} {rule.currency} (spend is never below 0)"
        if rule.over is not None and rule.under is not None and rule.over >= rule.under:
            return f"spend over {rule.over} and under {rule.under} {rule.currency}"
    if isinstance(rule, m.Ordered) and rule.at_least is not None and rule.at_most is not None:
        return f"at least {rule.at_least} and at most {rule.at_most} orders" if rule.at_least > rule.at_most else ""
    if isinstance(rule, m.LastOrder) and rule.before is not None and rule.after is not None:
        return BOTH_WAYS if rule.before >= rule.after else ""
    if isinstance(rule, m.AnyOf):
        reasons = [impossible(r) for r in rule.rules]
        return reasons[0] if all(reasons) else ""
    if isinstance(rule, m.All):
        for r in rule.rules:
            why = impossible(r)
            if why:
                return why
        return _clash(rule.rules)
    return ""


def _clash(rules: tuple[m.Rule, ...]) -> str:
    """Pairs in one `all:` that contradict each other."""
    for a in rules:
        for b in rules:
            why = _pair(a, b)
            if why:
                return why
    return ""


def _pair(a: m.Rule, b: m.Rule) -> str:
    if isinstance(a, m.Not) and a.rule == b:
        return "a rule and its `not`"
    if isinstance(a, m.Engaged) and isinstance(b, m.Engaged) and a.engaged and not b.engaged and b.within >= a.within:
        return f"engaged within {a.within.days}d but not within {b.within.days}d"
    if isinstance(a, m.LastOrder) and isinstance(b, m.LastOrder) and a.before is not None and b.after is not None:
        return BOTH_WAYS if a.before >= b.after else ""
    if isinstance(a, m.Ordered) and isinstance(b, m.Ordered) and a.within == b.within:
        low, high = a.at_least, b.at_most
        return (
            f"at least {low} and at most {high} orders" if low is not None and high is not None and low > high else ""
        )
    if isinstance(a, m.Spent) and isinstance(b, m.Spent) and (a.currency, a.within) == (b.currency, b.within):
        over, under = a.over, b.under
        clash = over is not None and under is not None and over >= under
        return f"spend over {over} and under {under} {a.currency}" if clash else ""
    return ""
