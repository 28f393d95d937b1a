"""What attribution keeps: a delivered message tied to its run and step, what the provider
said about it since, unmatched engagement, and an order attributed to a message."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

KIND_COLUMNS = {  # message.<kind> -> the first time of it kept on the message
    "delivered": "delivered_at",
    "opened": "opened_at",
    "clicked": "clicked_at",
    "unsubscribed": "unsubscribed_at",
    "bounced": "bounced_at",
    "complained": "complained_at",
}


COUNTS = (  # message counters, per FigureKey
    "recipients",
    "delivered",
    "opened",
    "opened_human",
    "clicked",
    "unsubscribed",
    "bounced",
    "complained",
    "converted",
)
# the report's counters (the figures table's columns): the message counts, the attributed orders
# and revenue, and per split arm the runs that sent their first message in it and those converted
FIGURES = (*COUNTS, "orders", "revenue_micros", "arm_runs", "arm_converted")


@dataclass(frozen=True, order=True)
class FigureKey:
    """Where a counter goes: flow, step, split and arm ("" outside one), channel, UTC day, and
    the currency ("" for message counts; an order's currency for its revenue)."""

    flow: str
    step: str
    split: str
    arm: str
    channel: str
    day: str
    currency: str = ""


@dataclass(frozen=True)
class Message:
    """A delivered send, by its provider message id, and the first and last of each engagement."""

    message_id: str
    send_key: str
    run_id: str
    flow_id: str
    step: str  # the step's name, else its path
    split: str | None  # the innermost split step around it (name or path), with its arm
    arm: str | None
    channel: str
    customer_key: str | None
    recipient: str | None
    sent_at: datetime
    part: int
    delivered_at: datetime | None = None
    opened_at: datetime | None = None  # any open, a machine's included
    human_opened_at: datetime | None = None  # the first open no machine made
    last_open_at: datetime | None = None
    last_human_open_at: datetime | None = None
    clicked_at: datetime | None = None
    last_click_at: datetime | None = None
    unsubscribed_at: datetime | None = None
    bounced_at: datetime | None = None
    complained_at: datetime | None = None
    converted_at: datetime | None = None  # its run reached the goal, or an order was attributed to it

    def evolve(self, **changes: Any) -> Message:
        return replace(self, **changes)

    @property
    def touched_at(self) -> datetime:
        """Its latest touch of any kind: what `touched_since` looks up."""
        times = (self.sent_at, self.delivered_at, self.last_open_at, self.last_click_at)
        return max(t for t in times if t is not None)


@dataclass(frozen=True)
class Engagement:
    """One `message.*` event as kept: matched to a message (`send_key`), or not (an unknown id)."""

    event_id: str
    provider: str
    kind: str
    message_id: str | None
    recipient: str | None
    occurred_at: datetime
    machine: bool
    send_key: str | None


@dataclass(frozen=True)
class Attributed:
    """An order and the message it is attributed to (last touch), with the money it brought."""

    order_key: str
    order_id: str
    customer_key: str
    ordered_at: datetime
    amount: Decimal
    currency: str
    message_id: str
    run_id: str
    flow_id: str
    step: str
    split: str | None
    arm: str | None
    channel: str
    touch: str  # sent | delivered | opened | clicked
    touched_at: datetime
