"""A unit of work over SQL: the runtime's repositories reading from one snapshot, their writes
held in memory and flushed by `commit` in one short write transaction. Rendering, conditions and
guardrail decisions all happen before that transaction begins, so SQLite's write lock is held
only for the writes themselves.

That is safe because one instance moves a partition's runs at a time (on SQLite there is one
instance; on PostgreSQL a lease, checked inside the write transaction by `fence`), and what a
dispatcher changes meanwhile is guarded by conditional updates (flowrun.state.outbox).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Connection, Engine

from flowrun.engine.state import RunState
from flowrun.events import Event
from flowrun.runtime.records import partition_of
from flowrun.runtime.sending import run_part
from flowrun.state import codec
from flowrun.state.checks import SqlChecks
from flowrun.state.customers import SqlConsent, SqlLedger, SqlSendLog
from flowrun.state.database import insert_many_ignore, upsert_many
from flowrun.state.messages import SqlMessages
from flowrun.state.outbox import SqlOutbox
from flowrun.state.profiles import SqlOrders, SqlProfiles
from flowrun.state.runs import SqlRuns
from flowrun.state.schema import entries, inbox, runs

Fence = Callable[[Connection, set[int]], None]  # raises if this instance no longer owns a partition
_MARK = (
    update(inbox)
    .where(inbox.c.seq == bindparam("b_seq"))
    .values(status=bindparam("b_status"), error=bindparam("b_error"))
)
HANDED_OVER = "handover"  # inbox topics of events handed to another partition's owner
REACH_ONLY = "reach"


class SqlUnitOfWork:
    def __init__(
        self,
        reader: Connection,
        parts: frozenset[int] | None = None,
        known: MutableMapping[str, RunState] | None = None,
        now: datetime | None = None,
    ) -> None:
        self.reader, self.parts, self.now = reader, parts, now
        self.runs = SqlRuns(reader, parts, known)
        self.outbox = SqlOutbox(reader)
        self.sends = SqlSendLog(reader)
        self.consent = SqlConsent(reader)
        self.checks = SqlChecks(reader)
        self.ledger = SqlLedger(reader)
        self.profiles = SqlProfiles(reader)
        self.orders = SqlOrders(reader)
        self.messages = SqlMessages(reader)
        self.marks: list[dict[str, Any]] = []
        self.handed: list[dict[str, Any]] = []
        self.touched: set[int] = set()

    def owns(self, part: int) -> bool:
        return self.parts is None or part in self.parts

    def fan_out(self, event: Event, part: int, *, reach_only: bool) -> None:
        body = codec.dumps(codec.event_to_dict(event)).encode()
        self.handed.append(
            {
                "source": "flowrun",
                "topic": REACH_ONLY if reach_only else HANDED_OVER,
                "delivery_id": f"{event.id}>{part}",
                "received_at": codec.utc(self.now),
                "triggered_at": None,
                "body": body,
                "status": "pending",
                "part": part,
            }
        )

    def mark_inbox(self, seq: int, part: int, status: str, error: str | None = None) -> None:
        self.marks.append({"b_seq": seq, "b_status": status, "b_error": error})
        self.touched.add(part)

    def parts_written(self) -> set[int]:
        found = set(self.touched)
        found.update(run_part(r) for r in self.runs.changed.values())
        found.update(s.part for s in self.outbox.added.values())
        found.update(s.part for s, _ in self.outbox.changed.values())
        found.update(c.part for c in self.checks.changed.values() if c is not None)
        found.update(partition_of(k) for k in self.profiles.changed)
        found.update(m.part for m in self.messages.changed.values())
        return found

    def flush(self, conn: Connection) -> None:
        upsert_many(conn, runs, self.runs.rows())
        upsert_many(conn, entries, self.runs.entry_rows())
        self.outbox.flush(conn)
        self.sends.flush(conn)
        self.consent.flush(conn)
        self.checks.flush(conn)
        self.ledger.flush(conn)
        self.profiles.flush(conn, self.now)
        self.orders.flush(conn)
        self.messages.flush(conn)
        if self.marks:
            conn.execute(_MARK, self.marks)
        insert_many_ignore(conn, inbox, self.handed)


def commit(engine: Engine, uow: SqlUnitOfWork, fence: Fence | None = None) -> None:
    """Write the unit's changes in one transaction (after checking its partitions are still ours)."""
    with engine.begin() as conn:
        if fence is not None:
            fence(conn, uow.parts_written())
        uow.flush(conn)
