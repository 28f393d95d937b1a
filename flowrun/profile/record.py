"""A customer's profile as a frozen value, and the pure rule of what an event changes in it.

Order times are when flowrun learnt of the order (`now`), as inactivity measures them
(flowrun.runtime.derivations); a backfill passes the store's own order time instead.
Everything a hostile payload could grow is bounded: recent orders, products, types, categories.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from flowrun.events import Event
from flowrun.events.values import money
from flowrun.guardrails import subscription_change

ORDER_TYPES = ("order.created", "order.paid")
REFUND_TYPES = ("refund.created",)
CHECKOUT_TYPES = ("checkout.created", "checkout.updated")
ENGAGED_TYPES = ("message.opened", "message.clicked")
KEEP_RECENT = timedelta(days=400)  # orders kept in the profile for rolling windows (longest: a year)
MAX_RECENT = 2000  # ... and at most this many of them
MAX_NAMES = 200  # products, types, categories remembered per customer
MAX_TOTAL = Decimal(10) ** 12  # an order total at or over this is not a real order
CENTS_E4 = Decimal("0.0001")
CUSTOMER_FIELDS = ("id", "email", "first_name", "last_name", "phone", "timezone", "country")


@dataclass(frozen=True)
class OrderRow:
    """One row of the order history."""

    order_id: str
    customer_key: str | None
    at: datetime
    total: Decimal
    currency: str
    products: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class RefundRow:
    """Money given back on an order, once per refund id."""

    refund_id: str
    order_id: str
    customer_key: str  # whom the refund names: the order must be theirs
    amount: Decimal
    currency: str  # "" when the store did not say: the order's


@dataclass(frozen=True)
class Profile:
    key: str
    customer: Mapping[str, Any] = field(default_factory=dict)
    first_seen_at: datetime | None = None
    last_seen_at: datetime | None = None
    last_engaged_at: datetime | None = None
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None
    last_checkout_at: datetime | None = None
    order_count: int = 0
    spend: Mapping[str, Decimal] = field(default_factory=dict)
    recent: tuple[tuple[datetime, str, Decimal], ...] = ()  # (at, currency, total), oldest first
    products: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    consent: Mapping[str, bool] = field(default_factory=dict)
    timezone: str | None = None
    segments: tuple[str, ...] = ()
    due_at: datetime | None = None  # when time alone could next change its segments (a due check)

    def evolve(self, **changes: Any) -> Profile:
        return replace(self, **changes)

    def orders_within(self, window: timedelta, now: datetime, currency: str | None = None) -> list[Decimal]:
        since = now - window
        return [t for at, cur, t in self.recent if at > since and at <= now and (currency is None or cur == currency)]


def order_row(event: Event, at: datetime) -> OrderRow | None:
    """The history row an order event makes (None: no id or no total to count)."""
    order = event.data.get("order") or {}
    total = _exact(money(order.get("total_price")))
    if order.get("id") in (None, "") or total is None:
        return None
    lines = [line for line in (order.get("line_items") or []) if isinstance(line, Mapping)][:MAX_NAMES]
    return OrderRow(
        f"{event.source}:{order['id']}",
        event.customer_key,
        at,
        total,
        str(order.get("currency") or "").upper()[:8],
        _names(str(line.get("title") or line.get("sku") or line.get("product_id") or "") for line in lines),
        _names(str(line.get("product_type") or line.get("type") or "") for line in lines),
        _names(str(c) for line in lines for c in (line.get("categories") or []) if isinstance(c, str)),
    )


def refund_row(event: Event, customer_key: str) -> RefundRow | None:
    """The refund an event carries (None: no id, no order, or no amount to take back)."""
    refund = event.data.get("refund") or {}
    amount = _exact(money(refund.get("amount")))
    if refund.get("id") in (None, "") or refund.get("order_id") in (None, "") or amount is None or not amount:
        return None
    currency = str(refund.get("currency") or "").upper()[:8]
    refund_id, order_id = f"{event.source}:refund:{refund['id']}", f"{event.source}:{refund['order_id']}"
    return RefundRow(refund_id, order_id, customer_key, amount, currency)


def net_of(order: OrderRow, refund: RefundRow) -> OrderRow | None:
    """The order with the refund taken off (never below zero); None when the order is another
    customer's, or the refund is in another currency than the order's (Shopify refunds in the
    presentment currency): nothing converts between them."""
    if order.customer_key != refund.customer_key or (refund.currency and refund.currency != order.currency):
        return None
    return replace(order, total=max(Decimal(0), order.total - refund.amount))


def refunded(profile: Profile, before: OrderRow, after: OrderRow) -> Profile:
    """Spend, and the order in the rolling windows, lowered by what the refund took back."""
    taken = before.total - after.total
    spend = dict(profile.spend)
    if before.currency in spend:
        spend[before.currency] = max(Decimal(0), spend[before.currency] - taken)
    entry = (before.at, before.currency, before.total)
    recent = list(profile.recent)
    if entry in recent:
        recent[recent.index(entry)] = (before.at, before.currency, after.total)
    return profile.evolve(spend=spend, recent=tuple(recent))


def seen(profile: Profile, event: Event, now: datetime) -> Profile:
    """Any event: last seen, who they are, consent, engagement, checkouts."""
    customer = event.data.get("customer") or {}
    known = {k: customer[k] for k in CUSTOMER_FIELDS if isinstance(customer.get(k), (str, int))}
    changes: dict[str, Any] = {"last_seen_at": now, "first_seen_at": profile.first_seen_at or now}
    if known:
        changes["customer"] = {**profile.customer, **{k: str(v)[:320] for k, v in known.items()}}
        if known.get("timezone"):
            changes["timezone"] = str(known["timezone"])[:64]
    consent = _consent(event)
    if consent:
        changes["consent"] = {**profile.consent, **consent}
    if event.type in ENGAGED_TYPES and not (event.data.get("message") or {}).get("machine_open"):
        changes["last_engaged_at"] = now
    if event.type in CHECKOUT_TYPES and not (event.data.get("checkout") or {}).get("completed_at"):
        changes["last_checkout_at"] = now
    return profile.evolve(**changes)


def ordered(profile: Profile, row: OrderRow) -> Profile:
    """A new order (once per order id: the caller checks the history first)."""
    keep_after = row.at - KEEP_RECENT
    recent = sorted((*[r for r in profile.recent if r[0] > keep_after], (row.at, row.currency, row.total)))
    spend = dict(profile.spend)
    spend[row.currency] = spend.get(row.currency, Decimal(0)) + row.total
    first = min(profile.first_order_at, row.at) if profile.first_order_at else row.at
    last = max(profile.last_order_at, row.at) if profile.last_order_at else row.at
    return profile.evolve(
        first_order_at=first,
        last_order_at=last,
        order_count=profile.order_count + 1,
        spend=spend,
        recent=tuple(recent[-MAX_RECENT:]),
        products=_merge(profile.products, row.products),
        types=_merge(profile.types, row.types),
        categories=_merge(profile.categories, row.categories),
    )


def backfilled(profile: Profile, event: Event, row: OrderRow) -> Profile:
    """An order from the store's history, in its own time: never moves `last_seen_at` back."""
    updated = ordered(seen(profile, event, row.at), row)
    latest = max(t for t in (profile.last_seen_at, row.at) if t is not None)
    return updated.evolve(last_seen_at=latest, first_seen_at=min(profile.first_seen_at or row.at, row.at))


