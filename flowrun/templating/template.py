"""Templates (a string parameter of a flow, or a template file), parsed and checked once when
a flow loads.

Parsing rejects everything Jinja could reject later: syntax, unknown filters and tests,
and what its compiler asserts. The compiled code is built once per distinct source (and
locale) and shared.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.runtime import new_context

from flowrun.errors import RenderError
from flowrun.templating.env import FILTERS, GLOBALS, HTML_ENV, MAX_OUTPUT, TESTS, TEXT_ENV, TemplateLimit, reset_budget
from flowrun.templating.fields import FieldPath, FieldUse, chain_of, field_uses, names_used
from flowrun.templating.money import DEFAULT_LOCALE
from flowrun.templating.raw import lenient_event
from flowrun.templating.values import plain_value, whole_expression


class TemplateSyntax(Exception):
    """A template Jinja cannot run: where (line and column in its own source) and the fix."""

    def __init__(self, message: str, line: int, column: int = 1, hint: str = "") -> None:
        self.message, self.line, self.column, self.hint = message, line, column, hint
        super().__init__(message)


def column_of(source: str, line: int, needle: str) -> int:
    """1-based column of `needle` on a 1-based line of `source` (1 if it is not there)."""
    lines = source.splitlines()
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    at = text.find(needle)
    return at + 1 if at >= 0 else len(text) - len(text.lstrip()) + 1


def _parse(env: jinja2.Environment, source: str) -> nodes.Template:
    try:
        return env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntax(exc.message or str(exc), exc.lineno, 1, "check the {{ }} and {% %} pairs") from None


def check_names(tree: nodes.Node, source: str) -> None:
    for kind, name, line in names_used(tree):
        known = FILTERS if kind == "filter" else TESTS
        if name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        before = r"\|\s*" if kind == "filter" else r"\bis\s+(?:not\s+)?"
        lines = source.splitlines()
        found = re.search(rf"{before}({re.escape(name)})\b", lines[line - 1]) if 0 < line <= len(lines) else None
        column = found.start(1) + 1 if found else 1
        hint = f"did you mean {close[0]!r}?" if close else f"see the Jinja {kind}s, or flowrun's `money` and `default`"
        raise TemplateSyntax(f"unknown {kind} {name!r}", line, column, hint)


def _with_locale(tree: nodes.Template, locale: str) -> nodes.Template:
    """Every `money(...)` without its own `locale=` gets the flow's."""
    for node in tree.find_all(nodes.Filter):
        if node.name == "money" and not any(k.key == "locale" for k in node.kwargs):
            node.kwargs.append(nodes.Keyword("locale", nodes.Const(locale)))  # type: ignore[arg-type]
    return tree


@dataclass(frozen=True)
class _Info:
    uses: tuple[FieldUse, ...]
    simple: tuple[Part, ...] | None
    whole: bool


Part = str | FieldPath  # literal text, or a field to look up
_DICT_NAMES = frozenset(dir(dict))


@lru_cache(maxsize=8192)
def _template_info(source: str, html: bool, locale: str) -> _Info:
    env = HTML_ENV if html else TEXT_ENV
    tree = _parse(env, source)
    check_names(tree, source)
    try:
        env.compile(_with_locale(_parse(env, source), locale))
    except jinja2.TemplateSyntaxError as exc:  # includes TemplateAssertionError
        raise TemplateSyntax(exc.message or str(exc), exc.lineno or 1) from None
    return _Info(field_uses(tree), None if html else _simple_parts(tree), whole_expression(tree) is not None)


@lru_cache(maxsize=4096)
def _compiled_template(source: str, html: bool, locale: str) -> jinja2.Template:
    env = HTML_ENV if html else TEXT_ENV
    return env.from_string(_with_locale(_parse(env, source), locale))


@lru_cache(maxsize=4096)
def _compiled_value(source: str, locale: str) -> jinja2.Template:
    """`{{ expr }}` as code that stores the expression's value instead of printing it."""
    tree = _with_locale(_parse(TEXT_ENV, source), locale)
    expr = whole_expression(tree)
    assert expr is not None
    body = [nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)]
    return TEXT_ENV.from_string(nodes.Template(body, lineno=1))


