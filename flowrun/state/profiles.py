"""Profiles, the order history and segment members over SQL: reads from the unit of work's
snapshot (plus what it wrote so far), writes held until its commit."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, bindparam, case, delete, func, select, update
from sqlalchemy.engine import Connection

from flowrun.profile.record import OrderRow, Profile, RefundRow, from_dict, net_of, to_dict
from flowrun.runtime.records import partition_of
from flowrun.state import codec
from flowrun.state.database import insert_many_ignore, upsert_many
from flowrun.state.schema import order_history, profiles, refund_history, segment_members

E4 = Decimal(10000)
_GET = select(profiles.c.value).where(profiles.c.customer_key == bindparam("key"))
_KNOWN = select(order_history.c.order_id).where(order_history.c.order_id == bindparam("id"))
_ORDER = select(order_history).where(order_history.c.order_id == bindparam("id"))
_REFUNDED = select(refund_history.c.refund_id).where(refund_history.c.refund_id == bindparam("id"))
# relative, so that a refund written meanwhile by another unit of work is not overwritten
_TAKEN: Any = bindparam("b_taken", type_=BigInteger)
_NET = (
    update(order_history)
    .where(order_history.c.order_id == bindparam("b_id"))
    .values(total_e4=case((order_history.c.total_e4 > _TAKEN, order_history.c.total_e4 - _TAKEN), else_=0))
)
_LEAVE = delete(segment_members).where(
    segment_members.c.segment == bindparam("b_segment"), segment_members.c.customer_key == bindparam("b_key")
)


class SqlProfiles:
    def __init__(self, reader: Connection) -> None:
        self.reader = reader
        self.changed: dict[str, Profile] = {}
        self.before: dict[str, tuple[str, ...]] = {}  # segments as read, to keep segment_members
        self.read: dict[str, Profile | None] = {}  # prefetched

    def get(self, customer_key: str) -> Profile | None:
        if customer_key in self.changed:
            return self.changed[customer_key]
        if customer_key in self.read:
            return self.read[customer_key]
        value = self.reader.execute(_GET, {"key": customer_key}).scalar()
        found = from_dict(codec.loads(value)) if value is not None else None
        self.before.setdefault(customer_key, found.segments if found else ())
        return found

    def prefetch(self, keys: Iterable[str]) -> None:
        """Read these profiles in one query (a backfill page, an engine batch)."""
        wanted = sorted(set(keys) - set(self.changed) - set(self.before))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            found = dict(
                self.reader.execute(
                    select(profiles.c.customer_key, profiles.c.value).where(profiles.c.customer_key.in_(chunk))
                ).all()
            )
            for key in chunk:
                profile = from_dict(codec.loads(found[key])) if key in found else None
                self.before[key] = profile.segments if profile else ()
                self.read[key] = profile

    def put(self, profile: Profile) -> None:
        if profile.key not in self.before:
            self.get(profile.key)
        self.changed[profile.key] = profile

    def flush(self, conn: Connection, now: datetime | None) -> None:
        rows, joined, left = [], [], []
        for key, p in self.changed.items():
            at = codec.utc(now or p.last_seen_at or datetime.now().astimezone())
            rows.append(
                {"customer_key": key, "value": codec.dumps(to_dict(p)), "part": partition_of(key), "updated_at": at}
            )
            old = set(self.before.get(key, ()))
            joined += [{"segment": s, "customer_key": key, "since": at} for s in p.segments if s not in old]
            left += [{"b_segment": s, "b_key": key} for s in old - set(p.segments)]
        upsert_many(conn, profiles, rows)
        if left:
            conn.execute(_LEAVE, left)
        insert_many_ignore(conn, segment_members, joined)


class SqlOrders:
    def __init__(self, reader: Connection) -> None:
        self.reader = reader
        self.added: dict[str, OrderRow] = {}
        self.checked: dict[str, bool] = {}  # prefetched: order id -> in the history
        self.refunds: dict[str, RefundRow] = {}
        self.lowered: dict[str, tuple[OrderRow, OrderRow]] = {}  # stored orders refunds lowered: as read, now

    def prefetch(self, order_ids: Iterable[str]) -> None:
        """Which of these orders the history has, in one query per 500."""
        wanted = sorted(set(order_ids))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            known = set(
                self.reader.execute(
                    select(order_history.c.order_id).where(order_history.c.order_id.in_(chunk))
                ).scalars()
            )
            self.checked.update((i, i in known) for i in chunk)

    def add(self, row: OrderRow) -> bool:
        if row.order_id in self.added:
            return False
        known = self.checked.get(row.order_id)
        if known is None:
            known = self.reader.execute(_KNOWN, {"id": row.order_id}).first() is not None
        if known:
            return False
        self.added[row.order_id] = row
        return True

    def refund(self, row: RefundRow) -> tuple[OrderRow, OrderRow] | None:
        if row.refund_id in self.refunds or self.reader.execute(_REFUNDED, {"id": row.refund_id}).first():
            return None
        before = self._order(row.order_id)
        after = net_of(before, row) if before is not None else None
        if before is None or after is None:  # not used up: a replay after the order arrives applies it
            return None
        self.refunds[row.refund_id] = row
        if row.order_id in self.added:
            self.added[row.order_id] = after
        else:
            self.lowered[row.order_id] = (self.lowered.get(row.order_id, (before, before))[0], after)
        return before, after

    def _order(self, order_id: str) -> OrderRow | None:
        if order_id in self.added:
            return self.added[order_id]
        if order_id in self.lowered:
            return self.lowered[order_id][1]
        found = self.reader.execute(_ORDER, {"id": order_id}).mappings().first()
        if found is None:
            return None
        return OrderRow(
            order_id,
            found["customer_key"],
            codec._aware(found["at"]),
            Decimal(int(found["total_e4"])) / E4,
            found["currency"],
            tuple(codec.loads(found["products"])),
        )

    def _where(self, since: datetime | None, until: datetime | None, customer_key: str | None) -> list[Any]:
        found = []
        if since is not None:
            found.append(order_history.c.at >= codec.utc(since))
        if until is not None:
            found.append(order_history.c.at < codec.utc(until))
        if customer_key is not None:
            found.append(order_history.c.customer_key == customer_key)
        return found

    def _pending(self, since: datetime | None, until: datetime | None, customer_key: str | None) -> list[OrderRow]:
        return [r for r in self.added.values() if _within(r, since, until, customer_key)]

    def count(self, since: datetime | None, until: datetime | None, customer_key: str | None = None) -> int:
        query = select(func.count()).select_from(order_history).where(*self._where(since, until, customer_key))
        return int(self.reader.execute(query).scalar() or 0) + len(self._pending(since, until, customer_key))

    def revenue(
        self, since: datetime | None, until: datetime | None, customer_key: str | None = None
    ) -> dict[str, Decimal]:
        query = (
            select(order_history.c.currency, func.sum(order_history.c.total_e4))
            .where(*self._where(since, until, customer_key))
            .group_by(order_history.c.currency)
        )
        totals = {cur: Decimal(int(total)) / E4 for cur, total in self.reader.execute(query)}
        for row in self._pending(since, until, customer_key):
            totals[row.currency] = totals.get(row.currency, Decimal(0)) + row.total
        for before, after in self.lowered.values():  # refunds not yet written
            if _within(before, since, until, customer_key):
                totals[before.currency] = totals.get(before.currency, Decimal(0)) - (before.total - after.total)
        return totals

    def flush(self, conn: Connection) -> None:
        insert_many_ignore(conn, order_history, [order_history_row(r) for r in self.added.values()])
        refunds = [
            {"refund_id": r.refund_id, "order_id": r.order_id, "amount_e4": _e4(r.amount)}
            for r in self.refunds.values()
        ]
        insert_many_ignore(conn, refund_history, refunds)
        if self.lowered:
            taken = [
                {"b_id": key, "b_taken": _e4(first.total - now.total)} for key, (first, now) in self.lowered.items()
            ]
            conn.execute(_NET, taken)


def order_history_row(row: OrderRow) -> dict[str, Any]:
    return {
        "order_id": row.order_id,
        "customer_key": row.customer_key,
        "at": codec.utc(row.at),
        "currency": row.currency,
        "total_e4": _e4(row.total),
        "products": codec.dumps(list(row.products)),
    }


def _e4(amount: Decimal) -> int:
    return int((amount * E4).to_integral_value())


def _within(row: OrderRow, since: datetime | None, until: datetime | None, customer_key: str | None) -> bool:
    return (
        (since is None or row.at >= since)
        and (until is None or row.at < until)
        and (customer_key is None or row.customer_key == customer_key)
    )
