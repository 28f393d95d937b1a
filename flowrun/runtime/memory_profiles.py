"""In-memory profiles and order history (dry-run, `flowrun test`), beside flowrun.runtime.memory."""

from __future__ import annotations

import bisect
from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from flowrun.profile.record import OrderRow, Profile, RefundRow, net_of


class MemoryProfiles:
    def __init__(self) -> None:
        self.profiles: dict[str, Profile] = {}

    def get(self, customer_key: str) -> Profile | None:
        return self.profiles.get(customer_key)

    def put(self, profile: Profile) -> None:
        self.profiles[profile.key] = profile


class MemoryOrders:
    """Rows kept in time order (shop-wide and per customer) so a period is two bisections."""

    def __init__(self) -> None:
        self.rows: dict[str, OrderRow] = {}
        self.refunds: set[str] = set()
        self._times: list[tuple[datetime, str]] = []
        self._by_customer: dict[str, list[tuple[datetime, str]]] = defaultdict(list)

    def add(self, row: OrderRow) -> bool:
        if row.order_id in self.rows:
            return False
        self.rows[row.order_id] = row
        bisect.insort(self._times, (row.at, row.order_id))
        if row.customer_key:
            bisect.insort(self._by_customer[row.customer_key], (row.at, row.order_id))
        return True

    def refund(self, row: RefundRow) -> tuple[OrderRow, OrderRow] | None:
        if row.refund_id in self.refunds:
            return None
        before = self.rows.get(row.order_id)
        after = net_of(before, row) if before is not None else None
        if before is None or after is None:  # not used up: a replay after the order arrives applies it
            return None
        self.refunds.add(row.refund_id)
        self.rows[row.order_id] = after
        return before, after

    def _between(self, since: datetime | None, until: datetime | None, customer_key: str | None) -> list[OrderRow]:
        keys = self._by_customer.get(customer_key, []) if customer_key else self._times
        low = bisect.bisect_left(keys, (since, "")) if since is not None else 0
        high = bisect.bisect_left(keys, (until, "")) if until is not None else len(keys)
        return [self.rows[k] for _, k in keys[low:high]]

    def count(self, since: datetime | None, until: datetime | None, customer_key: str | None = None) -> int:
        return len(self._between(since, until, customer_key))

    def revenue(
        self, since: datetime | None, until: datetime | None, customer_key: str | None = None
    ) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = {}
        for row in self._between(since, until, customer_key):
            totals[row.currency] = totals.get(row.currency, Decimal(0)) + row.total
        return totals
