"""Conditions and templates: Jinja2 in a sandbox with StrictUndefined.

Both are parsed when a flow loads (syntax errors and the fields they read are known
before anything runs); the Python code Jinja generates is built once on first use and
shared by identical sources.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
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


def _describe_undefined(exc: jinja2.UndefinedError) -> str:
    return f"{exc.message}; the event or earlier steps do not set it (use `| default(...)` if it may be missing)"


@dataclass(frozen=True)
class Template:
    """A string field of a flow: plain text, or Jinja2 with `{{ }}` / `{% %}`."""

    source: str
    where: str
    html: bool = False
    fields: frozenset[FieldPath] = field(default_factory=frozenset)

    @property
    def is_static(self) -> bool:
        return "{" not in self.source

    def render(self, context: Mapping[str, Any]) -> str:
        if self.is_static:
            return self.source
        try:
            return _compiled_template(self.source, self.html).render(context)
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


@lru_cache(maxsize=8192)
def _template_fields(source: str, html: bool) -> frozenset[FieldPath]:
    return frozenset(referenced_fields(_parse(HTML_ENV if html else TEXT_ENV, source)))


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
    return Template(source, where, html, _template_fields(source, html))


def parse_condition(source: str, where: str) -> Condition:
    return Condition(source, where, _condition_fields(source))


def iter_fields(items: Iterator[Template | Condition]) -> set[FieldPath]:
    out: set[FieldPath] = set()
    for item in items:
        out |= item.fields
    return out
