"""The loyalty ledger: every change of a customer's points with its reason and run.

`Ledger` is what the loyalty action writes to. `MemoryLedger` serves dry-run and tests;
serve keeps the ledger in the state database (flowrun.state.ledger.SqlLedger), written in
the same transaction as the run's next step. Entries are keyed by the action (run + step),
so an action applied twice (a re-send after a crash) changes the balance once.

A balance never goes below zero: a redemption larger than the balance is refused and
recorded in the action's result, not in the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from flowrun.events import Event


@dataclass(frozen=True)
class LedgerEntry:
    key: str
    customer: str
    points: int
    balance: int  # after this change
    reason: str
    run_id: str
    at: datetime


class Ledger(Protocol):
    def entry(self, key: str) -> LedgerEntry | None: ...

    def balance(self, customer: str) -> int: ...

    def append(self, entry: LedgerEntry) -> None: ...


@dataclass
class MemoryLedger:
    entries: dict[str, LedgerEntry] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)

    def entry(self, key: str) -> LedgerEntry | None:
        return self.entries.get(key)

    def balance(self, customer: str) -> int:
        return self.balances.get(customer, 0)

    def append(self, entry: LedgerEntry) -> None:
        self.entries[entry.key] = entry
        self.balances[entry.customer] = entry.balance


@dataclass(frozen=True)
class Change:
    """What applying one loyalty action did: the entry (None if refused) and why not."""

    entry: LedgerEntry | None
    balance: int
    refused: str = ""


def change_points(
    ledger: Ledger, key: str, customer: str, points: int, reason: str, run_id: str, at: datetime
) -> Change:
    existing = ledger.entry(key)
    if existing is not None:
        return Change(existing, existing.balance)
    balance = ledger.balance(customer)
    if balance + points < 0:
        return Change(None, balance, f"balance {balance} is less than the {-points} points to redeem")
    entry = LedgerEntry(key, customer, points, balance + points, reason, run_id, at)
    ledger.append(entry)
    return Change(entry, entry.balance)


def earned_event(entry: LedgerEntry, customer: dict[str, object], source: str) -> Event:
    """`loyalty.points_earned`, which other flows may trigger on; its id is the ledger key,
    so it starts each flow at most once."""
    return Event(
        type="loyalty.points_earned",
        source=source,
        id=f"loyalty:{entry.key}",
        occurred_at=entry.at,
        data={
            "customer": customer,
            "loyalty": {"points": entry.points, "balance": entry.balance, "reason": entry.reason},
        },
        customer_key=entry.customer,
    )
