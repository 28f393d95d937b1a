"""What the runtime keeps per customer besides runs: marketing sends (caps), consent, and the
loyalty ledger. Reads from the unit of work's snapshot, writes held until its commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.engine import Connection

from flowrun.loyalty import LedgerEntry
from flowrun.state import codec
from flowrun.state.database import insert_many_ignore, upsert_many
from flowrun.state.schema import loyalty_balances, loyalty_ledger, sends, suppressions


class SqlSendLog:
    def __init__(self, reader: Connection) -> None:
        self.reader = reader
        self.reserved: dict[str, dict[str, Any]] = {}
        self.released: set[str] = set()

    def recent(self, customer_key: str, channel: str, since: datetime) -> list[datetime]:
        query = select(sends.c.key, sends.c.at).where(
            sends.c.customer_key == customer_key, sends.c.channel == channel, sends.c.at > codec.utc(since)
        )
        found = {k: codec._aware(at) for k, at in self.reader.execute(query)}
        for key, row in self.reserved.items():
            if row["customer_key"] == customer_key and row["channel"] == channel and row["at"] > since:
                found[key] = row["at"]
        return [at for key, at in found.items() if key not in self.released]

    def reserve(self, key: str, customer_key: str, channel: str, at: datetime) -> None:
        self.released.discard(key)
        self.reserved[key] = {"key": key, "customer_key": customer_key, "channel": channel, "at": at}

    def release(self, key: str) -> None:
        self.reserved.pop(key, None)
        self.released.add(key)

    def flush(self, conn: Connection) -> None:
        if self.released:
            conn.execute(delete(sends).where(sends.c.key == bindparam("b_key")), [{"b_key": k} for k in self.released])
        rows = [{**r, "at": codec.utc(r["at"])} for r in self.reserved.values()]
        insert_many_ignore(conn, sends, rows)


class SqlConsent:
    def __init__(self, reader: Connection) -> None:
        self.reader = reader
        self.changed: dict[str, dict[str, Any] | None] = {}

    def suppressed(self, customer_key: str) -> bool:
        if customer_key in self.changed:
            return self.changed[customer_key] is not None
        query = select(suppressions.c.customer_key).where(suppressions.c.customer_key == customer_key)
        return self.reader.execute(query).first() is not None

    def record(self, customer_key: str, suppressed: bool, reason: str, at: datetime) -> None:
        row = {"customer_key": customer_key, "reason": reason, "at": codec.utc(at)}
        self.changed[customer_key] = row if suppressed else None

    def flush(self, conn: Connection) -> None:
        gone = [{"b_key": k} for k, v in self.changed.items() if v is None]
        if gone:
            conn.execute(delete(suppressions).where(suppressions.c.customer_key == bindparam("b_key")), gone)
        upsert_many(conn, suppressions, [v for v in self.changed.values() if v is not None])


class SqlLedger:
    """flowrun.loyalty.Ledger over SQL: entries keyed by the action, a balance per customer."""

    def __init__(self, reader: Connection) -> None:
        self.reader = reader
        self.added: dict[str, LedgerEntry] = {}
        self.balances: dict[str, int] = {}

    def entry(self, key: str) -> LedgerEntry | None:
        if key in self.added:
            return self.added[key]
        row = self.reader.execute(select(loyalty_ledger).where(loyalty_ledger.c.key == key)).mappings().first()
        return ledger_entry(row) if row else None

    def balance(self, customer: str) -> int:
        if customer in self.balances:
            return self.balances[customer]
        query = select(loyalty_balances.c.balance).where(loyalty_balances.c.customer_key == customer)
        return int(self.reader.execute(query).scalar() or 0)

    def append(self, entry: LedgerEntry) -> None:
        self.added[entry.key] = entry
        self.balances[entry.customer] = entry.balance

    def flush(self, conn: Connection) -> None:
        rows = [
            {
                "key": e.key,
                "customer_key": e.customer,
                "points": e.points,
                "balance": e.balance,
                "reason": e.reason,
                "run_id": e.run_id,
                "at": codec.utc(e.at),
            }
            for e in self.added.values()
        ]
        insert_many_ignore(conn, loyalty_ledger, rows)
        latest: dict[str, LedgerEntry] = {e.customer: e for e in self.added.values()}
        balances = [{"customer_key": c, "balance": e.balance, "updated_at": codec.utc(e.at)} for c, e in latest.items()]
        upsert_many(conn, loyalty_balances, balances)


def ledger_entry(row: Any) -> LedgerEntry:
    return LedgerEntry(
        key=str(row["key"]),
        customer=str(row["customer_key"]),
        points=int(row["points"]),
        balance=int(row["balance"]),
        reason=str(row["reason"]),
        run_id=str(row["run_id"]),
        at=codec._aware(row["at"]),
    )


def history(conn: Connection, customer: str | None, limit: int = 200) -> list[LedgerEntry]:
    query = select(loyalty_ledger).order_by(loyalty_ledger.c.at.desc()).limit(limit)
    if customer:
        query = query.where(loyalty_ledger.c.customer_key == customer)
    return [ledger_entry(row) for row in conn.execute(query).mappings()]


def balances(conn: Connection, limit: int = 200) -> list[tuple[str, int]]:
    query = select(loyalty_balances.c.customer_key, loyalty_balances.c.balance)
    query = query.order_by(loyalty_balances.c.balance.desc()).limit(limit)
    return [(str(k), int(b)) for k, b in conn.execute(query)]
