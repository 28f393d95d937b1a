"""The loyalty ledger in the state database (flowrun.loyalty.Ledger over SQLAlchemy Core)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Connection

from flowrun.loyalty import LedgerEntry
from flowrun.state.codec import _aware
from flowrun.state.tables import loyalty_balances, loyalty_ledger, upsert


class SqlLedger:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def entry(self, key: str) -> LedgerEntry | None:
        row = self.conn.execute(select(loyalty_ledger).where(loyalty_ledger.c.key == key)).mappings().first()
        return _entry(dict(row)) if row else None

    def balance(self, customer: str) -> int:
        query = select(loyalty_balances.c.balance).where(loyalty_balances.c.customer_key == customer)
        return int(self.conn.execute(query).scalar() or 0)

    def append(self, entry: LedgerEntry) -> None:
        values = {
            "key": entry.key,
            "customer_key": entry.customer,
            "points": entry.points,
            "balance": entry.balance,
            "reason": entry.reason,
            "run_id": entry.run_id,
            "at": entry.at,
        }
        self.conn.execute(loyalty_ledger.insert(), values)
        upsert(
            self.conn,
            loyalty_balances,
            {"customer_key": entry.customer, "balance": entry.balance, "updated_at": entry.at},
        )

    def history(self, customer: str | None, limit: int = 200) -> list[LedgerEntry]:
        query = select(loyalty_ledger).order_by(loyalty_ledger.c.at.desc()).limit(limit)
        if customer:
            query = query.where(loyalty_ledger.c.customer_key == customer)
        return [_entry(dict(row)) for row in self.conn.execute(query).mappings()]

    def balances(self, limit: int = 200) -> list[tuple[str, int]]:
        query = select(loyalty_balances.c.customer_key, loyalty_balances.c.balance)
        query = query.order_by(loyalty_balances.c.balance.desc()).limit(limit)
        return [(str(k), int(b)) for k, b in self.conn.execute(query)]


def _entry(row: dict[str, object]) -> LedgerEntry:
    return LedgerEntry(
        key=str(row["key"]),
        customer=str(row["customer_key"]),
        points=int(str(row["points"])),
        balance=int(str(row["balance"])),
        reason=str(row["reason"]),
        run_id=str(row["run_id"]),
        at=_aware(row["at"]),  # type: ignore[arg-type]  # a datetime from the TZ column
    )
