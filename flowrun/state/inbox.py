"""The inbox: every accepted delivery, stored before it is acknowledged and kept after.

Inserted by the webhook port (and pollers, the leader's schedule ticks, and events handed from
one partition's owner to another); read by the engine; rows that could not become an event
(`rejected`) or broke the runtime (`failed`) stay listed with their error until replayed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from flowrun.state.database import insert_ignore
from flowrun.state.schema import inbox

COLUMNS = ("source", "delivery_id", "topic", "received_at", "triggered_at", "body", "status", "part")
_SQLITE_ROWS_PER_STATEMENT = 1000  # 8,000 parameters: inside SQLite's limit (32,766 since 3.32)
_STORED = select(inbox.c.delivery_id).where(
    inbox.c.source == bindparam("source"), inbox.c.delivery_id.in_(bindparam("ids", expanding=True))
)
PROBLEMS = ("rejected", "failed")


def insert_rows(conn: Connection, rows: Iterable[dict[str, Any]]) -> list[bool]:
    """Insert deliveries; False for one stored before (a replay). Inside the caller's transaction.

    One lookup for the batch, then one INSERT for the new rows. If another writer stored one of
    them in between (PostgreSQL, another instance), the batch is done again row by row with
    ON CONFLICT DO NOTHING. SQLite holds its write lock from BEGIN IMMEDIATE: nothing comes between."""
    batch = list(rows)
    if conn.dialect.name == "sqlite":
        return insert_rows_sqlite(conn.connection.dbapi_connection, conn.dialect, batch)
    stored: set[tuple[str, str]] = set()
    for source in {r["source"] for r in batch}:
        ids = sorted({r["delivery_id"] for r in batch if r["source"] == source})
        stored.update((source, d) for d in conn.execute(_STORED, {"source": source, "ids": ids}).scalars())
    fresh, new = _split_new(batch, stored)
    if new:
        try:
            with conn.begin_nested():
                conn.execute(insert(inbox), new)
        except IntegrityError:
            return [insert_ignore(conn, inbox, {"status": "pending", "part": 0, **row}) for row in batch]
    return fresh


def insert_rows_sqlite(dbapi: Any, dialect: Any, rows: list[dict[str, Any]]) -> list[bool]:
    """`insert_rows` on a raw sqlite3 connection inside the caller's BEGIN IMMEDIATE: a lookup and
    one multi-row INSERT whatever the batch size. An executemany steps once per row and releases
    the GIL at every step, and the webhook loop and its writer traded the GIL row by row."""
    stored: set[tuple[str, str]] = set()
    cursor = dbapi.cursor()
    try:
        for source in {r["source"] for r in rows}:
            ids = sorted({r["delivery_id"] for r in rows if r["source"] == source})
            for at in range(0, len(ids), 900):
                part = ids[at : at + 900]
                marks = ",".join("?" * len(part))
                query = f"SELECT delivery_id FROM inbox WHERE source = ? AND delivery_id IN ({marks})"
                cursor.execute(query, [source, *part])
                stored.update((source, d) for (d,) in cursor.fetchall())
        fresh, new = _split_new(rows, stored)
        processors = [inbox.c[name].type.bind_processor(dialect) for name in COLUMNS]
        row_marks = "(" + ",".join("?" * len(COLUMNS)) + ")"
        for start in range(0, len(new), _SQLITE_ROWS_PER_STATEMENT):
            chunk = new[start : start + _SQLITE_ROWS_PER_STATEMENT]
            params = [
                process(row.get(name)) if process else row.get(name)
                for row in chunk
                for name, process in zip(COLUMNS, processors, strict=True)
            ]
            values = ",".join([row_marks] * len(chunk))
            cursor.execute(f"INSERT INTO inbox ({', '.join(COLUMNS)}) VALUES {values}", params)
    finally:
        cursor.close()
    return fresh


def _split_new(rows: list[dict[str, Any]], stored: set[tuple[str, str]]) -> tuple[list[bool], list[dict[str, Any]]]:
    """Which rows are new, and those rows ready to insert (a delivery twice in one batch: once)."""
    fresh, new = [], []
    for row in rows:
        key = (row["source"], row["delivery_id"])
        fresh.append(key not in stored)
        if key not in stored:
            stored.add(key)
            new.append({"status": "pending", "part": 0, **row})
    return fresh, new


def pending(conn: Connection, parts: frozenset[int] | None, limit: int) -> list[dict[str, Any]]:
    query = select(inbox).where(inbox.c.status == "pending").order_by(inbox.c.seq).limit(limit)
    if parts is not None:
        query = query.where(inbox.c.part.in_(sorted(parts)))
    return [dict(r) for r in conn.execute(query).mappings()]


def last_seq(conn: Connection) -> int:
    return int(conn.execute(select(func.max(inbox.c.seq))).scalar() or 0)


def pend_set_aside(conn: Connection, pairs: Iterable[tuple[str, str]], since: int) -> int:
    """Rows set aside after inbox row `since` whose (source, topic) is read now: pending again."""
    moved = 0
    for source, topic in sorted(pairs):
        moved += conn.execute(
            update(inbox)
            .where(inbox.c.status == "ignored", inbox.c.seq > since, inbox.c.source == source, inbox.c.topic == topic)
            .values(status="pending")
        ).rowcount
    return moved


def problems(conn: Connection, limit: int = 200) -> list[dict[str, Any]]:
    """Accepted deliveries that did not become events (rejected) or broke the runtime (failed)."""
    columns = [inbox.c.seq, inbox.c.source, inbox.c.topic, inbox.c.delivery_id, inbox.c.received_at]
    query = select(*columns, inbox.c.status, inbox.c.error).where(inbox.c.status.in_(PROBLEMS))
    return [dict(r) for r in conn.execute(query.order_by(inbox.c.seq).limit(limit)).mappings()]


def replay(conn: Connection, seqs: Sequence[int] | None) -> int:
    """Make rejected or failed rows pending again (all of them with None), after a fix."""
    query = update(inbox).where(inbox.c.status.in_(PROBLEMS))
    if seqs:
        query = query.where(inbox.c.seq.in_(list(seqs)))
    return int(conn.execute(query.values(status="pending", error=None)).rowcount)
