"""Derivation state and named cursors (`cursors`): checks with an optional due time, poll and
schedule cursors. Reads from the unit of work's snapshot, writes held until its commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.engine import Connection

from flowrun.runtime.records import Check
from flowrun.state import codec
from flowrun.state.database import upsert_many
from flowrun.state.schema import cursors

_GET = select(cursors).where(cursors.c.name == bindparam("name"))


class SqlChecks:
    def __init__(self, reader: Connection) -> None:
        self.reader = reader
        self.changed: dict[str, Check | None] = {}

    def get(self, name: str) -> Check | None:
        if name in self.changed:
            return self.changed[name]
        row = self.reader.execute(_GET, {"name": name}).mappings().first()
        return check_from_row(row) if row else None

    def put(self, check: Check) -> None:
        self.changed[check.name] = check

    def delete(self, name: str) -> None:
        self.changed[name] = None

    def flush(self, conn: Connection) -> None:
        gone = [{"b_name": n} for n, c in self.changed.items() if c is None]
        if gone:
            conn.execute(delete(cursors).where(cursors.c.name == bindparam("b_name")), gone)
        upsert_many(conn, cursors, [check_row(c) for c in self.changed.values() if c is not None])


def check_row(check: Check) -> dict[str, Any]:
    return {
        "name": check.name,
        "value": codec.dumps(check.value),
        "due_at": codec.utc(check.due_at),
        "part": check.part,
    }


def check_from_row(row: Any) -> Check:
    due = row["due_at"]
    return Check(row["name"], codec.loads(row["value"]), int(row["part"]), codec._aware(due) if due else None)
