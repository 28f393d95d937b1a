"""Canonical events: one shape for every store, poller and derived source."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# In a derived event's meta: whether its threshold is one the project sets (`derive:` in
# flowrun.yaml), which flows naming no threshold of their own receive. Absent: an event
# from outside (a canonical envelope), which every trigger of its type receives.
DEFAULT_THRESHOLD = "default_threshold"


@dataclass(frozen=True)
class Event:
    type: str
    source: str
    id: str
    occurred_at: datetime
    data: Mapping[str, Any]
    raw: Any = None
    topic: str | None = None
    customer_key: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def context(self) -> dict[str, Any]:
        """What conditions and templates see: the data's top-level objects plus `event`.

        Built once per event and shared: callers copy it, never change it."""
        cached: dict[str, Any] | None = self.__dict__.get("_context")
        if cached is not None:
            return cached
        cached = {
            **self.data,
            "event": {
                "type": self.type,
                "source": self.source,
                "id": self.id,
                "occurred_at": self.occurred_at,
                "raw": self.raw,
            },
        }
        object.__setattr__(self, "_context", cached)
        return cached


def customer_key(data: Mapping[str, Any]) -> str | None:
    """Who an event is about, the same across stores: email first, then store id, then phone.

    Email is the one field orders, checkouts, fulfilments and customers all carry, so a
    checkout (guest or not) and the order that completes it meet on the same key.
    """
    customer = data.get("customer") or {}
    if customer.get("email"):
        return "email:" + str(customer["email"]).strip().lower()
    if customer.get("id"):
        return "id:" + str(customer["id"])
    if customer.get("phone"):
        return "phone:" + str(customer["phone"])
    return None
