"""Conditions and templates: Jinja2 in a sandbox with StrictUndefined.

Both are parsed when a flow loads (syntax errors and the fields they read are known
before anything runs); the Python code Jinja generates is built once on first use and
shared by identical sources.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.runtime import new_context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from flowrun.errors import RenderError

FieldPath = tuple[str, ...]


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    # Stores send null for fields they do not know; treat null like a missing field.
    if isinstance(value, jinja2.Undefined) or value is None or (boolean and not value):
        return default_value
    return value


def _finalize(value: Any) -> Any:
    return "" if value is None else value


def _make_env(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        finalize=_finalize,
        keep_trailing_newline=True,
    )
    env.filters["default"] = _default
    env.filters["d"] = _default
    env.filters["money"] = lambda v, currency="": f"{float(v):,.2f} {currency}".strip() if v is not None else ""
    return env


TEXT_ENV = _make_env(autoescape=False)
HTML_ENV = _make_env(autoescape=True)


class TemplateSyntax(Exception):
    def __init__(self, message: str, line: int) -> None:
        self.message, self.line = message, line
        super().__init__(message)


def _parse(env: jinja2.Environment, source: str) -> nodes.Template:
    try:
        return env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntax(exc.message or str(exc), exc.lineno) from None


def referenced_fields(tree: nodes.Node) -> set[FieldPath]:
    """Attribute chains read by a template, e.g. {("customer", "email")}.

    Chains under `| default(...)` and `is defined` tests are left out: the author
    has said the field may be missing. Names bound by `{% set %}` or loops are left out.
    """
    bound = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    found: set[FieldPath] = set()
    _walk(tree, found, bound)
    return found


def _chain(node: nodes.Node) -> FieldPath | None:
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            if not isinstance(node.arg.value, str):
                parts.clear()  # an index into a list: keep only the path to the list
            else:
                parts.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            parts.append(node.name)
            return tuple(reversed(parts))
        else:
            return None


def _walk(node: nodes.Node, found: set[FieldPath], bound: set[str]) -> None:
    if isinstance(node, nodes.Filter) and node.name in ("default", "d"):
        for arg in node.args:
            _walk(arg, found, bound)
        return
    if isinstance(node, nodes.Test) and node.name in ("defined", "undefined", "none"):
        return
    if isinstance(node, (nodes.Getattr, nodes.Getitem, nodes.Name)):
        chain = _chain(node)
        if chain is not None:
            if chain[0] not in bound:
                found.add(chain)
            if isinstance(node, nodes.Getitem):
                _walk(node.arg, found, bound)
            return
    for child in node.iter_child_nodes():
        _walk(child, found, bound)


@lru_cache(maxsize=4096)
def _compiled_template(source: str, html: bool) -> jinja2.Template:
    return (HTML_ENV if html else TEXT_ENV).from_string(source)


@lru_cache(maxsize=4096)
def _compiled_expression(source: str) -> Callable[..., Any]:
    return TEXT_ENV.compile_expression(source, undefined_to_none=False)


GLOBALS = dict(TEXT_ENV.globals)


def _with_globals(context: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(context, dict) and "range" in context:
        return context
    return {**GLOBALS, **context}


def _describe_undefined(exc: jinja2.UndefinedError) -> str:
    return f"{exc.message}; the event or earlier steps do not set it (use `| default(...)` if it may be missing)"


@dataclass(frozen=True)
class Template:
    """A string field of a flow: plain text, or Jinja2 with `{{ }}` / `{% %}`."""

    source: str
    where: str
    html: bool = False
    fields: frozenset[FieldPath] = field(default_factory=frozenset)
    simple: tuple[Part, ...] | None = field(default=None, compare=False)

    @property
    def is_static(self) -> bool:
        return "{" not in self.source

    def render(self, context: Mapping[str, Any]) -> str:
        if self.is_static:
            return self.source
        if self.simple is not None:
            quick = _render_simple(self.simple, context)
            if quick is not _FALLBACK:
                return quick  # type: ignore[no-any-return]
        template = _compiled_template(self.source, self.html)
        try:
            # shared=True: render straight from the caller's dict instead of copying it
            # and the environment globals into a new one on every render.
            scope = new_context(template.environment, template.name, template.blocks, _with_globals(context), True)
            return template.environment.concat(template.root_render_func(scope))  # type: ignore[attr-defined]
        except jinja2.UndefinedError as exc:
            raise RenderError(self.where, _describe_undefined(exc)) from None
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise RenderError(self.where, f"template failed: {exc}") from None


@dataclass(frozen=True)
class Condition:
    """A Jinja2 expression that decides a branch, e.g. `checkout.total_price >= 20`."""

    source: str
    where: str
    fields: frozenset[FieldPath] = field(default_factory=frozenset)

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        try:
            return bool(_compiled_expression(self.source)(**context))
        except jinja2.UndefinedError as exc:
            raise RenderError(self.where, _describe_undefined(exc)) from None
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise RenderError(self.where, f"condition {self.source!r} failed: {exc}") from None

    def observed(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The values the condition saw, for explaining a false result."""
        seen: dict[str, Any] = {}
        for path in sorted(self.fields):
            seen[".".join(path)] = lookup(context, path)
        return seen


_MISSING = "<missing>"


def lookup(context: Mapping[str, Any], path: FieldPath) -> Any:
    value: Any = context
    for part in path:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


Part = str | FieldPath  # literal text, or a field to look up
_DICT_NAMES = frozenset(dir(dict))


def _simple_parts(tree: nodes.Template) -> tuple[Part, ...] | None:
    """`Hi {{ customer.first_name }}!` as ("Hi ", ("customer", "first_name"), "!"); None if not that simple."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts: list[Part] = []
    for node in tree.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append(node.data)
            continue
        chain = _chain(node) if isinstance(node, (nodes.Getattr, nodes.Name)) else None
        if chain is None or any(p in _DICT_NAMES for p in chain[1:]):
            return None
        parts.append(chain)
    return tuple(parts)


@lru_cache(maxsize=8192)
def _template_info(source: str, html: bool) -> tuple[frozenset[FieldPath], tuple[Part, ...] | None]:
    tree = _parse(HTML_ENV if html else TEXT_ENV, source)
    return frozenset(referenced_fields(tree)), None if html else _simple_parts(tree)


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


@lru_cache(maxsize=8192)
def _condition_fields(source: str) -> frozenset[FieldPath]:
    try:
        expr = TEXT_ENV.parse(f"{{{{ ({source}) }}}}")
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntax(exc.message or str(exc), 1) from None
    return frozenset(referenced_fields(expr))


def parse_template(source: str, where: str, *, html: bool = False) -> Template:
    """Parse once per distinct source (flows repeat `{{ customer.email }}` endlessly)."""
    if "{" not in source:
        return Template(source, where, html)
    fields, simple = _template_info(source, html)
    return Template(source, where, html, fields, simple)


def parse_condition(source: str, where: str) -> Condition:
    return Condition(source, where, _condition_fields(source))
