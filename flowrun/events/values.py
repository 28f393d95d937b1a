"""Small converters shared by the normalisers: money, ids, times."""

from __future__ import annotations

from datetime import UTC, date, datetime
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


# What flowrun looked up in a store's API for a body (events.enrich), kept beside the
# store's own fields so the normaliser stays a pure function of the body.
ENRICHED = "_flowrun"


def enriched(body: Any) -> dict[str, Any]:
    found = body.get(ENRICHED) if isinstance(body, dict) else None
    return found if isinstance(found, dict) else {}


def untouched(body: Any) -> Any:
    """The body as the store sent it: `event.raw` never shows what flowrun added."""
    if isinstance(body, dict) and ENRICHED in body:
        return {k: v for k, v in body.items() if k != ENRICHED}
    return body


def calendar_date(value: Any) -> str | None:
    """`2026-02-10` (or an ISO time) as YYYY-MM-DD; anything else is not a date."""
    if not isinstance(value, str) or not value.strip():
        return None
    text_value = value.strip()
    try:
        return date.fromisoformat(text_value[:10]).isoformat() if len(text_value) >= 10 else None
    except ValueError:
        return None


_FLAG_NAMES = frozenset({"backorder", "backordered", "on_backorder"})
_DATE_NAMES = frozenset({"expected_date", "backorder_date", "expected_ship_date", "ships_on", "available_on"})
_NO = frozenset({"", "0", "no", "false", "n"})


def _property_name(name: str) -> str:
    return "_".join(name.strip().lstrip("_").lower().replace("-", " ").split())


def backorder_properties(properties: dict[str, Any]) -> tuple[bool | None, int | None, str | None]:
    """(backordered, how many, expected date) from a line's properties or meta, by name:
    `Backordered` (WooCommerce writes the quantity), `Backorder`, and `Expected date`,
    `Backorder date`, `Ships on` (a leading `_`, case and spacing do not matter)."""
    flag: bool | None = None
    quantity: int | None = None
    expected: str | None = None
    for name, value in properties.items():
        key = _property_name(name)
        if key in _FLAG_NAMES:
            count = integer(value) if not isinstance(value, bool) else None
            if count is not None:
                flag, quantity = count > 0, (count if count > 0 else None)
            else:
                flag = str(value).strip().lower() not in _NO
        elif key in _DATE_NAMES:
            expected = calendar_date(value) or expected
    return flag, quantity, expected


def any_backordered(items: list[dict[str, Any]]) -> bool | None:
    flags = [item.get("backordered") for item in items]
    if any(flags):
        return True
    return False if flags and all(f is False for f in flags) else None
