"""Typed values: what a parameter that is one whole expression hands on, and its JSON type.

`points: "{{ order.total_price * 10 }}"` is the number 1500, `tags: "{{ customer.tags }}"` a
list, `json: "{{ event.raw }}"` an object: a parameter whose whole text is one `{{ }}` keeps
the expression's type when the action's schema takes more than text there. Mixed text
(`"Order {{ order.number }}"`) is always text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import jinja2
from jinja2 import nodes
from markupsafe import Markup

from flowrun.templating.fields import FieldPath, chain_of
from flowrun.templating.raw import RawNull

JsonTypes = frozenset[str]
ANY: JsonTypes = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})
STRING, NUMBER, INTEGER = frozenset({"string"}), frozenset({"number"}), frozenset({"integer"})
BOOLEAN, ARRAY, OBJECT, NULL = frozenset({"boolean"}), frozenset({"array"}), frozenset({"object"}), frozenset({"null"})


def plain_value(value: Any) -> Any:
    """A rendered value as JSON-ready data: a missing raw key is null, a whole Decimal an int."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, RawNull):
        return None
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # StrictUndefined: a missing field is an error here too
    if isinstance(value, (str, Markup)):
        return str(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain_value(v) for v in value]
    return str(value)


def whole_expression(tree: nodes.Template) -> nodes.Expr | None:
    """The expression if the template is exactly `{{ expr }}`, else None."""
    if len(tree.body) == 1 and isinstance(tree.body[0], nodes.Output) and len(tree.body[0].nodes) == 1:
        node = tree.body[0].nodes[0]
        if not isinstance(node, nodes.TemplateData):
            return node
    return None


def schema_types(schema: Any) -> JsonTypes:
    """The JSON types a parameter's schema takes (no `type`: any)."""
    if not isinstance(schema, Mapping):
        return ANY
    if "const" in schema:
        return _type_of_value(schema["const"])
    if "enum" in schema:
        return frozenset().union(*(_type_of_value(v) for v in schema["enum"]))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return frozenset().union(*(schema_types(s) for s in schema[key]))
    kind = schema.get("type")
    if kind is None:
        return ANY
    return frozenset([kind] if isinstance(kind, str) else kind)


def compatible(found: JsonTypes, wanted: JsonTypes) -> bool:
    found, wanted = _numbers(found), _numbers(wanted)
    return bool(found & wanted)


def _numbers(types: JsonTypes) -> JsonTypes:
    return types | {"number", "integer"} if types & {"number", "integer"} else types


def _type_of_value(value: Any) -> JsonTypes:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, (float, Decimal)):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, (list, tuple)):
        return ARRAY
    if isinstance(value, dict):
        return OBJECT
    return ANY


_TEXT_FILTERS = frozenset(
    [
        "string",
        "upper",
        "lower",
        "title",
        "capitalize",
        "trim",
        "join",
        "format",
        "replace",
        "truncate",
        "money",
        "tojson",
        "urlencode",
        "e",
        "escape",
        "safe",
        "striptags",
        "center",
        "indent",
        "wordwrap",
        "filesizeformat",
        "urlize",
        "xmlattr",
    ]
)
_LIST_FILTERS = frozenset(
    [
        "list",
        "sort",
        "unique",
        "reverse",
        "map",
        "select",
        "reject",
        "selectattr",
        "rejectattr",
        "batch",
        "slice",
        "dictsort",
    ]
)
_FILTER_TYPES: dict[str, JsonTypes] = {
    **{name: STRING for name in _TEXT_FILTERS},
    **{name: ARRAY for name in _LIST_FILTERS},
    "int": INTEGER,
    "length": INTEGER,
    "count": INTEGER,
    "wordcount": INTEGER,
    "float": NUMBER,
    "round": NUMBER,
    "abs": NUMBER,
    "sum": NUMBER,
    "items": ARRAY,
}

FieldTypes = Callable[[FieldPath], JsonTypes | None]


def expression_types(expr: nodes.Node, field_types: FieldTypes) -> JsonTypes:
    """The JSON types an expression can produce, as far as it can be told before running."""
    if isinstance(expr, nodes.Const):
        return _type_of_value(expr.value)
    if isinstance(expr, (nodes.List, nodes.Tuple)):
        return ARRAY
    if isinstance(expr, nodes.Dict):
        return OBJECT
    if isinstance(expr, (nodes.Getattr, nodes.Getitem, nodes.Name)):
        chain = chain_of(expr)
        found = field_types(chain) if chain else None
        return found if found is not None else ANY
    if isinstance(expr, (nodes.Compare, nodes.Not, nodes.Test)):
        return BOOLEAN
    if isinstance(expr, nodes.Concat):
        return STRING
    if isinstance(expr, nodes.CondExpr):
        other = expression_types(expr.expr2, field_types) if expr.expr2 is not None else NULL
        return expression_types(expr.expr1, field_types) | other
    if isinstance(expr, (nodes.And, nodes.Or)):
        return expression_types(expr.left, field_types) | expression_types(expr.right, field_types)
    if isinstance(expr, nodes.Filter):
        if expr.name in ("default", "d"):
            operand = expression_types(expr.node, field_types) - NULL if expr.node is not None else ANY
            fallback = expression_types(expr.args[0], field_types) if expr.args else STRING
            return operand | fallback
        return _FILTER_TYPES.get(expr.name, ANY)
    if isinstance(expr, (nodes.BinExpr, nodes.UnaryExpr)):
        return _arithmetic(expr, field_types)
    return ANY


def _arithmetic(expr: nodes.Node, field_types: FieldTypes) -> JsonTypes:
    operands = [expr.left, expr.right] if isinstance(expr, nodes.BinExpr) else [expr.node]  # type: ignore[attr-defined]
    kinds = [expression_types(o, field_types) - NULL for o in operands]
    if any(k & {"string", "array"} for k in kinds) and isinstance(expr, (nodes.Add, nodes.Mul, nodes.Mod)):
        return ANY
    if isinstance(expr, nodes.Div):
        return NUMBER
    if all(k <= INTEGER for k in kinds):
        return INTEGER
    return NUMBER