def _with_globals(context: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(context, dict) and "range" in context:
        return context
    return {**GLOBALS, **context}


def describe_undefined(exc: jinja2.UndefinedError) -> str:
    return f"{exc.message}; the event or earlier steps do not set it (use `| default(...)` if it may be null)"


def reads_raw(uses: tuple[FieldUse, ...]) -> bool:
    return any(u.path[:2] == ("event", "raw") or u.path == ("event",) for u in uses)


@dataclass(frozen=True)
class Template:
    """A string field of a flow: plain text, or Jinja2 with `{{ }}` / `{% %}`.

    `typed`: the parameter takes more than text and the whole value is one expression, so
    `render_value` hands on the expression's own value (number, list, object, boolean)."""

    source: str
    where: str
    html: bool = False
    uses: tuple[FieldUse, ...] = ()
    simple: tuple[Part, ...] | None = field(default=None, compare=False)
    locale: str = DEFAULT_LOCALE
    whole: bool = False
    typed: bool = False

    @property
    def is_static(self) -> bool:
        return "{" not in self.source

    @property
    def fields(self) -> frozenset[FieldPath]:
        return frozenset(u.path for u in self.uses)

    @cached_property
    def reads_raw(self) -> bool:
        return reads_raw(self.uses)

    def render_value(self, context: Mapping[str, Any]) -> Any:
        """What a parameter gets: typed for a typed parameter, else the text."""
        if not self.typed:
            return self.render(context)
        code = _compiled_value(self.source, self.locale)
        variables = _with_globals(lenient_event(context) if self.reads_raw else context)
        scope = new_context(code.environment, code.name, code.blocks, variables, True, None, {})
        try:
            reset_budget()
            for _ in code.root_render_func(scope):  # type: ignore[attr-defined]
                pass
            return plain_value(scope.vars["result"])
        except jinja2.UndefinedError as exc:
            raise RenderError(self.where, describe_undefined(exc)) from None
        except TemplateLimit as exc:
            raise RenderError(self.where, f"template stopped: {exc}") from None
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise RenderError(self.where, f"template failed: {exc}") from None

    def render(self, context: Mapping[str, Any]) -> str:
        if self.is_static:
            return self.source
        if self.simple is not None:
            quick = _render_simple(self.simple, context)
            if quick is not _FALLBACK:
                return quick  # type: ignore[no-any-return]
        template = _compiled_template(self.source, self.html, self.locale)
        variables = _with_globals(lenient_event(context) if self.reads_raw else context)
        try:
            reset_budget()
            # shared=True: render straight from the caller's dict instead of copying it
            # and the environment globals into a new one on every render.
            scope = new_context(template.environment, template.name, template.blocks, variables, True)
            return _bounded_concat(template.root_render_func(scope))  # type: ignore[attr-defined]
        except jinja2.UndefinedError as exc:
            raise RenderError(self.where, describe_undefined(exc)) from None
        except TemplateLimit as exc:
            raise RenderError(self.where, f"template stopped: {exc}") from None
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise RenderError(self.where, f"template failed: {exc}") from None


def _bounded_concat(chunks: Any) -> str:
    out: list[str] = []
    append = out.append
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise TemplateLimit(f"the rendered text passed {MAX_OUTPUT:,} characters")
        append(chunk)
    return "".join(out)


def _simple_parts(tree: nodes.Template) -> tuple[Part, ...] | None:
    """`Hi {{ customer.first_name }}!` as ("Hi ", ("customer", "first_name"), "!"); None if not that simple."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts: list[Part] = []
    for node in tree.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append(node.data)
            continue
        chain = chain_of(node) if isinstance(node, (nodes.Getattr, nodes.Name)) else None
        if chain is None or any(p in _DICT_NAMES for p in chain[1:]) or chain[:2] == ("event", "raw"):
            return None
        parts.append(chain)
    return tuple(parts)


_FALLBACK = object()


def _render_simple(parts: tuple[Part, ...], context: Mapping[str, Any]) -> Any:
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        value: Any = context
        for key in part:
            if not isinstance(value, Mapping) or key not in value:
                return _FALLBACK  # let Jinja produce the exact value or error
            value = value[key]
        out.append("" if value is None else str(value))
    return "".join(out)


def parse_template(
    source: str, where: str, *, html: bool = False, locale: str = DEFAULT_LOCALE, typed: bool = False
) -> Template:
    """Parse once per distinct source (flows repeat `{{ customer.email }}` endlessly).

    `typed`: the parameter takes more than text; only a whole expression is then typed."""
    if "{" not in source:
        return Template(source, where, html, locale=locale)
    info = _template_info(source, html, locale)
    return Template(source, where, html, info.uses, info.simple, locale, info.whole, typed and info.whole)


def expression_tree(source: str) -> nodes.Node | None:
    """The expression of a whole-expression template, for type checks at validate."""
    return whole_expression(_parse(TEXT_ENV, source))
