"""Derived events over the Checks port: checkout.abandoned, customer.inactive, inventory.low /
inventory.restocked, and consent. The pure rules are flowrun.derive's; this keeps their state.

A derivation keeps state only while some flow listens to what it derives (`Tracking`).
Inactivity is measured from when flowrun learnt of the order (`now`), never from a date inside
the payload: a backfilled order from last year must not make its customer inactive at once.
"""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import datetime
from typing import Any

from flowrun.derive import (
    CHECKOUT_TYPES,
    ORDER_TYPES,
    InactivityWatcher,
    Tracking,
    abandoned,
    checkout_completed,
    checkout_key,
    store_events,
    thresholds_for,
)
from flowrun.events import Event
from flowrun.guardrails import subscription_change
from flowrun.runtime.flows import FlowSet
from flowrun.runtime.protocols import UnitOfWork
from flowrun.runtime.records import Check, event_key, partition_of
from flowrun.runtime.settings import Settings


class Derivations:
    def __init__(self, settings: Settings, flows: FlowSet) -> None:
        self.settings = settings
        self.reload(flows)

    def reload(self, flows: FlowSet) -> None:
        """What to derive follows the loaded flows: the thresholds they name (`after: 180d`,
        `below: 10`), the project's defaults while a flow naming none listens."""
        self.tracking = Tracking.for_flows(flows.listens_to)
        self.thresholds = thresholds_for(
            flows.current.values(),
            inactive_after=self.settings.inactive_after,
            low_stock_threshold=self.settings.low_stock_threshold,
        )
        self.inactivity = InactivityWatcher(self.thresholds)

    def observe(self, uow: UnitOfWork, event: Event, now: datetime) -> list[Event]:
        """Record what this event changes; the events it derives at once (a stock edge)."""
        who = event.customer_key
        consent = subscription_change(event.type, event.data)
        if consent is not None and who:
            uow.consent.record(who, not consent, f"{event.type} {event.id}", now)
        if event.type in CHECKOUT_TYPES and who and self.tracking.abandonment:
            self._checkout(uow, who, event, now)
        elif event.type in ORDER_TYPES and who:
            if self.tracking.abandonment:
                uow.checks.delete(f"abandon:{who}")
            watched = self.tracking.inactivity and self.settings.inactivity
            first = self.inactivity.first_check(event, now) if watched else None
            if first is not None:
                uow.checks.put(Check(f"inactive:{who}", first.state, partition_of(who), first.at))
        elif self.tracking.reads(event.type):  # stock levels crossed, product images added
            return self._store(uow, event, now)
        return []

    def fire(self, uow: UnitOfWork, check: Check, now: datetime) -> list[Event]:
        """A check whose time came: the events it derives, its state moved on."""
        kind = check.name.split(":", 1)[0]
        if kind == "abandon":
            return self._abandoned(uow, check, now)
        if kind == "inactive":
            inactive, following = self.inactivity.fire(check.value, now)
            if following is None:
                uow.checks.delete(check.name)
            else:
                uow.checks.put(replace(check, value=following.state, due_at=following.at))
            return [inactive]
        return []

    def _checkout(self, uow: UnitOfWork, who: str, event: Event, now: datetime) -> None:
        name = f"abandon:{who}"
        found = uow.checks.get(name)
        open_ = dict(found.value["checkouts"]) if found else {}
        key = checkout_key(event)
        if checkout_completed(event):
            open_.pop(key, None)
        else:  # an update restarts the clock
            open_[key] = {"event": _stored(event), "due": now + self.settings.checkout_idle}
        _put_checkouts(uow, name, who, open_)

    def _abandoned(self, uow: UnitOfWork, check: Check, now: datetime) -> list[Event]:
        open_ = dict(check.value["checkouts"])
        due = sorted((k for k, v in open_.items() if v["due"] <= now), key=lambda k: (open_[k]["due"], k))
        derived = [abandoned(_event(open_.pop(k)["event"]), k, now) for k in due]
        _put_checkouts(uow, check.name, check.name.split(":", 1)[1], open_)
        return derived

    def _store(self, uow: UnitOfWork, event: Event, now: datetime) -> list[Event]:
        part = partition_of(event_key(event))

        def get(name: str) -> Any:
            found = uow.checks.get(name)
            return found.value if found else None

        def put(name: str, value: Any) -> None:
            uow.checks.put(Check(name, value, part))

        return [replace(d, occurred_at=now) for d in store_events(event, self.thresholds, get, put)]


def _put_checkouts(uow: UnitOfWork, name: str, who: str, open_: dict[str, Any]) -> None:
    if not open_:
        uow.checks.delete(name)
        return
    due = min(v["due"] for v in open_.values())
    uow.checks.put(Check(name, {"checkouts": open_}, partition_of(who), due))


def _stored(event: Event) -> dict[str, Any]:
    stored = {f.name: getattr(event, f.name) for f in fields(Event)}
    return {**stored, "data": dict(event.data), "meta": dict(event.meta)}


def _event(stored: dict[str, Any]) -> Event:
    return Event(**stored)
