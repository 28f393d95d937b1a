"""Durable ingest with group commit: the rows of every webhook that arrived in one turn of
the event loop are stored in one transaction, and each is acknowledged only after that
commit (one fsync serves the whole batch).

serve on a SQLite file commits them to the port's spool (flowrun.state.spool), a file whose
only writer is this event loop, and the writer thread moves them into the inbox. A webhook
then waits for no other process: at 300 webhooks/s the engine, the dispatcher and a prune held
the state database's write lock about 75 % of the time, and webhook p99 was 44-83 ms without a
prune (22.7 ms with the spool). A spool that refuses a write answers those webhooks 503: a
direct write would overtake the rows it still holds. What follows describes the direct write,
which PostgreSQL and an in-memory database use.

On SQLite the batch is written on the event loop when the write lock is free, else by the
writer thread (flowrun.serve.sqlite_inbox), which also checkpoints the WAL every
CHECKPOINT_BYTES of bodies committed.

A row the database refuses takes only itself down: a batch that fails for a reason other
than a passing one (locked, busy) is written again row by row, and the row that still fails
is answered 503. If the writer thread ever dies, every waiting webhook is answered 503 at
once, later ones too, and `on_death` runs (the port's process then exits, and serve with
it, so systemd restarts both); the thread's heartbeat (flowrun.serve.health) tells /healthz
when webhooks wait for it and it makes no progress.

A delivery whose topic nothing reads (no flow, wait, goal or kept derivation: the engine's
`SetAside`) is stored as `ignored`, body kept, and wakes nobody: the engine spent about
140 µs of CPU, and a write transaction, setting each of those aside itself. The status is
decided inside the write transaction, so a new set and the rows it changes are one step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from flowrun.serve.health import Heartbeat
from flowrun.serve.partition import delivery_part
from flowrun.serve.sqlite_inbox import LoopConnection, checkpoint, write_waiting
from flowrun.state.inbox import insert_rows, pend_set_aside
from flowrun.state.spool import Spool, drain
from flowrun.state.sqlite_writer import WriterTimeout

log = logging.getLogger("flowrun.ingest")
MAX_BATCH = 512
FIRST_RETRY_S, RETRY_CAP_S = 0.05, 5.0  # the waits after failed moves out of the spool: doubling, up to the cap
CHECKPOINT_BYTES = 4 * 1024 * 1024  # SQLite's own autocheckpoint: 1,000 pages of 4 KiB


@dataclass(frozen=True)
class SetAside:
    """The (source, topic) pairs the port stores as `ignored`, and the last inbox row stored
    before the flows that chose them: a row after it, set aside under the previous set, whose
    topic is read now is made pending when this set takes over."""

    unread: frozenset[tuple[str, str]] = frozenset()
    since: int = 0


@dataclass
class _Item:
    row: dict[str, Any]
    future: asyncio.Future[bool]
    loop: asyncio.AbstractEventLoop


class InboxWriter:
    """Handlers append to the turn's batch; one callback at the end of the turn writes it
    (`_write_now`) or hands it to the writer thread, which answers each event loop with one
    callback per batch."""

    def __init__(
        self,
        engine: Engine,
        on_commit: Callable[[], None] | None = None,
        aside: SetAside = SetAside(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        heartbeat: Heartbeat | None = None,
        on_death: Callable[[], None] | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.engine = engine
        self.spool = spool
        self.on_commit = on_commit
        self.partitioned = engine.dialect.name == "postgresql"
        self.clock = clock
        self.heartbeat = heartbeat or Heartbeat("inbox_writer", timedelta(seconds=30))
        self.heartbeat.alive = lambda: self.died is None and (self._thread.is_alive() or not self._started)
        self.on_death = on_death
        self.died: BaseException | None = None
        self._started = False
        self._unread = aside.unread
        self._asides: deque[SetAside] = deque()
        self._turns: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
        self._fast = LoopConnection(engine) if engine.dialect.name == "sqlite" and spool is None else None
        self._pending: deque[_Item] = deque()
        self._signal = threading.Event()
        self._retry_in = 0.0  # after failed moves out of the spool: the wait before the next (doubling)
        self._retry_at: float | None = None  # time.monotonic() of the next attempt
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
        self.batches = 0
        self.rows = 0
        self._unchecked = 0  # body bytes committed since the last checkpoint
        self.checkpoints = 0

    def start(self) -> None:
        self._started = True
        self._thread.start()
        if self.spool is not None:
            self._signal.set()  # what a crash left in the spool goes into the inbox first

    def stop(self) -> None:
        self._stopping = True
        self._signal.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if self._fast is not None:
            self._fast.close()

    def set_aside(self, aside: SetAside) -> None:
        """A new set (after a reload), applied by the writer thread in its own transaction."""
        self._asides.append(aside)
        self._signal.set()

    async def store(self, row: dict[str, Any]) -> bool:
        """Resolves True once committed (False for a delivery stored before)."""
        if self.died is not None:
            raise RuntimeError("the inbox writer has stopped; the webhook port is shutting down")
        if self.partitioned:  # several instances: stored in its customer's partition (flowrun.serve.partition)
            row = {**row, "part": delivery_part(row["source"], row["topic"], row["body"], row["delivery_id"])}
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        turn = self._turns.setdefault(loop, [])
        if not turn:
            loop.call_soon(self._end_of_turn, loop)  # runs after the handlers already scheduled
        turn.append(_Item(row, future, loop))
        return await future

    def _end_of_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        turn = self._turns.pop(loop)
        batch, rest = turn[:MAX_BATCH], turn[MAX_BATCH:]
        if rest:
            self._turns[loop] = rest
            loop.call_soon(self._end_of_turn, loop)
        if self.died is not None:
            _settle([(item.future, None) for item in batch])
            return
        try:
            stored = self._write_now([item.row for item in batch])
        except Exception as exc:
            if self.spool is not None:  # not acknowledged: a write past the spool would overtake its rows
                log.exception("the spool refused %d webhooks; answered 503, the store sends them again", len(batch))
                self.heartbeat.failed(f"the spool refused a write: {exc}"[:300])
                _settle([(item.future, None) for item in batch])
                return
            log.exception("inbox write on the event loop failed; the writer thread takes the batch")
            stored = None
        if stored is None:
            self.heartbeat.busy(self.clock())
            self._pending.extend(batch)
            self._signal.set()
            if self.died is not None:  # the thread died meanwhile: nobody takes the batch
                self._fail_pending()
            return
        _settle([(item.future, stored[n]) for n, item in enumerate(batch)])
        if self.spool is not None:  # in the inbox once the thread has moved it
            self.heartbeat.busy(self.clock())
            self._signal.set()
            return
        self.heartbeat.progressed(self.clock(), more=bool(self._pending))
        self._done(batch, stored)
        self._unchecked += sum(len(item.row["body"]) for item in batch)
        if self._unchecked >= CHECKPOINT_BYTES:
            self._signal.set()

    def _stamp(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Called holding the write lock, so the set cannot change before the commit."""
        unread = self._unread
        return [{**row, "status": "ignored"} if (row["source"], row["topic"]) in unread else row for row in rows]

    def _write_now(self, rows: list[dict[str, Any]]) -> list[bool] | None:
        """The batch written without waiting, or None when the write lock is taken (or the
        database says busy): then the thread waits for it instead of the event loop."""
        if self.spool is not None:
            return self.spool.put(rows)
        return self._fast.try_write(self._stamp(rows)) if self._fast is not None else None

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.died = exc
            log.critical("the inbox writer thread failed; webhooks cannot be stored", exc_info=True)
            self._fail_pending()
            if self.on_death is not None:
                self.on_death()

    def _fail_pending(self) -> None:
        while self._pending:
            with contextlib.suppress(IndexError):  # the other thread took it first
                self._answer([self._pending.popleft()], None)

    def _loop(self) -> None:
        while True:
            self._signal.wait(None if self._retry_at is None else max(0.0, self._retry_at - time.monotonic()))
            self._signal.clear()
            while self._asides:
                aside = self._asides.popleft()
                read_now = self._unread - aside.unread
                if self._retrying(functools.partial(self._take_over, aside, read_now)) is None:
                    log.error("could not make deliveries of %s pending again after a reload", sorted(read_now))
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(MAX_BATCH, len(self._pending)))]
                self._write(batch)
            more = False
            if self.spool is not None and (self._retry_at is None or time.monotonic() >= self._retry_at):
                more = self._drain(self.spool)
            if self._unchecked >= CHECKPOINT_BYTES:
                self._unchecked = 0
                self.checkpoints += checkpoint(self.engine)
                if self.spool is not None:
                    try:
                        self.spool.checkpoint()
                    except sqlite3.Error as exc:
                        log.warning("spool WAL checkpoint failed, the next one will copy more: %s", exc)
            if more:
                self._signal.set()  # one batch a turn: a reload, the heartbeat and the checkpoints come between
            elif self._stopping:
                return

    def _drain(self, spool: Spool) -> bool:
        """One batch of spooled rows into the inbox (flowrun.state.spool), the engine woken if
        it reads any; True if more are waiting. A failure (the state database locked, full,
        refusing a row) leaves them spooled and tries again after a doubling wait; webhooks are
        still acknowledged meanwhile, and /healthz says the part is failing."""
        woken, size = False, 0

        def write(conn: Connection, rows: list[dict[str, Any]]) -> None:
            nonlocal woken, size
            insert_rows(conn, self._stamp(rows))
            woken = woken or any((row["source"], row["topic"]) not in self._unread for row in rows)
            size += sum(len(row["body"]) for row in rows)

        try:
            moved, more = drain(spool, write, MAX_BATCH)
        except (SQLAlchemyError, sqlite3.Error, WriterTimeout) as exc:
            self._retry_in = min(2 * self._retry_in or FIRST_RETRY_S, RETRY_CAP_S)
            self._retry_at = time.monotonic() + self._retry_in
            log.warning("moving spooled deliveries into the inbox failed; again in %.2f s: %s", self._retry_in, exc)
            self.heartbeat.failed(f"spooled deliveries wait for the database: {exc}"[:300])
            return False
        self._retry_in, self._retry_at = 0.0, None
        self.heartbeat.progressed(self.clock(), more=more)
        self.batches += bool(moved)
        self.rows += moved
        self._unchecked += size
        if woken and self.on_commit is not None:
            self.on_commit()
        return more

    def _take_over(self, aside: SetAside, read_now: frozenset[tuple[str, str]]) -> list[bool]:
        with self.engine.begin() as conn:
            moved = pend_set_aside(conn, read_now, aside.since)
            self._unread = aside.unread  # still holding the write lock: no batch is stamped meanwhile
        if moved:
            log.info("%d deliveries set aside under the previous flows are read now: pending again", moved)
            if self.on_commit is not None:
                self.on_commit()
        return []

    def _write(self, batch: list[_Item]) -> None:
        refused = False
        try:
            stored = self._retrying(lambda: self._insert([item.row for item in batch]))
        except Exception as exc:  # not a passing condition: some row is refused
            if len(batch) > 1:
                log.warning("inbox batch of %d refused (%s); writing its rows one by one", len(batch), exc)
                for item in batch:
                    self._write([item])
                return
            row = batch[0].row
            log.error("inbox refused %s/%r: %s", row["source"], str(row["delivery_id"])[:80], exc)
            stored, refused = None, True
        if stored is None and not refused:
            self.heartbeat.failed("the database did not take the inbox write (5 attempts)")
        else:
            self.heartbeat.progressed(self.clock(), more=bool(self._pending))
        self._answer(batch, stored)
        if stored is not None:
            self._done(batch, stored)

    @staticmethod
    def _retrying(write: Callable[[], list[bool]]) -> list[bool] | None:
        for attempt in range(5):
            try:
                return write()
            except (OperationalError, sqlite3.OperationalError) as exc:  # e.g. the database is locked for a moment
                log.warning("inbox write failed (attempt %d): %s", attempt + 1, getattr(exc, "orig", exc))
                time.sleep(0.05 * 2**attempt)
        return None

    def _done(self, batch: list[_Item], stored: list[bool]) -> None:
        self.batches += 1
        self.rows += len(batch)
        unread = self._unread
        if self.on_commit is not None and any(
            new and (item.row["source"], item.row["topic"]) not in unread
            for item, new in zip(batch, stored, strict=True)
        ):
            self.on_commit()

    def _insert(self, rows: list[dict[str, Any]]) -> list[bool]:
        if self.engine.dialect.name == "sqlite":
            return write_waiting(self.engine, self._stamp(rows))
        with self.engine.begin() as conn:
            return insert_rows(conn, self._stamp(rows))

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
