"""Derived events: checkout.abandoned, customer.inactive, inventory.low/restocked and
product.images_added, as pure functions.

The runtime (flowrun.runtime.derivations) keeps their state through its Checks port: in memory for
dry-run, in the database for serve, so a dry-run predicts exactly what serve derives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from flowrun.events import DEFAULT_THRESHOLD, Event, customer_key
from flowrun.flow.model import AnyStep, ChooseStep, EventTrigger, Flow, IfStep, SplitStep, WaitForStep

CHECKOUT_TYPES = ("checkout.created", "checkout.updated")
ORDER_TYPES = ("order.created", "order.paid")
PRODUCT_TYPES = ("product.created", "product.updated")
STATE_NAME_LIMIT = 200  # the cursors table's name column


@dataclass(frozen=True)
class Tracking:
    """Which derivations serve keeps: those whose derived events some flow listens to. One
    nothing asks for keeps no state, and the events it alone would read are set aside unread."""

    abandonment: bool
    inactivity: bool
    stock: bool
    images: bool = False

    @classmethod
    def for_flows(cls, listens_to: Callable[[str], bool]) -> Tracking:
        return cls(
            abandonment=listens_to("checkout.abandoned"),
            inactivity=listens_to("customer.inactive"),
            stock=listens_to("inventory.low") or listens_to("inventory.restocked"),
            images=listens_to("product.images_added"),
        )

    def reads(self, event_type: str) -> bool:
        """Whether a kept derivation reads events of this type (an order also ends an abandonment)."""
        if event_type in ORDER_TYPES:
            return self.abandonment or self.inactivity
        if event_type in CHECKOUT_TYPES:
            return self.abandonment
        if event_type in PRODUCT_TYPES:
            return self.images
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


@dataclass(frozen=True)
class StockLine:
    """A level an item's stock is watched against: low at or under `level`. `state` names
    the remembered "is it low now" flag (serve keeps it as a cursor)."""

    state: str
    level: int
    default: bool  # the project's level, which flows naming no `below:`/`above:` receive


def state_name(prefix: str, key: str) -> str:
    """A remembered state's name; a key too long for the column (a store's SKU may be) is
    replaced by its digest, so no input can make the name overflow."""
    name = f"{prefix}{key}"
    if len(name) <= STATE_NAME_LIMIT:
        return name
    return f"{prefix}#{hashlib.sha256(key.encode()).hexdigest()}"


def stock_lines(event: Event, thresholds: Thresholds) -> list[StockLine]:
    """The levels an inventory.changed event is measured against: the project's (the
    event's own `inventory.threshold`, else `derive.low_stock_threshold`) while a flow
    naming no level listens, and every level a flow names (`below: 10` is level 9)."""
    inventory = event.data.get("inventory") or {}
    key = str(inventory.get("sku") or inventory.get("inventory_item_id") or "")
    if event.type != "inventory.changed" or not key or inventory.get("available") is None:
        return []
    lines = []
    default_level = None
    if thresholds.default_stock_level is not None:
        own = inventory.get("threshold")
        default_level = int(own) if own is not None else thresholds.default_stock_level
        lines.append(StockLine(state_name("low:", key), default_level, True))
    lines.extend(
        StockLine(state_name("low:", f"{key}@{level}"), level, False)
        for level in thresholds.stock_levels
        if level != default_level
    )
    return lines


def stock_edge(event: Event, line: StockLine, was_low: bool) -> tuple[bool, Event | None]:
    """For an inventory.changed event and one level: (is it low now, the edge event if it
    crossed the level). Alert once per crossing; only a restock re-arms it."""
    inventory: dict[str, Any] = dict(event.data.get("inventory") or {})
    is_low = inventory["available"] <= line.level
    if is_low == was_low:
        return is_low, None
    kind = "inventory.low" if is_low else "inventory.restocked"
    key = line.state.removeprefix("low:")
    derived = replace(
        event,
        type=kind,
        id=f"derived:{kind}:{key}:{event.id}",
        source="flowrun",
        data={**event.data, "inventory": {**inventory, "threshold": line.level}},
        meta={"derived_from": event.id, DEFAULT_THRESHOLD: line.default},
    )
    return is_low, derived


def _image_key(image: Any) -> str:
    return str(image.get("id") or image.get("src") or "") if isinstance(image, dict) else ""


def images_added(event: Event, seen: list[str] | None) -> tuple[list[str], Event | None]:
    """For a product.created/updated event and the image ids last seen on that product
    (None: never seen): the ids to remember, and product.images_added when the event has
    images the product did not have. product.created carries its own `new_images`; a
    product first seen through an update is a baseline, its images are not called new."""
    product = dict(event.data.get("product") or {})
    images = [i for i in product.get("images") or [] if _image_key(i)]
    ids = sorted({_image_key(i) for i in images})
    if event.type != "product.updated" or seen is None:
        return ids, None
    before = set(seen)
    new = [i for i in images if _image_key(i) not in before]
    if not new:
        return ids, None
    derived = replace(
        event,
        type="product.images_added",
        id=f"derived:product.images_added:{event.id}",
        source="flowrun",
        data={**event.data, "product": {**product, "new_images": new}},
        meta={"derived_from": event.id},
    )
    return ids, derived


def store_events(
    event: Event, thresholds: Thresholds, get: Callable[[str], Any], put: Callable[[str, Any], None]
) -> list[Event]:
    """What a store event derives from the state kept per item (stock levels crossed,
    images added), read with `get` and written with `put`: a dict in dry-run, cursors in
    serve. Events of other types derive nothing here."""
    if event.type == "inventory.changed":
        crossed = []
        for line in stock_lines(event, thresholds):
            is_low, derived = stock_edge(event, line, bool(get(line.state)))
            put(line.state, is_low)
            crossed.extend([derived] if derived else [])
        return crossed
    if event.type in PRODUCT_TYPES:
        product_id = (event.data.get("product") or {}).get("id")
        if not product_id:
            return []
        name = state_name("images:", f"{event.source}:{product_id}")
        ids, derived = images_added(event, get(name))
        put(name, ids)
        return [derived] if derived else []
    return []


@dataclass(frozen=True)
class InactivityCheck:
    """Come back at `at`; `state` (JSON-able) says whose last order, and which threshold is next."""

    at: datetime
    state: dict[str, Any]


def _span_label(span: timedelta) -> str:
    return f"{span.days}d" if span % timedelta(days=1) == timedelta(0) else f"{int(span.total_seconds())}s"


@dataclass(frozen=True)
class InactivityWatcher:
    """customer.inactive once per threshold after a customer's last order (30, 60, 90 days,
    and every `after:` a flow names). An order resets the clock; serve keeps `state` in the
    database, dry-run in its queue. The state names the threshold that falls due, so a
    reload that changes the thresholds leaves pending checks meaningful."""

    thresholds: Thresholds = field(default_factory=lambda: Thresholds())

    def first_check(self, order: Event, learnt_at: datetime | None = None) -> InactivityCheck | None:
        """The check an order starts, counted from `learnt_at` (when flowrun learnt of the
        order; by default the order's own time)."""
        spans = self.thresholds.inactive_after
        if order.type not in ORDER_TYPES or not order.customer_key or not spans:
            return None
        since = learnt_at or order.occurred_at
        customer = dict(order.data.get("customer") or {})
        state = {
            "customer": customer,
            "last_order_at": since,
            "after_s": int(spans[0].total_seconds()),
            "order": order.id,
        }
        return InactivityCheck(since + spans[0], state)

    def _quiet(self, state: dict[str, Any]) -> timedelta:
        if "after_s" in state:
            return timedelta(seconds=int(state["after_s"]))
        # A check stored before thresholds were named counts the project's thresholds by index
        # (30, 60 and 90 days unless set otherwise).
        index, spans = int(state["index"]), self.thresholds.inactive_after
        return spans[min(index, len(spans) - 1)] if spans else timedelta(days=30 * (index + 1))

    def fire(self, state: dict[str, Any], now: datetime) -> tuple[Event, InactivityCheck | None]:
        """The event for the threshold that fell due, and the check for the next one."""
        quiet, last = self._quiet(state), state["last_order_at"]
        data = {"customer": state["customer"], "inactivity": {"days": quiet.days, "last_order_at": last}}
        event = Event(
            type="customer.inactive",
            source="flowrun",
            id=f"derived:customer.inactive:{_span_label(quiet)}:{state['order']}",
            occurred_at=now,
            data=data,
            customer_key=customer_key(data),
            meta={"derived_from": state["order"], DEFAULT_THRESHOLD: quiet in self.thresholds.inactive_defaults},
        )
        later = [span for span in self.thresholds.inactive_after if span > quiet]
        following = None
        if later:
            next_state = {k: v for k, v in state.items() if k != "index"}
            next_state["after_s"] = int(later[0].total_seconds())
            following = InactivityCheck(last + later[0], next_state)
        return event, following


# -- thresholds from the loaded flows ---------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """What the derivations watch for, from the loaded flows (`thresholds_for`)."""

    inactive_after: tuple[timedelta, ...] = ()  # every span customer.inactive fires at, ascending
    inactive_defaults: frozenset[timedelta] = frozenset()  # those flows naming no `after:` receive
    stock_levels: tuple[int, ...] = ()  # every level a flow names (`below: 10` -> 9, `above: 0` -> 0)
    default_stock_level: int | None = None  # the project's level, while a flow naming none listens


def _waited_events(steps: Sequence[AnyStep]) -> Iterator[str]:
    for step in steps:
        if isinstance(step, WaitForStep):
            yield from step.events
            yield from _waited_events(step.then)
            yield from _waited_events(step.otherwise)
        elif isinstance(step, IfStep):
            yield from _waited_events(step.then)
            yield from _waited_events(step.otherwise)
        elif isinstance(step, ChooseStep):
            for option in step.options:
                yield from _waited_events(option.steps)
            yield from _waited_events(step.otherwise)
        elif isinstance(step, SplitStep):
            for branch in step.branches:
                yield from _waited_events(branch.steps)


def thresholds_for(
    flows: Iterable[Flow], *, inactive_after: tuple[timedelta, ...], low_stock_threshold: int
) -> Thresholds:
    """A pure function from the loaded flows (and the project's defaults) to what the
    watchers derive. A flow that names its threshold (`after: 180d`, `below: 10`) adds it;
    the project's defaults are derived only while a flow naming none, a goal or a wait
    listens to the derived type."""
    spans: set[timedelta] = set()
    levels: set[int] = set()
    default_inactive = default_stock = False
    for flow in flows:
        trigger = flow.trigger
        if isinstance(trigger, EventTrigger):
            if "customer.inactive" in trigger.events:
                if trigger.after is not None:
                    spans.add(trigger.after)
                else:
                    default_inactive = True
            if {"inventory.low", "inventory.restocked"} & set(trigger.events):
                if trigger.stock_level is not None:
                    levels.add(trigger.stock_level)
                else:
                    default_stock = True
        reached = set(_waited_events(flow.steps)) | set(flow.goal.events if flow.goal else ())
        default_inactive = default_inactive or "customer.inactive" in reached
        default_stock = default_stock or bool({"inventory.low", "inventory.restocked"} & reached)
    defaults = frozenset(inactive_after) if default_inactive else frozenset()
    return Thresholds(
        inactive_after=tuple(sorted(spans | defaults)),
        inactive_defaults=defaults,
        stock_levels=tuple(sorted(levels)),
        default_stock_level=low_stock_threshold if default_stock else None,
    )
