"""Profiles from events (the pure rule) and what `profile`, `orders` read: bounded against
hostile payloads, exact money, periods in the shop's time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from flowrun.events import Event
from flowrun.profile.record import (
    MAX_NAMES,
    Profile,
    RefundRow,
    net_of,
    order_row,
    ordered,
    refund_row,
    refunded,
    seen,
)
from flowrun.profile.view import OrdersView, moment, profile_view
from flowrun.runtime.memory_profiles import MemoryOrders

T0 = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)  # a Sunday: Europe/Berlin moved its clocks at 02:00


def _order(order: dict[str, object], email: str = "a@x.com", kind: str = "order.created") -> Event:
    return Event(
        kind,
        "shopify",
        f"e-{order.get('id')}",
        T0,
        {"customer": {"email": email}, "order": order},
        customer_key=f"email:{email}",
    )


def test_forged_totals_make_no_history_row() -> None:
    for total in ("NaN", "Infinity", "-5", "1e999999", "abc", None, "1000000000000"):
        assert order_row(_order({"id": "1", "total_price": total, "currency": "USD"}), T0) is None, total
    row = order_row(_order({"id": "1", "total_price": "10.123456", "currency": "usd"}), T0)
    assert row is not None and row.total == Decimal("10.1235") and row.currency == "USD" and row.order_id == "shopify:1"


def test_a_hostile_order_cannot_grow_a_profile_without_bound() -> None:
    lines = [{"title": f"{n}" + "x" * 10_000, "product_type": f"t{n}", "quantity": 1} for n in range(5_000)]
    event = _order({"id": "big", "total_price": "1.00", "currency": "USD", "line_items": lines})
    row = order_row(event, T0)
    assert row is not None
    p = ordered(seen(Profile("email:a@x.com"), event, T0), row)
    assert len(p.products) <= MAX_NAMES and all(len(name) <= 200 for name in p.products)
    assert len(p.types) <= MAX_NAMES
    huge = Event("customer.updated", "shopify", "c", T0, {"customer": {"email": "a@x.com", "first_name": "y" * 10**6}})
    assert len(seen(p, huge, T0).customer["first_name"]) == 320


def test_rolling_windows_and_average_are_exact_per_currency() -> None:
    p = Profile("email:a@x.com")
    for n, (days, total, currency) in enumerate([(100, "0.10", "USD"), (20, "0.20", "USD"), (1, "5.00", "EUR")]):
        p = ordered(
            p, order_row(_order({"id": str(n), "total_price": total, "currency": currency}), T0 - timedelta(days=days))
        )  # type: ignore[arg-type]
    view = profile_view(p, p.key, T0)
    assert view["orders_count"] == 3 and view["orders_30d"] == 2 and view["orders_90d"] == 2
    assert view["spend"] == {"USD": Decimal("0.30"), "EUR": Decimal("5.00")}
    assert view["spend_30d"] == {"USD": Decimal("0.20"), "EUR": Decimal("5.00")}
    assert view["average_order_value"] == {"USD": Decimal("0.10"), "EUR": Decimal("1.67")}
    assert str(view["spend"]) == "EUR 5.00, USD 0.30"


def test_engagement_consent_and_checkouts_update_the_profile() -> None:
    p = Profile("email:a@x.com")
    machine = Event("message.opened", "postmark", "o1", T0, {"message": {"machine_open": True}}, customer_key=p.key)
    assert seen(p, machine, T0).last_engaged_at is None  # Apple Mail Privacy Protection is no engagement
    clicked = Event("message.clicked", "postmark", "o2", T0, {"message": {"channel": "email"}}, customer_key=p.key)
    assert seen(p, clicked, T0).last_engaged_at == T0
    stop = Event("message.unsubscribed", "twilio", "s", T0, {"message": {"channel": "sms"}}, customer_key=p.key)
    assert seen(p, stop, T0).consent == {"sms": False}
    optout = Event(
        "customer.updated", "shopify", "u", T0, {"customer": {"email": "a@x.com", "accepts_marketing": False}}
    )
    assert seen(p, optout, T0).consent == {"email": False}
    cart = Event("checkout.updated", "shopify", "k", T0, {"checkout": {"id": "1"}}, customer_key=p.key)
    assert seen(p, cart, T0).last_checkout_at == T0


def test_periods_are_midnight_to_midnight_in_the_shop_zone_across_dst() -> None:
    history = MemoryOrders()
    berlin_sat = datetime(2026, 3, 28, 22, 59, tzinfo=UTC)  # 23:59 Saturday in Berlin (CET)
    for n, at in enumerate([berlin_sat, berlin_sat + timedelta(minutes=2), T0]):
        history.add(order_row(_order({"id": str(n), "total_price": "1.50", "currency": "EUR"}), at))  # type: ignore[arg-type]
    now = datetime(2026, 3, 30, 6, 0, tzinfo=UTC)  # Monday 08:00 in Berlin (CEST)
    orders = OrdersView(history, now, "Europe/Berlin")
    assert moment("yesterday", now, "Europe/Berlin") == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # Sunday 00:00 CET
    assert moment("today", now, "Europe/Berlin") == datetime(2026, 3, 29, 22, 0, tzinfo=UTC)  # Monday 00:00 CEST
    assert orders.count(since="yesterday", until="today") == 2  # 00:01 Sunday and Sunday noon
    assert str(orders.revenue(since="yesterday", until="today")) == "EUR 3.00"
    assert orders.count(since="7d") == 3 and orders.count(customer="email:nobody@x.com") == 0


def _refund(amount: object, currency: str = "USD", refund_id: object = "r-1", order_id: str = "1") -> Event:
    refund = {"id": refund_id, "order_id": order_id, "amount": amount, "currency": currency}
    return Event("refund.created", "shopify", f"e-{refund_id}", T0, {"refund": refund, "order": {"id": order_id}})


def _refund_row(event: Event, who: str = "email:a@x.com") -> RefundRow | None:
    return refund_row(event, who)


def test_a_refund_lowers_the_order_spend_and_its_window_never_below_zero() -> None:
    for forged in ("NaN", "-5", "1e999999", "0", None):
        assert _refund_row(_refund(forged)) is None, forged
    assert _refund_row(_refund("1", refund_id=None)) is None
    order = order_row(_order({"id": "1", "total_price": "30.00", "currency": "USD"}), T0 - timedelta(days=5))
    assert order is not None
    p = ordered(Profile("email:a@x.com"), order)
    refund = _refund_row(_refund("12.5"))
    assert refund is not None and refund.refund_id == "shopify:refund:r-1" and refund.order_id == "shopify:1"
    after = net_of(order, refund)
    assert after is not None and after.total == Decimal("17.50")
    lowered = refunded(p, order, after)
    view = profile_view(lowered, p.key, T0)
    assert view["spend"] == {"USD": Decimal("17.50")} and view["spend_30d"] == {"USD": Decimal("17.50")}
    assert view["orders_count"] == 1  # still an order
    too_much = _refund_row(_refund("99"))
    assert too_much is not None and net_of(order, too_much).total == 0  # type: ignore[union-attr]
    assert net_of(order, _refund_row(_refund("5", "EUR"))) is None  # type: ignore[arg-type]


def test_the_memory_history_takes_each_refund_once() -> None:
    history = MemoryOrders()
    order = order_row(_order({"id": "1", "total_price": "30.00", "currency": "USD"}), T0)
    assert order is not None and history.add(order)
    refund = _refund_row(_refund("10"))
    assert refund is not None
    netted = history.refund(refund)
    assert netted is not None and netted[1].total == Decimal("20.00")
    assert history.refund(refund) is None  # the store's retry
    assert history.revenue(None, None) == {"USD": Decimal("20.00")} and history.count(None, None) == 1
    early = _refund_row(_refund("1", refund_id="r-9", order_id="2"))
    assert early is not None and history.refund(early) is None  # before its order: not used up
    later = order_row(_order({"id": "2", "total_price": "3.00", "currency": "USD"}), T0)
    assert later is not None and history.add(later)
    assert history.refund(early) is not None  # the replay, once the order is known
    theirs = _refund_row(_refund("1", refund_id="r-10", order_id="2"), "email:mallory@x.com")
    assert theirs is not None and history.refund(theirs) is None  # another customer's order


def test_a_failed_refund_transaction_gives_nothing_back() -> None:
    from flowrun.events.normalise import normalise, parse_json
    from tests.conftest import ROOT

    body = parse_json((ROOT / "examples/events/shopify/refunds/create.json").read_bytes())
    [done] = body["transactions"]
    body["transactions"] = [{**done, "status": "failure", "id": 1}, done, {**done, "status": "pending", "id": 2}]
    [event] = normalise(body, source="shopify", topic="refunds/create", received_at=T0)
    assert event.data["refund"]["amount"] == Decimal("66.95")
