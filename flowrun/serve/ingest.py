"""Durable ingest with group commit: webhook handlers hand rows to one writer thread,
which stores a batch in one transaction and then wakes every waiting handler.

The commit (and its fsync) never runs on the event loop, and one fsync serves a whole
batch: the webhook is acknowledged only after its row is committed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from flowrun.state.sqlstore import insert_inbox_rows
from flowrun.state.tables import URGENT

log = logging.getLogger("flowrun.ingest")
MAX_BATCH = 512


@dataclass
class _Item:
    row: dict[str, Any]
    future: asyncio.Future[bool]
    loop: asyncio.AbstractEventLoop


class InboxWriter:
    def __init__(self, engine: Engine, on_commit: Any = None) -> None:
        self.engine = engine
        self.on_commit = on_commit
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="inbox-writer", daemon=True)
        self.batches = 0
        self.rows = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    async def store(self, row: dict[str, Any]) -> bool:
        """Resolves True once committed (False for a delivery stored before)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._queue.put(_Item(row, future, loop))
        return await future

    def _loop(self) -> None:
        URGENT.writes = True  # webhooks wait for this commit: go before the worker's batches
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[_Item]) -> None:
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    stored = insert_inbox_rows(conn, [item.row for item in batch])
                break
            except OperationalError as exc:  # e.g. the database is locked for a moment
                log.warning("inbox write failed (attempt %d): %s", attempt + 1, exc.orig)
                time.sleep(0.05 * 2**attempt)
        else:
            for item in batch:
                item.loop.call_soon_threadsafe(_fail, item.future)
            return
        self.batches += 1
        self.rows += len(batch)
        for item, was_new in zip(batch, stored, strict=True):
            item.loop.call_soon_threadsafe(_resolve, item.future, was_new)
        if self.on_commit is not None:
            self.on_commit()


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_exception(RuntimeError("the database did not accept the event"))
