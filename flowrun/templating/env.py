"""The Jinja2 sandbox flows render in: StrictUndefined, store-aware filters, bounded work.

A template is shopper data plus an author's text, so one render is bounded: at most
MAX_OUTPUT characters out (and in any string or list it builds on the way), and at most
MAX_STEPS steps of work, counted at every hook Jinja's sandbox offers (attribute and item
lookups, calls, operators, filters, items of `range`). Jinja has no clock of its own to
stop a render; counting work instead keeps the bound the same on every machine.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

from flowrun.templating.money import DEFAULT_LOCALE, format_money
from flowrun.templating.raw import RawNull

MAX_OUTPUT = 1_000_000  # characters in one rendered value, or in any string or list built on the way
MAX_STEPS = 1_000_000  # lookups, calls, operators, filter calls and range items in one render
MAX_POWER_BITS = 4096  # `a ** b` may make an integer of at most this many bits


class TemplateLimit(Exception):
    """A render went past one of the bounds above."""


class _Budget(threading.local):
    steps = MAX_STEPS


_BUDGET = _Budget()


def reset_budget() -> None:
    _BUDGET.steps = MAX_STEPS


def tick(cost: int = 1) -> None:
    _BUDGET.steps -= cost
    if _BUDGET.steps < 0:
        raise TemplateLimit(
            f"the template did more than {MAX_STEPS:,} steps of work (loops, lookups, calls); "
            "loop over the event's data, not over large ranges"
        )


def check_size(value: Any) -> Any:
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_OUTPUT:
        raise TemplateLimit(f"the template built a value of {len(value):,} items; the limit is {MAX_OUTPUT:,}")
    return value


_WIDTH = re.compile(r"[%:][-+ #0<>^=,_]*(\d+)|\.(\d+)")


def _check_widths(text: Any) -> None:
    if isinstance(text, str):
        for match in _WIDTH.finditer(text):
            if int(match[1] or match[2]) > MAX_OUTPUT:
                raise TemplateLimit(f"a format width of {int(match[1] or match[2]):,} is over {MAX_OUTPUT:,}")


def _check_repeat(left: Any, right: Any) -> None:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and len(seq) * count > MAX_OUTPUT:
            raise TemplateLimit(f"repeating a value {count:,} times would pass the limit of {MAX_OUTPUT:,}")


def _check_power(base: Any, exponent: Any) -> None:
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and exponent * abs(base).bit_length() > MAX_POWER_BITS
    ):
        raise TemplateLimit(f"{base} ** {exponent} is too large a number to compute")


class _Range(Sequence[int]):
    """`range(...)` in a template: Jinja's bounded range, with each item counted as work."""

    def __init__(self, *args: int) -> None:
        self._range = safe_range(*args)

    def __len__(self) -> int:
        return len(self._range)

    def __getitem__(self, index: Any) -> Any:
        return self._range[index]

    def __iter__(self) -> Iterator[int]:
        for item in self._range:
            tick()
            yield item


def _bounded_filter(fn: Callable[..., Any]) -> Callable[..., Any]:
    first_argument = 2 if hasattr(fn, "jinja_pass_arg") else 1  # after the context and the value

    def run(*args: Any, **kwargs: Any) -> Any:
        tick()
        for arg in (*args[first_argument:], *kwargs.values()):
            if isinstance(arg, int) and not isinstance(arg, bool) and arg > MAX_OUTPUT:
                raise TemplateLimit(f"a filter argument of {arg:,} is over the limit of {MAX_OUTPUT:,}")
        if fn is _FORMAT and args:
            _check_widths(args[0])
        return check_size(fn(*args, **kwargs))

    for attribute in ("jinja_pass_arg",):
        if hasattr(fn, attribute):
            setattr(run, attribute, getattr(fn, attribute))
    run.__name__ = getattr(fn, "__name__", "filter")
    return run


def default_filter(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    # Stores send null for fields they do not know; treat null like a missing field.
    if isinstance(value, jinja2.Undefined) or value is None or (boolean and not value):
        return default_value
    return value


def _is_none(value: Any) -> bool:
    return value is None or isinstance(value, RawNull)


def _finalize(value: Any) -> Any:
    return "" if value is None else value


_FORMAT = jinja2.filters.do_format


class _CodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked(")  # `a ~ b`: no sandbox hook of its own
        super().visit_Concat(node, frame)
        self.write(")")


class FlowEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CodeGenerator

    def checked(self, value: Any) -> Any:
        tick()
        return check_size(value)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        tick()
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%":
            _check_widths(left)
        return check_size(super().call_binop(context, operator, left, right))

    def getattr(self, obj: Any, attribute: str) -> Any:
        budget = _BUDGET
        budget.steps -= 1
        if budget.steps < 0:
            tick(0)
        if type(obj) is dict and attribute in obj and not hasattr(dict, attribute):
            return obj[attribute]  # the common case, without the sandbox's AttributeError round trip
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        tick()
        if getattr(__obj, "__self__", None) is not None and isinstance(__obj.__self__, (str, list, tuple)):
            for arg in (*args, *kwargs.values()):
                if isinstance(arg, int) and not isinstance(arg, bool) and arg > MAX_OUTPUT:
                    raise TemplateLimit(f"an argument of {arg:,} is over the limit of {MAX_OUTPUT:,}")
        return check_size(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_widths(value.__self__)
        return wrapped


def make_env(*, autoescape: bool) -> FlowEnvironment:
    env = FlowEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        finalize=_finalize,
        keep_trailing_newline=True,
    )
    env.globals["range"] = _Range
    env.globals.pop("lipsum", None)  # placeholder text of any size: no use in a shop message
    env.filters["default"] = env.filters["d"] = default_filter
    env.filters["money"] = format_money
    env.filters = {name: _bounded_filter(fn) for name, fn in env.filters.items()}
    env.tests["none"] = _is_none
    return env


TEXT_ENV = make_env(autoescape=False)
HTML_ENV = make_env(autoescape=True)
GLOBALS = dict(TEXT_ENV.globals)
FILTERS = frozenset(TEXT_ENV.filters)
TESTS = frozenset(TEXT_ENV.tests)

__all__ = ["DEFAULT_LOCALE", "FILTERS", "GLOBALS", "HTML_ENV", "TESTS", "TEXT_ENV", "TemplateLimit", "make_env"]
