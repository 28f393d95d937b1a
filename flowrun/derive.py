"""Derived events as pure state machines: checkout.abandoned and inventory.low/restocked.

Both are fed canonical events and `now`; they return events to emit and checks to
schedule. Dry-run keeps their state in memory; serve keeps it in the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from flowrun.events import Event

ORDER_TYPES = ("order.created", "order.paid")


@dataclass(frozen=True)
class Check:
    """Come back at `at` and call `AbandonmentWatcher.check(key, marker, at)`."""

    at: datetime
    key: str
    marker: str


@dataclass
class AbandonmentWatcher:
    """A checkout with no order for `idle` becomes checkout.abandoned, once per checkout update."""

    idle: timedelta = timedelta(hours=1)
    checkouts: dict[str, Event] = field(default_factory=dict)
    ordered: set[str] = field(default_factory=set)

    def observe(self, event: Event, now: datetime) -> list[Check]:
        if event.type in ("checkout.created", "checkout.updated"):
            checkout = event.data.get("checkout") or {}
            key = str(checkout.get("token") or checkout.get("id") or event.id)
            if checkout.get("completed_at"):
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
        return replace(
            seen,
            type="checkout.abandoned",
            id=f"derived:checkout.abandoned:{key}:{marker}",
            source="flowrun",
            occurred_at=now,
            meta={"derived_from": seen.id},
        )


@dataclass
class InventoryWatcher:
    """inventory.low once when stock falls to the threshold; re-armed by a restock above it."""

    threshold: int = 5
    low: dict[str, bool] = field(default_factory=dict)

    def observe(self, event: Event, now: datetime) -> list[Event]:
        if event.type != "inventory.changed":
            return []
        inventory: dict[str, Any] = dict(event.data.get("inventory") or {})
        available = inventory.get("available")
        key = str(inventory.get("sku") or inventory.get("inventory_item_id") or "")
        if available is None or not key:
            return []
        threshold = inventory.get("threshold") if inventory.get("threshold") is not None else self.threshold
        was_low, is_low = self.low.get(key, False), available <= threshold
        self.low[key] = is_low
        if is_low == was_low:
            return []
        kind = "inventory.low" if is_low else "inventory.restocked"
        if kind == "inventory.restocked" and key not in self.low:
            return []
        data = {**event.data, "inventory": {**inventory, "threshold": threshold}}
        return [
            replace(
                event,
                type=kind,
                id=f"derived:{kind}:{key}:{event.id}",
                source="flowrun",
                occurred_at=now,
                data=data,
                meta={"derived_from": event.id},
            )
        ]
