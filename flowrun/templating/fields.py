"""What a template or condition reads, and how: the facts `validate` checks fields with.

Every read of a field (`customer.first_name`) is a FieldUse:
- `optional`: under `| default(...)` or `is defined`: the author said it may be missing
  (in a flow with several trigger types, it must exist in at least one of them);
- `exposed`: its value is printed or handed on as it is, so a null becomes an empty string;
- `guarded`: inside `{% if <field> %}` (or `... if <field> else ...`): null was ruled out.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import nodes

FieldPath = tuple[str, ...]

FALLBACK_FILTERS = frozenset({"default", "d"})
OPTIONAL_TESTS = frozenset({"defined", "undefined"})
# Filters that hand a null on as text: `{{ customer.first_name | title }}` is still empty.
PASS_THROUGH = frozenset(
    {"upper", "lower", "title", "capitalize", "trim", "e", "escape", "safe", "string", "striptags", "truncate"}
)


@dataclass(frozen=True)
class FieldUse:
    path: FieldPath
    line: int
    optional: bool = False
    exposed: bool = False
    guarded: bool = False


def chain_of(node: nodes.Node) -> FieldPath | None:
    """`customer.email` -> ("customer", "email"); an index into a list keeps the path to the list."""
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            if not isinstance(node.arg.value, str):
                parts.clear()
            else:
                parts.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            parts.append(node.name)
            return tuple(reversed(parts))
        else:
            return None


def asserted(expr: nodes.Node) -> frozenset[FieldPath]:
    """Fields a true condition proves are not null: `a and b`, `a > 3`, `a is not none`, `a == 'x'`."""
    chain = chain_of(expr) if isinstance(expr, (nodes.Getattr, nodes.Getitem, nodes.Name)) else None
    if chain is not None:
        return frozenset({chain})
    if isinstance(expr, nodes.And):
        return asserted(expr.left) | asserted(expr.right)
    if isinstance(expr, nodes.Or):
        return asserted(expr.left) & asserted(expr.right)
    if isinstance(expr, nodes.Not) and isinstance(expr.node, nodes.Test) and expr.node.name == "none":
        return asserted(expr.node.node)
    if isinstance(expr, nodes.Compare):
        operands = [expr.expr, *(op.expr for op in expr.ops)]
        if any(isinstance(o, nodes.Const) and o.value is None for o in operands) and any(
            op.op in ("eq", "in") for op in expr.ops
        ):
            return frozenset()
        found: set[FieldPath] = set()
        for operand in operands:
            found |= asserted(operand) if isinstance(operand, (nodes.Getattr, nodes.Getitem, nodes.Name)) else set()
        return frozenset(found)
    return frozenset()


def _is_guarded(path: FieldPath, guards: frozenset[FieldPath]) -> bool:
    return any(path == g[: len(path)] for g in guards)


class _Walker:
    def __init__(self, bound: set[str]) -> None:
        self.bound = bound
        self.uses: list[FieldUse] = []

    def visit(self, node: nodes.Node, optional: bool, exposed: bool, guards: frozenset[FieldPath]) -> None:
        if isinstance(node, nodes.Output):
            for printed in node.nodes:
                self.visit(printed, optional, not isinstance(printed, nodes.TemplateData), guards)
        elif isinstance(node, nodes.If):
            self.visit(node.test, optional, False, guards)
            inner = guards | asserted(node.test)
            for statement in node.body:
                self.visit(statement, optional, False, inner)
            for statement in (*node.elif_, *node.else_):
                self.visit(statement, optional, False, guards)
        elif isinstance(node, nodes.CondExpr):
            self.visit(node.test, optional, False, guards)
            self.visit(node.expr1, optional, exposed, guards | asserted(node.test))
            if node.expr2 is not None:
                self.visit(node.expr2, optional, exposed, guards)
        elif isinstance(node, nodes.Filter):
            self._filter(node, optional, exposed, guards)
        elif isinstance(node, nodes.Test):
            if node.node is not None:
                self.visit(node.node, optional or node.name in OPTIONAL_TESTS, False, guards)
            for arg in node.args:
                self.visit(arg, optional, False, guards)
        elif isinstance(node, nodes.Or):
            self.visit(node.left, optional, False, guards)
            self.visit(node.right, optional, exposed, guards)
        elif isinstance(node, nodes.Concat):
            for part in node.nodes:
                self.visit(part, optional, exposed, guards)
        elif isinstance(node, nodes.Call) and (named := _segment_named(node)):
            self.uses.append(FieldUse(("in_segment", named), node.lineno))  # validate checks the name exists
        elif isinstance(node, (nodes.Getattr, nodes.Getitem, nodes.Name)) and (chain := chain_of(node)):
            if chain[0] not in self.bound:
                self.uses.append(FieldUse(chain, node.lineno, optional, exposed, _is_guarded(chain, guards)))
            if isinstance(node, nodes.Getitem):
                self.visit(node.arg, optional, False, guards)
        else:
            for child in node.iter_child_nodes():
                self.visit(child, optional, False, guards)

    def _filter(self, node: nodes.Filter, optional: bool, exposed: bool, guards: frozenset[FieldPath]) -> None:
        if node.node is not None:
            if node.name in FALLBACK_FILTERS:
                self.visit(node.node, True, False, guards)
            else:
                self.visit(node.node, optional, exposed and node.name in PASS_THROUGH, guards)
        for arg in (*node.args, *(k.value for k in node.kwargs)):
            self.visit(arg, optional, exposed and node.name in FALLBACK_FILTERS, guards)


def _segment_named(call: nodes.Call) -> str | None:
    """`in_segment('vip')` -> "vip"; None for any other call, or a name that is not a literal."""
    if not (isinstance(call.node, nodes.Name) and call.node.name == "in_segment" and len(call.args) == 1):
        return None
    arg = call.args[0]
    return arg.value if isinstance(arg, nodes.Const) and isinstance(arg.value, str) else None


def field_uses(tree: nodes.Node) -> tuple[FieldUse, ...]:
    """Every field read, in source order; names set by `{% set %}` or loops are left out."""
    bound = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    walker = _Walker(bound)
    walker.visit(tree, False, False, frozenset())
    return tuple(walker.uses)


def names_used(tree: nodes.Node) -> list[tuple[str, str, int]]:
    """(kind, name, line) of every filter and test: kind is `filter` or `test`."""
    found = [("filter", n.name, n.lineno) for n in tree.find_all(nodes.Filter)]
    found += [("test", n.name, n.lineno) for n in tree.find_all(nodes.Test)]
    return sorted(found, key=lambda item: item[2])
