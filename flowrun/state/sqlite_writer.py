"""SQLite has one writer at a time. serve's processes (webhook port, engine, dispatcher) queue
for it on one lock they share, taken before `BEGIN IMMEDIATE` and handed on the moment `COMMIT`
or `ROLLBACK` returns. Waiting in SQLite's own busy handler instead sleeps in growing steps (up
to 100 ms) and collapsed ingest under load. Every wait here has a timeout: a writer that cannot
get the lock in time fails its transaction (`WriterTimeout`), which its caller retries, instead
of hanging. Outside serve (the CLI) there is no shared lock and SQLite's busy timeout applies.

Reads never take it: `reading()` begins a plain WAL snapshot.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any, Protocol

from flowrun.errors import FlowrunError


class WriterTimeout(FlowrunError):
    """The SQLite write lock was not free in time."""


class LockLike(Protocol):
    def acquire(self, block: bool = True, timeout: float = -1) -> bool: ...

    def release(self) -> None: ...


def connection_class(lock: LockLike | None, timeout_s: float) -> type[sqlite3.Connection]:
    """A sqlite3.Connection that queues on `lock` (one per process when none is shared)."""
    writer: LockLike = lock if lock is not None else threading.Lock()

    class Serialised(sqlite3.Connection):
        holds = False

        def begin_immediate(self) -> None:
            if not writer.acquire(True, timeout_s):
                raise WriterTimeout(f"the SQLite write lock was not free within {timeout_s:g} s")
            self.holds = True
            try:
                self.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.drop_writer_lock()
                raise

        def try_begin_immediate(self) -> bool:
            """BEGIN IMMEDIATE if the lock is free this instant (for a caller that must not wait)."""
            if not writer.acquire(False):
                return False
            self.holds = True
            try:
                self.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # a writer outside flowrun's lock (the CLI)
                self.drop_writer_lock()
                return False
            return True

        def drop_writer_lock(self) -> None:
            if self.holds:
                self.holds = False
                writer.release()

        def commit(self) -> None:
            try:
                super().commit()
            finally:
                self.drop_writer_lock()

        def rollback(self) -> None:
            try:
                super().rollback()
            finally:
                self.drop_writer_lock()

        def close(self) -> None:  # an invalidated connection must not keep the lock
            try:
                super().close()
            finally:
                self.drop_writer_lock()

    return Serialised


def begin_immediate(dbapi_connection: Any) -> None:
    dbapi_connection.begin_immediate()
