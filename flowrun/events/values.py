"""Small converters shared by the normalisers: money, ids, times."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any


def money(value: Any) -> Decimal | None:
    """Stores send prices as strings ("598.94") or numbers; keep them exact."""
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def ident(value: Any) -> str | None:
    """Ids as strings: 64-bit Shopify ids keep every digit in any consumer."""
    if value is None or value == "" or value == 0:
        return None
    return str(value)


def text(value: Any) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def integer(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def timestamp(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso(value: Any) -> str | None:
    parsed = timestamp(value)
    return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z") if parsed else None


def tags(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return []
