"""A spool file read or changed from outside serve (`flowrun inbox`, /metrics): what waits in
it, what the inbox refused, and spooling the refused rows again."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import Engine

from flowrun.state.cursors import get_cursor
from flowrun.state.database import reading
from flowrun.state.spool import FIELDS, connect, spool_cursor, spool_path

T = TypeVar("T")
_LISTED = ("seq", "source", "topic", "delivery_id", "received_at", "error")


def _read(database: Path, query: Callable[[sqlite3.Connection], T], empty: T) -> T:
    """`query` on the spool beside `database`, read only; `empty` without one, or for a file
    that is not a spool yet or holds no `refused` table yet."""
    path = spool_path(database)
    if not path.is_file():
        return empty
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return query(conn)
    except sqlite3.OperationalError:
        return empty
    finally:
        conn.close()


def waiting(database: Path, state: Engine) -> int:
    """Accepted deliveries still in the spool beside `database`: after a crash of the webhook
    port they wait there until serve starts again."""

    def count(conn: sqlite3.Connection) -> int:
        found = conn.execute("SELECT id FROM spool_id").fetchone()
        if found is None:
            return 0
        with reading(state) as db, db.begin():
            mark = int(get_cursor(db, spool_cursor(found[0])) or 0)
        return int(conn.execute("SELECT count(*) FROM spool WHERE seq > ?", (mark,)).fetchone()[0])

    return _read(database, count, 0)


def refused(database: Path, limit: int = 200) -> list[dict[str, Any]]:
    """The rows the inbox refused, kept in the spool, oldest first."""
    query = f"SELECT {', '.join(_LISTED)} FROM refused ORDER BY seq LIMIT ?"
    return _read(database, lambda c: [dict(zip(_LISTED, r, strict=True)) for r in c.execute(query, (limit,))], [])


def refused_count(database: Path) -> int:
    return _read(database, lambda c: int(c.execute("SELECT count(*) FROM refused").fetchone()[0]), 0)


def respool(database: Path) -> int:
    """Spool the refused rows again (after a fix), in their order; how many. A running serve
    moves them with its next webhook, a stopped one when it starts."""
    if not refused_count(database):
        return 0
    names = ", ".join(FIELDS)
    conn = connect(spool_path(database))
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # the originals, at or below the mark, may still be there (a put deletes them): their
            # (source, delivery_id) would make the copies a conflict, and the put delete them after
            conn.execute("DELETE FROM spool WHERE seq IN (SELECT seq FROM refused)")
            # WHERE 1: without it SQLite would read ON CONFLICT as part of the SELECT's join
            count = conn.execute(
                f"INSERT INTO spool ({names}) SELECT {names} FROM refused WHERE 1 ORDER BY seq"
                " ON CONFLICT (source, delivery_id) DO NOTHING"
            ).rowcount
            conn.execute("DELETE FROM refused")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return int(count)
