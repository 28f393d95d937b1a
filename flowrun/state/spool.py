"""The webhook port's spool on SQLite: a file of its own beside the state database, where an
accepted delivery is made durable before it is acknowledged.

The state database has one writer at a time. Under load the engine, the dispatcher and
retention hold its lock about three quarters of the time, and a webhook that had to be in the
inbox before its answer waited behind all of them (and behind every prune batch). The spool's
only writer is the port's event loop, so an acknowledgement waits for nobody but its own
commit. The port's writer thread then moves spooled rows into the inbox (`drain`), in order.

The inbox rows and the spool's high-water mark (a cursor in the state database named after
this spool file's id) are committed in one transaction of the state database, so a crash
between the two files neither loses nor repeats a row: rows above the mark are moved again,
and the inbox's (source, delivery_id) key would make a second move a no-op anyway. Rows at or
below the mark are deleted by the next `put`. A new spool file has a new id, so a mark left by
a deleted spool never hides a row.

A duplicate is recognised against both files: the spool, and the inbox as of one snapshot that
also gives the mark (a row is in the spool, above the mark, or in the inbox at or below it).

A row the database refuses for a reason that will not pass (a constraint, a value its driver
cannot bind) would hold every later row back. A batch refused that way is moved again row by row, and a
row still refused is copied to the spool's `refused` table and passed by the mark: it is
acknowledged, so it stays there, listed by `flowrun inbox`, until `flowrun inbox --replay-all`
spools it again. A locked, busy or full database is passing: the caller waits and tries again.
Any other exception is a bug, and ends the writer thread (and the port, which systemd restarts).
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError

from flowrun.state.cursors import get_cursor, set_cursor
from flowrun.state.database import reading
from flowrun.state.schema import inbox

log = logging.getLogger("flowrun.spool")
# what the database says is wrong with a row itself; any other error (locked, busy, full) is
# raised to the caller, which tries again later: never refused
REFUSING = (
    IntegrityError,
    DataError,
    InterfaceError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
)
BATCH_BYTES = 8 * 1024 * 1024  # bodies a move holds in memory at most (one row, if it alone is larger)
WAL_KEEP_BYTES = 16 * 1024 * 1024  # a WAL a burst grew past this is cut back when it restarts
DELETE_ROWS = 1024  # rows of the spool a put deletes at most: the event loop never waits for a long DELETE
FIELDS = ("source", "delivery_id", "topic", "received_at", "triggered_at", "body", "part")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spool_id (id TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,"
    " delivery_id TEXT NOT NULL, topic TEXT, received_at TEXT NOT NULL, triggered_at TEXT, body BLOB NOT NULL,"
    " part INTEGER NOT NULL DEFAULT 0, UNIQUE (source, delivery_id))",
    "CREATE TABLE IF NOT EXISTS refused (seq INTEGER PRIMARY KEY, source TEXT, delivery_id TEXT, topic TEXT,"
    " received_at TEXT, triggered_at TEXT, body BLOB, part INTEGER, error TEXT NOT NULL, refused_at TEXT NOT NULL)",
)


def spool_path(database: Path) -> Path:
    """`state.db` -> `state.spool.db` (with its own -wal and -shm files)."""
    return database.with_name(f"{database.stem}.spool{database.suffix}")


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # an acknowledged webhook survives power loss
    conn.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
    return conn


def _open(conn: sqlite3.Connection, state: Engine) -> str:
    """The spool's id; its next seq above the mark the state database holds for it. A spool
    restored from a copy, or one whose WAL was lost, would otherwise number new rows at or
    below the mark: never moved, and deleted by the next put."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            conn.execute(statement)
        found = conn.execute("SELECT id FROM spool_id").fetchone()
        if found is None:
            found = (uuid.uuid4().hex,)
            conn.execute("INSERT INTO spool_id VALUES (?)", found)
        with reading(state) as db, db.begin():
            mark = int(get_cursor(db, spool_cursor(found[0])) or 0)
        sequence = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'spool'").fetchone()
        if sequence is None:
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('spool', ?)", (mark,))
        elif sequence[0] < mark:
            conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'spool'", (mark,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return str(found[0])


