"""What the webhook port accepts at most: a JSON object of bounded depth, and header values
that fit the inbox's columns.

A body that can never become an event is refused here with a 4xx, before it is stored: a
body the worker cannot read would be acknowledged to the store and then dropped. The inbox
columns bound what headers may carry (PostgreSQL refuses a value longer than its column, or
one with a NUL byte, and the whole batch with it), and none of those headers is signed: a
replayed delivery with a 10,000-character id must be refused alone, not break intake.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64  # Shopify's deepest bodies nest about 7 levels; WooCommerce meta_data a few more
DELIVERY_ID_CHARS = 200  # inbox.delivery_id
TOPIC_CHARS = 100  # inbox.topic
TIMESTAMP_CHARS = 64  # inbox.triggered_at
_PRINTABLE = re.compile(r"[\x20-\x7e]+")  # visible ASCII and space: no NUL, no control characters
CUSTOM_TYPE = re.compile(r"custom\.[A-Za-z0-9_][A-Za-z0-9_.:-]*")


class OutOfBounds(ValueError):
    """The input cannot be accepted; `reason` is the short name the port reports and counts."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object nested at most MAX_DEPTH levels, or OutOfBounds."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise OutOfBounds("too_deep", f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OutOfBounds("not_json", f"body is not JSON: {exc}") from None
    except ValueError as exc:  # the interpreter's limit on integer digits (4,300)
        raise OutOfBounds("number_too_long", f"a number in the body is too long: {exc}") from None
    if not isinstance(data, dict):
        raise OutOfBounds("not_an_object", f"the body is a JSON {_kind(data)}; a webhook body is a JSON object")
    # Every level needs a bracket: with fewer brackets than the limit no walk is needed.
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and _deeper_than(data, MAX_DEPTH):
        raise OutOfBounds("too_deep", f"JSON nested deeper than {MAX_DEPTH} levels")
    return data


def _deeper_than(data: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        for item in value.values() if isinstance(value, dict) else value:
            if isinstance(item, dict | list):
                stack.append((item, depth + 1))
    return False


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "array", str: "string", bool: "boolean"}.get(type(value), "number")


def header_value(name: str, value: str | None, most: int) -> str | None:
    """A header stored in a column: printable ASCII of at most `most` characters, or OutOfBounds."""
    if value is None or value == "":
        return None
    if len(value) > most:
        raise OutOfBounds("bad_header", f"{name} is {len(value)} characters long; at most {most} are accepted")
    if not _PRINTABLE.fullmatch(value):
        raise OutOfBounds("bad_header", f"{name} has characters other than printable ASCII")
    return value


def delivery_id(name: str, value: str | None) -> str | None:
    return header_value(name, value, DELIVERY_ID_CHARS)


def custom_type(value: Any) -> str:
    """A generic webhook may emit only custom.<name> events, short enough for the topic column."""
    if not isinstance(value, str) or not CUSTOM_TYPE.fullmatch(value):
        raise OutOfBounds(
            "not_custom",
            f"type {str(value)[:80]!r} is not custom.<name>: the generic endpoint emits only custom events "
            "(store events come from the stores' own endpoints)",
        )
    if len(value) > TOPIC_CHARS:
        raise OutOfBounds("not_custom", f"type is {len(value)} characters long; at most {TOPIC_CHARS} are accepted")
    return value
