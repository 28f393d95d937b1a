"""Durable ingest with group commit: webhook handlers hand rows to one writer thread,
which stores everything waiting in one transaction and then wakes every waiting handler.

The commit (and its fsync) never runs on the event loop, and one fsync serves a whole
batch: the webhook is acknowledged only after its row is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from flowrun.state.sqlstore import insert_inbox_rows, insert_inbox_rows_sqlite
from flowrun.state.tables import URGENT

log = logging.getLogger("flowrun.ingest")
MAX_BATCH = 512


@dataclass
class _Item:
    row: dict[str, Any]
    future: asyncio.Future[bool]
    loop: asyncio.AbstractEventLoop


class InboxWriter:
    """Handlers append to a deque (no lock, no per-item thread wake-up beyond one Event.set);
    the writer thread takes everything waiting, commits it, and answers each event loop with
    one callback per batch."""

    def __init__(self, engine: Engine, on_commit: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.on_commit = on_commit
        self._pending: deque[_Item] = deque()
        self._signal = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="inbox-writer", daemon=True)
        self.batches = 0
        self.rows = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._signal.set()
        self._thread.join(timeout=30)

    async def store(self, row: dict[str, Any]) -> bool:
        """Resolves True once committed (False for a delivery stored before)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._pending.append(_Item(row, future, loop))
        self._signal.set()
        return await future

    def _loop(self) -> None:
        URGENT.writes = True  # webhooks wait for this commit: go before the worker's batches
        while True:
            self._signal.wait()
            self._signal.clear()
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(MAX_BATCH, len(self._pending)))]
                self._write(batch)
            if self._stopping:
                return

    def _write(self, batch: list[_Item]) -> None:
        rows = [item.row for item in batch]
        for attempt in range(5):
            try:
                stored = self._insert(rows)
                break
            except (OperationalError, sqlite3.OperationalError) as exc:  # e.g. the database is locked for a moment
                log.warning("inbox write failed (attempt %d): %s", attempt + 1, getattr(exc, "orig", exc))
                time.sleep(0.05 * 2**attempt)
        else:
            self._answer(batch, None)
            return
        self.batches += 1
        self.rows += len(batch)
        self._answer(batch, stored)
        if self.on_commit is not None:
            self.on_commit()

    def _insert(self, rows: list[dict[str, Any]]) -> list[bool]:
        if self.engine.dialect.name != "sqlite":
            with self.engine.begin() as conn:
                return insert_inbox_rows(conn, rows)
        # SQLite: straight on the driver connection, four statements a batch (BEGIN IMMEDIATE,
        # lookup, INSERT, COMMIT); the SQLAlchemy layer around them cost more than the writes.
        raw = self.engine.raw_connection()
        try:
            dbapi: Any = raw.dbapi_connection
            dbapi.begin_immediate()  # the same writer locks as every SQLAlchemy transaction
            try:
                stored = insert_inbox_rows_sqlite(dbapi, self.engine.dialect, rows)
                dbapi.commit()
            except BaseException:
                dbapi.rollback()
                raise
            return stored
        finally:
            raw.close()

    @staticmethod
    def _answer(batch: list[_Item], stored: list[bool] | None) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[bool], bool | None]]] = {}
        for n, item in enumerate(batch):
            by_loop.setdefault(item.loop, []).append((item.future, stored[n] if stored is not None else None))
        for loop, answers in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, answers)


def _settle(answers: list[tuple[asyncio.Future[bool], bool | None]]) -> None:
    for future, was_new in answers:
        if future.done():
            continue
        if was_new is None:
            future.set_exception(RuntimeError("the database did not accept the event"))
        else:
            future.set_result(was_new)
