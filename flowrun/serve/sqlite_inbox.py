"""Inbox writes on SQLite straight on the driver connection: four statements a batch (BEGIN
IMMEDIATE, lookup, INSERT, COMMIT), since the SQLAlchemy layer around them cost more than the
writes (flowrun.serve.ingest decides who writes, and when).

When SQLite's write lock is free, the batch is written right there on the event loop: a
commit of a few dozen rows takes about a millisecond. When the lock is held (the engine's
batch, another process), nothing waits on the loop: the batch goes to the writer thread,
which queues for the lock. Handing every batch to the thread cost about 120 µs of CPU per
webhook more on this machine (the thread and the loop trading the GIL at each SQLite call),
and ingest with the engine stopped went from about 2,200 to 2,800-3,000 requests/s. The
loop's connection leaves WAL checkpoints (megabytes copied, then an fsync) to the writer
thread, which runs a passive one every CHECKPOINT_BYTES (flowrun.serve.ingest) of bodies the loop commits: the engine's
commits checkpoint too, but a store sending only topics nothing reads gives it none.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from flowrun.state.inbox import insert_rows_sqlite

log = logging.getLogger("flowrun.ingest")


class LoopConnection:
    """The event loop's connection: a write only when the lock is free at once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._raw: Any = None

    def try_write(self, rows: list[dict[str, Any]]) -> list[bool] | None:
        """The rows written, or None when the write lock is taken (or the database says busy)."""
        if self._raw is None:
            self._raw = self.engine.raw_connection()
            self._raw.dbapi_connection.execute("PRAGMA busy_timeout=0")
            self._raw.dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")
        dbapi: Any = self._raw.dbapi_connection
        if not dbapi.try_begin_immediate():
            return None
        try:
            stored = insert_rows_sqlite(dbapi, self.engine.dialect, rows)
            dbapi.commit()
        except sqlite3.OperationalError as exc:  # e.g. busy: the thread tries again, waiting
            log.warning("inbox write failed, handing it to the writer thread: %s", exc)
            dbapi.rollback()
            return None
        except BaseException:
            dbapi.rollback()
            raise
        return stored

    def close(self) -> None:
        if self._raw is not None:
            self._raw.invalidate()  # its pragmas differ: do not hand it back to the pool
            self._raw.close()


def write_waiting(engine: Engine, rows: list[dict[str, Any]]) -> list[bool]:
    """The rows written by the writer thread, waiting for the lock as every transaction does."""
    raw = engine.raw_connection()
    try:
        dbapi: Any = raw.dbapi_connection
        dbapi.begin_immediate()  # the same writer locks as every SQLAlchemy transaction
        try:
            stored = insert_rows_sqlite(dbapi, engine.dialect, rows)
            dbapi.commit()
        except BaseException:
            dbapi.rollback()
            raise
        return stored
    finally:
        raw.close()


def checkpoint(engine: Engine) -> bool:
    """PASSIVE: copies what it can and waits for nobody (no writer lock, no reader). Whether it ran."""
    raw = engine.raw_connection()  # autocommit: not inside a transaction (nor the writer lock)
    try:
        raw.dbapi_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[union-attr]
        return True
    except (OperationalError, sqlite3.OperationalError) as exc:
        log.warning("WAL checkpoint failed, the next one will copy more: %s", exc)
        return False
    finally:
        raw.close()
