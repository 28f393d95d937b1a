"""Customer memory in the runtime: each event updates its customer's profile and the order
history in the unit of work that applies it, then segment membership is settled, the changes
emitted as `segment.entered` / `segment.exited`, and the next moment time alone could change
membership stored as a due check (`segment:<customer>`), so nobody else is ever scanned.

Kept only while something reads it (as derivations are): a segment file, a flow on
segment.*, or a flow whose conditions or templates read `profile`, `orders` or `in_segment(…)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from flowrun.engine.facts import FACTS
from flowrun.engine.state import RunState
from flowrun.events import Event
from flowrun.guardrails import CONSENT_TYPES
from flowrun.profile.record import (
    CHECKOUT_TYPES,
    ENGAGED_TYPES,
    ORDER_TYPES,
    REFUND_TYPES,
    Profile,
    order_row,
    ordered,
    refund_row,
    refunded,
    seen,
)
from flowrun.profile.view import LazyProfile, OrdersView, profile_view
from flowrun.runtime.flows import FlowSet
from flowrun.runtime.protocols import UnitOfWork
from flowrun.runtime.records import Check, partition_of
from flowrun.runtime.settings import Settings
from flowrun.segments.model import Segment, membership

SEGMENT_TYPES = ("segment.entered", "segment.exited")
READS = frozenset(
    {
        *ORDER_TYPES,
        *REFUND_TYPES,
        *CHECKOUT_TYPES,
        *ENGAGED_TYPES,
        *CONSENT_TYPES,
        "customer.created",
        "customer.updated",
        "message.unsubscribed",
        "message.complained",
    }
)
PREFIX = "segment:"


class Memory:
    def __init__(self, settings: Settings, flows: FlowSet) -> None:
        self.settings, self.segments = settings, settings.segments
        self.reload(flows)

    def reload(self, flows: FlowSet, segments: tuple[Segment, ...] | None = None) -> None:
        if segments is not None:
            self.segments = segments
        self.flows = flows
        reading = any(getattr(f, "memory", False) for f in flows.current.values())
        self.active = bool(self.segments) or reading or any(flows.listens_to(t) for t in SEGMENT_TYPES)

    def reads(self, event_type: str) -> bool:
        return self.active and event_type in READS

    def observe(self, uow: UnitOfWork, event: Event, now: datetime) -> list[Event]:
        """What this event changes in its customer's profile and the order history."""
        if not self.active or event.type in SEGMENT_TYPES:
            return []
        who = event.customer_key
        row = order_row(event, now) if event.type in ORDER_TYPES else None
        new_order = row is not None and uow.orders.add(row)
        # a refund moves money only when it names the order's customer (Shopify's, once looked
        # up): then this unit of work holds that customer's partition, and their profile
        refund = refund_row(event, who) if event.type in REFUND_TYPES and who else None
        netted = uow.orders.refund(refund) if refund is not None else None
        if not who:
            return []
        profile = seen(uow.profiles.get(who) or Profile(who), event, now)
        if new_order and row is not None:
            profile = ordered(profile, row)
        if netted is not None:
            profile = refunded(profile, *netted)
        return self.settle(uow, profile, now)

    def fire(self, uow: UnitOfWork, check: Check, now: datetime) -> list[Event]:
        """A segment check's time came: the customer's membership again, at `now`."""
        if not check.name.startswith(PREFIX):
            return []
        profile = uow.profiles.get(check.name[len(PREFIX) :])
        if profile is None or not self.segments:
            uow.checks.delete(check.name)
            return []
        return self.settle(uow, profile, now)

    def settle(self, uow: UnitOfWork, profile: Profile, now: datetime) -> list[Event]:
        """Store the profile with its segments; the entered/exited events; the next due check."""
        names, following = membership(self.segments, profile, now, self.settings.checkout_idle)
        if not self.settings.inactivity:  # dry-run with no horizon: time alone moves nobody (as inactivity)
            following = None
        before = set(profile.segments)
        events = [_change(profile, n, "exited", now) for n in profile.segments if n not in names]
        events += [_change(profile, n, "entered", now) for n in names if n not in before]
        if following != profile.due_at:
            if following is None:
                uow.checks.delete(PREFIX + profile.key)
            else:
                uow.checks.put(Check(PREFIX + profile.key, None, partition_of(profile.key), following))
        uow.profiles.put(profile.evolve(segments=tuple(names), due_at=following))
        return events

    @contextlib.contextmanager
    def facts(self, uow: UnitOfWork, now: datetime) -> Iterator[None]:
        """`profile`, `orders` and `in_segment(…)` for the runs this input moves."""
        if not self.active:
            yield
            return

        def provide(run: RunState, at: datetime) -> Mapping[str, Any]:
            key = run.customer_key or ""
            flow = self.flows.current.get(run.flow_id)  # a flow's own `timezone:` over the shop's
            zone = flow.timezone if flow is not None and flow.timezone != "UTC" else self.settings.timezone
            view = LazyProfile(lambda: profile_view(uow.profiles.get(key) if key else None, key, at))
            return {
                "profile": view,
                "orders": OrdersView(uow.orders, at, zone),
                "in_segment": lambda name: name in view["segments"],
            }

        token = FACTS.set(provide)
        try:
            yield
        finally:
            FACTS.reset(token)


def _change(profile: Profile, name: str, how: str, now: datetime) -> Event:
    customer = dict(profile.customer)
    return Event(
        type=f"segment.{how}",
        source="flowrun",
        id=f"segment:{name}:{profile.key}:{how}:{now.isoformat()}",
        occurred_at=now,
        data={"customer": customer, "segment": {"name": name}},
        customer_key=profile.key,
    )
