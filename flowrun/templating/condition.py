"""Conditions: one Jinja2 expression deciding a branch (`if:`, `when:`, `where:`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import jinja2

from flowrun.errors import RenderError
from flowrun.templating.env import TEXT_ENV, TemplateLimit, reset_budget
from flowrun.templating.fields import FieldPath, FieldUse, asserted, field_uses
from flowrun.templating.raw import lenient_event
from flowrun.templating.template import TemplateSyntax, check_names, describe_undefined, reads_raw
from flowrun.templating.values import whole_expression


@lru_cache(maxsize=4096)
def _compiled_expression(source: str) -> Callable[..., Any]:
    return TEXT_ENV.compile_expression(source, undefined_to_none=False)


@dataclass(frozen=True)
class Condition:
    """A Jinja2 expression that decides a branch, e.g. `checkout.total_price >= 20`."""

    source: str
    where: str
    uses: tuple[FieldUse, ...] = ()
    asserted: frozenset[FieldPath] = frozenset()

    @property
    def fields(self) -> frozenset[FieldPath]:
        return frozenset(u.path for u in self.uses)

    @cached_property
    def reads_raw(self) -> bool:
        return reads_raw(self.uses)

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        try:
            reset_budget()
            variables = lenient_event(context) if self.reads_raw else context
            return bool(_compiled_expression(self.source)(**variables))
        except jinja2.UndefinedError as exc:
            raise RenderError(self.where, describe_undefined(exc)) from None
        except TemplateLimit as exc:
            raise RenderError(self.where, f"condition stopped: {exc}") from None
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise RenderError(self.where, f"condition {self.source!r} failed: {exc}") from None

    def observed(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The values the condition saw, for explaining a false result (what `in_segment('x')`
        answered; no function itself: a trace is stored)."""
        found: dict[str, Any] = {}
        ask = context.get("in_segment")
        for path in sorted(self.fields):
            if path[0] == "in_segment":
                if len(path) == 2 and callable(ask):
                    found[f"in_segment({path[1]!r})"] = bool(ask(path[1]))
                continue
            value = lookup(context, path)
            if not callable(value):
                found[".".join(path)] = value
        return found


_MISSING = "<missing>"


def lookup(context: Mapping[str, Any], path: FieldPath) -> Any:
    value: Any = context
    for part in path:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


@lru_cache(maxsize=8192)
def _condition_info(source: str) -> tuple[tuple[FieldUse, ...], frozenset[FieldPath]]:
    try:
        tree = TEXT_ENV.parse(f"{{{{ ({source}) }}}}")
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntax(exc.message or str(exc), 1, 1, "conditions are Jinja2 expressions") from None
    check_names(tree, source)
    try:
        _compiled_expression(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntax(exc.message or str(exc), 1) from None
    expr = whole_expression(tree)
    return field_uses(tree), asserted(expr) if expr is not None else frozenset()


def parse_condition(source: str, where: str) -> Condition:
    uses, asserted = _condition_info(source)
    return Condition(source, where, uses, asserted)
