"""What the runtime reads and writes besides runs: outbox rows (sends) and derivation checks."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

PARTITIONS = 64  # hash partitions of the customer key; the unit of ownership between instances


def partition_of(key: str) -> int:
    return zlib.crc32(key.encode()) % PARTITIONS


class SendStatus(StrEnum):
    PENDING = "pending"  # needs a guardrail decision at next_attempt_at (new, deferred, re-queued)
    READY = "ready"  # decided: a dispatcher may claim it at next_attempt_at
    SENDING = "sending"  # claimed by a dispatcher
    DELIVERED = "delivered"  # the provider accepted it: result kept
    FAILED = "failed"  # failed for good with on_error: continue
    PARKED = "parked"  # failed for good; the run waits for `flowrun retry`
    SKIPPED = "skipped"  # a guardrail said no
    CANCELLED = "cancelled"  # the run ended before it was sent

    @property
    def unsent(self) -> bool:
        return self in UNSENT


UNSENT = frozenset({SendStatus.PENDING, SendStatus.READY, SendStatus.PARKED})
OUTCOMES = frozenset({SendStatus.DELIVERED, SendStatus.FAILED})  # what a run is handed


@dataclass(frozen=True)
class Send:
    """One outbox row: an action a run asked for, keyed by run + step (its idempotency key)."""

    key: str
    run_id: str
    part: int
    action: str
    step: str
    params: Mapping[str, Any]
    status: SendStatus
    customer_key: str | None
    channel: str | None
    category: str
    on_error: str
    max_attempts: int
    backoff_s: float
    max_backoff_s: float
    timeout_s: float
    next_attempt_at: datetime
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    last_error: str = ""
    result: Mapping[str, Any] | None = None
    applied: bool = False
    claimed_by: str | None = None

    def evolve(self, **changes: Any) -> Send:
        return replace(self, **changes)


@dataclass(frozen=True)
class Attempt:
    """A line of an action's history, shown by `flowrun show`."""

    key: str
    at: datetime
    outcome: str  # ok | retry | deferred | skipped | parked | failed | cancelled | unknown | rate_limited
    detail: str = ""


@dataclass(frozen=True)
class Check:
    """Derivation state with an optional due time: an abandonment or inactivity check, a stock level."""

    name: str
    value: Any
    part: int
    due_at: datetime | None = None


@dataclass(frozen=True)
class Applied:
    """What applying one input changed that a driver acts on after the commit."""

    runs: list[Any] = field(default_factory=list)  # RunState, in the order they changed
    ready: list[Send] = field(default_factory=list)  # sends a dispatcher may take now
    engaged: list[bool] = field(default_factory=list)  # per message.* event: matched to a send


def event_key(event: Any) -> str:
    """Whose an event is, for partitioning: the customer, else the stock item or product, else itself."""
    if event.customer_key:
        return str(event.customer_key)
    inventory = event.data.get("inventory") or {}
    item = inventory.get("sku") or inventory.get("inventory_item_id")
    if item:
        return f"item:{item}"
    product = event.data.get("product") or {}
    if product.get("id"):
        return f"product:{product['id']}"
    return f"event:{event.id}"
