"""What conditions and templates read: `profile.…` (with its schema, for `validate`),
`orders.count(…)` / `orders.revenue(…)` over the shop's order history, `in_segment('name')`.

Periods are in the shop's time zone (`timezone:` in flowrun.yaml): `since='yesterday',
until='today'` is yesterday from midnight to midnight there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from flowrun.durations import DurationSyntaxError, parse_duration
from flowrun.profile.record import Profile
from flowrun.timing import zone

WINDOWS = {"30d": timedelta(days=30), "90d": timedelta(days=90), "365d": timedelta(days=365)}
_T = {"type": ["string", "null"], "format": "date-time"}
_MONEY_BY_CURRENCY = {
    "type": "object",
    "description": "per currency code (USD, EUR...): an exact amount",
    "additionalProperties": {"type": "number"},
}
_NAMES = {"type": "array", "items": {"type": "string"}}


def _field(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description}


PROFILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "key": _field({"type": "string"}, "the customer key (email:…, id:…, phone:…)"),
        "email": _field({"type": ["string", "null"]}, "the customer's email, as last seen"),
        "first_name": _field({"type": ["string", "null"]}, "as last seen"),
        "last_name": _field({"type": ["string", "null"]}, "as last seen"),
        "first_order_at": _field(_T, "when flowrun learnt of the first order"),
        "last_order_at": _field(_T, "when flowrun learnt of the last order"),
        "last_seen_at": _field(_T, "the last event about this customer"),
        "last_engaged_at": _field(_T, "the last message.opened or message.clicked (machine opens excluded)"),
        "last_checkout_at": _field(_T, "the last checkout started or updated"),
        "orders_count": _field({"type": "integer"}, "orders ever"),
        "spend": _field(_MONEY_BY_CURRENCY, "spend ever, per currency"),
        "average_order_value": _field(_MONEY_BY_CURRENCY, "spend / orders, per currency"),
        **{f"orders_{w}": _field({"type": "integer"}, f"orders in the last {w}") for w in WINDOWS},
        **{f"spend_{w}": _field(_MONEY_BY_CURRENCY, f"spend in the last {w}, per currency") for w in WINDOWS},
        "products": _field(_NAMES, "products bought (line titles)"),
        "product_types": _field(_NAMES, "product types bought"),
        "categories": _field(_NAMES, "categories bought"),
        "consent": {
            "type": "object",
            "additionalProperties": False,
            "description": "per channel: true (opted in), false (opted out), null (never said)",
            "properties": {c: {"type": ["boolean", "null"]} for c in ("email", "sms", "push")},
        },
        "timezone": _field({"type": ["string", "null"]}, "the customer's IANA time zone, if known"),
        "segments": _field(_NAMES, "the segments the customer is in"),
    },
}
PROFILE_FIELDS = tuple(PROFILE_SCHEMA["properties"])


class Revenue(dict[str, Decimal]):
    """Per currency; prints as `EUR 120.50, USD 30.00` (or `0` with no orders)."""

    def __str__(self) -> str:
        return ", ".join(f"{c} {v:.2f}" for c, v in sorted(self.items())) or "0"


def profile_view(profile: Profile | None, key: str, now: datetime) -> dict[str, Any]:
    p = profile or Profile(key)
    view: dict[str, Any] = {
        "key": p.key,
        "email": p.customer.get("email"),
        "first_name": p.customer.get("first_name"),
        "last_name": p.customer.get("last_name"),
        "first_order_at": p.first_order_at,
        "last_order_at": p.last_order_at,
        "last_seen_at": p.last_seen_at,
        "last_engaged_at": p.last_engaged_at,
        "last_checkout_at": p.last_checkout_at,
        "orders_count": p.order_count,
        "spend": Revenue(p.spend),
        "average_order_value": Revenue({c: (s / p.order_count).quantize(Decimal("0.01")) for c, s in p.spend.items()})
        if p.order_count
        else Revenue(),
        "products": list(p.products),
        "product_types": list(p.types),
        "categories": list(p.categories),
        "consent": {c: p.consent.get(c) for c in ("email", "sms", "push")},
        "timezone": p.timezone,
        "segments": list(p.segments),
    }
    for name, window in WINDOWS.items():
        since = now - window
        inside = [(cur, t) for at, cur, t in p.recent if since < at <= now]
        view[f"orders_{name}"] = len(inside)
        totals: dict[str, Decimal] = {}
        for cur, t in inside:
            totals[cur] = totals.get(cur, Decimal(0)) + t
        view[f"spend_{name}"] = Revenue(totals)
    return view


class LazyProfile(Mapping[str, Any]):
    """Read from the unit of work only if a condition or template looks at it."""

    def __init__(self, load: Callable[[], dict[str, Any]]) -> None:
        self._load, self._view = load, None  # type: tuple[Callable[[], dict[str, Any]], dict[str, Any] | None]

    def _got(self) -> dict[str, Any]:
        if self._view is None:
            self._view = self._load()
        return self._view

    def __getitem__(self, key: str) -> Any:
        return self._got()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._got())

    def __len__(self) -> int:
        return len(self._got())


class History(Protocol):
    def count(self, since: datetime | None, until: datetime | None, customer_key: str | None = None) -> int: ...

    def revenue(
        self, since: datetime | None, until: datetime | None, customer_key: str | None = None
    ) -> dict[str, Decimal]: ...


class OrdersView:
    """`orders.count(since=…, until=…)`, `orders.revenue(…)`; `customer=profile.key` narrows to one."""

    def __init__(self, history: History, now: datetime, timezone: str) -> None:
        self._history, self._now, self._zone = history, now, timezone

    def count(self, since: Any = None, until: Any = None, customer: str | None = None) -> int:
        return self._history.count(self._at(since), self._at(until), customer)

    def revenue(self, since: Any = None, until: Any = None, customer: str | None = None) -> Revenue:
        return Revenue(self._history.revenue(self._at(since), self._at(until), customer))

    def _at(self, value: Any) -> datetime | None:
        return moment(value, self._now, self._zone)


def moment(value: Any, now: datetime, timezone: str) -> datetime | None:
    """A period bound: a time, an ISO text, `today`/`yesterday`/`this_week`/`this_month`
    (midnight in the shop's zone), or a duration back from now (`7d`)."""
    if value is None or isinstance(value, datetime):
        return value
    text = str(value).strip()
    local = now.astimezone(zone(timezone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if text == "now":
        return now
    named = {
        "today": midnight,
        "yesterday": midnight - timedelta(days=1),
        "this_week": midnight - timedelta(days=midnight.weekday()),
        "this_month": midnight.replace(day=1),
    }
    if text in named:
        return _wall(named[text], timezone)
    try:
        return now - parse_duration(text)
    except DurationSyntaxError:
        pass
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a period bound: give a time, today, yesterday, this_week, this_month or a duration (7d)"
        ) from None
    return found if found.tzinfo else found.replace(tzinfo=zone(timezone))


def _wall(local: datetime, timezone: str) -> datetime:
    """Local midnight arithmetic across DST: rebuild the wall time in its zone."""
    return datetime(local.year, local.month, local.day, local.hour, tzinfo=zone(timezone))