def _consent(event: Event) -> dict[str, bool]:
    said = subscription_change(event.type, event.data)
    if said is not None:
        return {"email": said}
    if event.type in ("message.unsubscribed", "message.complained"):
        channel = str((event.data.get("message") or {}).get("channel") or "email")
        return {channel if channel in ("email", "sms", "push") else "email": False}
    return {}


def _exact(amount: Decimal | None) -> Decimal | None:
    """An amount as the history keeps it (ten-thousandths, exactly); None for a forged one
    (NaN, negative, 1e999999)."""
    if amount is None or not amount.is_finite() or not 0 <= amount < MAX_TOTAL:
        return None
    if amount.as_tuple().exponent < -4:  # type: ignore[operator]
        return amount.quantize(CENTS_E4)
    return amount


def _names(values: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v[:200] for v in values if v))


def _merge(old: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*old, *new)))[:MAX_NAMES]


def to_dict(profile: Profile) -> dict[str, Any]:
    """For storage (flowrun.state.codec keeps Decimal and datetime exact)."""
    out = {f: getattr(profile, f) for f in profile.__dataclass_fields__}
    out["recent"] = [list(r) for r in profile.recent]
    for name in ("products", "types", "categories", "segments"):
        out[name] = list(out[name])
    return out


def from_dict(data: Mapping[str, Any]) -> Profile:
    values = dict(data)
    values["recent"] = tuple((r[0], r[1], r[2]) for r in values.get("recent", ()))
    for name in ("products", "types", "categories", "segments"):
        values[name] = tuple(values.get(name, ()))
    return Profile(**{k: v for k, v in values.items() if k in Profile.__dataclass_fields__})
