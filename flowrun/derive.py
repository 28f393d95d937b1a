"""Derived events: checkout.abandoned, customer.inactive and inventory.low/restocked, as pure functions.

Both dry-run (state in memory: the watchers below) and serve (state in the database: the
worker) call the same functions, so a dry-run predicts exactly what serve derives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from flowrun.events import Event, customer_key

CHECKOUT_TYPES = ("checkout.created", "checkout.updated")
ORDER_TYPES = ("order.created", "order.paid")


@dataclass(frozen=True)
class Tracking:
    """Which derivations serve keeps: those whose derived events some flow listens to. One
    nothing asks for keeps no state, and the events it alone would read are set aside unread."""

    abandonment: bool
    inactivity: bool
    stock: bool

    @classmethod
    def for_flows(cls, listens_to: Callable[[str], bool]) -> Tracking:
        return cls(
            abandonment=listens_to("checkout.abandoned"),
            inactivity=listens_to("customer.inactive"),
            stock=listens_to("inventory.low") or listens_to("inventory.restocked"),
        )

    def reads(self, event_type: str) -> bool:
        """Whether a kept derivation reads events of this type (an order also ends an abandonment)."""
        if event_type in ORDER_TYPES:
            return self.abandonment or self.inactivity
        if event_type in CHECKOUT_TYPES:
            return self.abandonment
        return self.stock and event_type == "inventory.changed"


def checkout_key(event: Event) -> str:
    checkout = event.data.get("checkout") or {}
    return str(checkout.get("token") or checkout.get("id") or event.id)


def checkout_completed(event: Event) -> bool:
    return bool((event.data.get("checkout") or {}).get("completed_at"))


def abandoned(seen: Event, key: str, now: datetime) -> Event:
    """The checkout.abandoned event for a checkout last seen as `seen`."""
    return replace(
        seen,
        type="checkout.abandoned",
        id=f"derived:checkout.abandoned:{key}:{seen.id}",
        source="flowrun",
        occurred_at=now,
        meta={"derived_from": seen.id},
    )


def stock_edge(event: Event, was_low: bool, default_threshold: int) -> tuple[str, bool, Event | None]:
    """For an inventory.changed event: (item key, is it low now, the edge event if it crossed)."""
    inventory: dict[str, Any] = dict(event.data.get("inventory") or {})
    key = str(inventory.get("sku") or inventory.get("inventory_item_id") or "")
    available = inventory.get("available")
    if event.type != "inventory.changed" or not key or available is None:
        return key, was_low, None
    threshold = inventory["threshold"] if inventory.get("threshold") is not None else default_threshold
    is_low = available <= threshold
    if is_low == was_low:
        return key, is_low, None  # no crossing: alert once, re-armed only by a restock
    kind = "inventory.low" if is_low else "inventory.restocked"
    data = {**event.data, "inventory": {**inventory, "threshold": threshold}}
    derived = replace(
        event,
        type=kind,
        id=f"derived:{kind}:{key}:{event.id}",
        source="flowrun",
        data=data,
        meta={"derived_from": event.id},
    )
    return key, is_low, derived


@dataclass(frozen=True)
class Check:
    """Come back at `at` and call `AbandonmentWatcher.check(key, marker, at)`."""

    at: datetime
    key: str
    marker: str


@dataclass
class AbandonmentWatcher:
    """In memory (dry-run): a checkout with no order for `idle` becomes checkout.abandoned."""

    idle: timedelta = timedelta(hours=1)
    checkouts: dict[str, Event] = field(default_factory=dict)
    ordered: set[str] = field(default_factory=set)

    def observe(self, event: Event, now: datetime) -> list[Check]:
        if event.type in CHECKOUT_TYPES:
            key = checkout_key(event)
            if checkout_completed(event):
                self.ordered.add(key)
                return []
            self.checkouts[key] = event
            return [Check(now + self.idle, key, event.id)]
        if event.type in ORDER_TYPES:
            for key, seen in self.checkouts.items():
                if seen.customer_key and seen.customer_key == event.customer_key:
                    self.ordered.add(key)
        return []

    def check(self, key: str, marker: str, now: datetime) -> Event | None:
        seen = self.checkouts.get(key)
        if seen is None or seen.id != marker or key in self.ordered:
            return None  # updated since, or an order followed
        return abandoned(seen, key, now)


@dataclass
class InventoryWatcher:
    """In memory (dry-run): remembers which items are low."""

    threshold: int = 5
    low: dict[str, bool] = field(default_factory=dict)

    def observe(self, event: Event, now: datetime) -> list[Event]:
        if event.type != "inventory.changed":
            return []
        probe_key, _, _ = stock_edge(event, False, self.threshold)
        key, is_low, derived = stock_edge(event, self.low.get(probe_key, False), self.threshold)
        if key:
            self.low[key] = is_low
        return [replace(derived, occurred_at=now)] if derived else []


@dataclass(frozen=True)
class InactivityCheck:
    """Come back at `at`; `state` (JSON-able) says whose last order, and which threshold is next."""

    at: datetime
    state: dict[str, Any]


@dataclass(frozen=True)
class InactivityWatcher:
    """customer.inactive once per threshold after a customer's last order (30, 60, 90 days...).
    An order resets the clock; serve keeps `state` in the database, dry-run in its queue."""

    thresholds: tuple[timedelta, ...] = ()

    def first_check(self, order: Event) -> InactivityCheck | None:
        if order.type not in ORDER_TYPES or not order.customer_key or not self.thresholds:
            return None
        customer = dict(order.data.get("customer") or {})
        state = {"customer": customer, "last_order_at": order.occurred_at, "index": 0, "order": order.id}
        return InactivityCheck(order.occurred_at + self.thresholds[0], state)

    def fire(self, state: dict[str, Any], now: datetime) -> tuple[Event, InactivityCheck | None]:
        """The event for the threshold that fell due, and the check for the next one."""
        index, last = int(state["index"]), state["last_order_at"]
        quiet = self.thresholds[min(index, len(self.thresholds) - 1)]
        data = {"customer": state["customer"], "inactivity": {"days": quiet.days, "last_order_at": last}}
        event = Event(
            type="customer.inactive",
            source="flowrun",
            id=f"derived:customer.inactive:{quiet.days}d:{state['order']}",
            occurred_at=now,
            data=data,
            customer_key=customer_key(data),
            meta={"derived_from": state["order"]},
        )
        following = None
        if index + 1 < len(self.thresholds):
            following = InactivityCheck(last + self.thresholds[index + 1], {**state, "index": index + 1})
        return event, following