class Spool:
    """`put` on one thread (the port's event loop), `take` and `drain` on another."""

    def __init__(self, path: Path, state: Engine) -> None:
        self.path, self.state = path, state
        self._writer = connect(path)
        self._writer.execute("PRAGMA wal_autocheckpoint=0")  # the drain checkpoints, off the loop
        self.id = _open(self._writer, state)
        self.cursor = spool_cursor(self.id)
        self._reader = connect(path)
        first = self._writer.execute("SELECT min(seq) FROM spool").fetchone()[0]
        if first is None:
            first = self._writer.execute("SELECT seq FROM sqlite_sequence WHERE name = 'spool'").fetchone()[0] + 1
        self._deleted = int(first) - 1  # rows up to this seq are gone from the file

    def close(self) -> None:
        self._writer.close()
        self._reader.close()

    def put(self, rows: list[dict[str, Any]]) -> list[bool]:
        """Store deliveries durably; False for one stored before (here or in the inbox)."""
        with reading(self.state) as conn, conn.begin():
            mark = self.mark(conn)
            known = _in_inbox(conn, rows)
        writer = self._writer
        writer.execute("BEGIN IMMEDIATE")
        try:
            if mark > self._deleted:  # what the inbox took, a batch's worth at most per turn
                upto = min(mark, self._deleted + DELETE_ROWS)
                writer.execute("DELETE FROM spool WHERE seq > ? AND seq <= ?", (self._deleted, upto))
                mark = upto
            fresh = []
            for row in rows:
                key = (row["source"], row["delivery_id"])
                new = key not in known and _insert(writer, row)
                known.add(key)
                fresh.append(new)
            writer.execute("COMMIT")
        except BaseException:
            writer.execute("ROLLBACK")
            raise
        self._deleted = max(self._deleted, mark)
        return fresh

    def mark(self, conn: Connection) -> int:
        """The last spooled row the inbox holds, as of `conn`'s snapshot."""
        return int(get_cursor(conn, self.cursor) or 0)

    def take(
        self, after: int, limit: int, max_bytes: int | None = None
    ) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
        """Spooled rows after `after`, oldest first: `limit` of them, or fewer whose bodies add
        up to `max_bytes` (BATCH_BYTES; the last one is the row that reached it); and whether
        it stopped short of the end."""
        names = ", ".join(FIELDS)
        query = f"SELECT seq, {names} FROM spool WHERE seq > ? ORDER BY seq LIMIT ?"
        found = self._reader.execute(query, (after, limit + 1))
        out: list[tuple[int, dict[str, Any]]] = []
        size, budget, more = 0, BATCH_BYTES if max_bytes is None else max_bytes, False
        for seq, *values in found:  # stepped one row at a time: the rest are not read
            if len(out) == limit or size >= budget:
                more = True
                break
            row = dict(zip(FIELDS, values, strict=True))
            row["received_at"] = datetime.fromisoformat(row["received_at"])
            out.append((seq, row))
            size += len(row["body"])
        found.close()
        return out, more

    def refuse(self, seq: int, error: str, at: datetime) -> None:
        """Keep a spooled row the inbox will not take, before the mark passes it."""
        names = ", ".join(FIELDS)
        conn = self._reader
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"INSERT OR REPLACE INTO refused (seq, {names}, error, refused_at)"
                f" SELECT seq, {names}, ?, ? FROM spool WHERE seq = ?",
                (error, at.isoformat(), seq),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def checkpoint(self) -> None:
        self._reader.execute("PRAGMA wal_checkpoint(PASSIVE)")


def spool_cursor(spool_id: str) -> str:
    return f"inbox-spool:{spool_id}"


def _insert(writer: sqlite3.Connection, row: dict[str, Any]) -> bool:
    values = [row.get(name) for name in FIELDS]
    values[FIELDS.index("received_at")] = row["received_at"].isoformat()
    values[FIELDS.index("part")] = row.get("part") or 0
    marks = ", ".join("?" * len(FIELDS))
    # not OR IGNORE: that would also skip a row breaking NOT NULL, silently
    statement = f"INSERT INTO spool ({', '.join(FIELDS)}) VALUES ({marks}) ON CONFLICT (source, delivery_id) DO NOTHING"
    cursor = writer.execute(statement, values)
    return cursor.rowcount == 1


def _in_inbox(conn: Connection, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for source in {r["source"] for r in rows}:
        ids = sorted({r["delivery_id"] for r in rows if r["source"] == source})
        for at in range(0, len(ids), 900):
            query = select(inbox.c.delivery_id).where(
                inbox.c.source == source, inbox.c.delivery_id.in_(ids[at : at + 900])
            )
            found.update((source, d) for d in conn.execute(query).scalars())
    return found


Write = Callable[[Connection, list[dict[str, Any]]], None]


def drain(spool: Spool, write: Write, limit: int) -> tuple[int, bool]:
    """Move the oldest `limit` spooled rows into the inbox in one transaction of the state
    database (`write` inserts them in it); how many were handled (moved or refused), and
    whether more are waiting. Raises any error that is not `REFUSING` (the caller tries again)."""
    with reading(spool.state) as conn, conn.begin():
        after = spool.mark(conn)
    batch, more = spool.take(after, limit)
    if batch:
        try:
            _move(spool, write, batch)
        except REFUSING as exc:
            log.warning("the inbox refused a batch of %d spooled rows (%s); moving them one by one", len(batch), exc)
            for one in batch:
                _move_or_refuse(spool, write, one)
    return len(batch), more


def _move(spool: Spool, write: Write, batch: list[tuple[int, dict[str, Any]]]) -> None:
    with spool.state.begin() as conn:
        write(conn, [row for _, row in batch])
        set_cursor(conn, spool.cursor, batch[-1][0])


def _move_or_refuse(spool: Spool, write: Write, one: tuple[int, dict[str, Any]]) -> None:
    seq, row = one
    try:
        _move(spool, write, [one])
    except REFUSING as exc:
        log.error("the inbox refused %s/%r, kept in the spool: %s", row["source"], row["delivery_id"][:80], exc)
        spool.refuse(seq, f"{type(exc).__name__}: {exc}"[:2000], datetime.now(UTC))
        with spool.state.begin() as conn:
            set_cursor(conn, spool.cursor, seq)
