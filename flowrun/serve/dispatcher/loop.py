"""The dispatcher: claims ready outbox rows, performs them with bounded concurrency, and writes
each answer durably before its slot is used again. So at any moment at most
`limits.dispatch_concurrency` sends are out without a recorded answer, and only those can go out
twice after a crash: they are taken back at the next start (or by another instance after the
lease) and marked "outcome unknown" in their history.

Answers that arrive together are written in one transaction (group commit); the engine is told
once they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from flowrun.delivery.ratelimit import DEFAULTS as RATE_DEFAULTS
from flowrun.delivery.ratelimit import Rate
from flowrun.delivery.throttle import Throttle
from flowrun.netpolicy import GuardedClients
from flowrun.runtime.attempts import Outcome, Settled, after_attempt
from flowrun.runtime.records import Send
from flowrun.serve.cluster import Cluster
from flowrun.serve.dispatcher import claims
from flowrun.serve.dispatcher.deliver import attempt, http_client

log = logging.getLogger("flowrun.dispatch")
Attempt = Callable[[Send], Awaitable[Outcome]]


class Dispatcher:
    def __init__(
        self,
        db: Engine,
        clock: Callable[[], datetime],
        cluster: Cluster,
        *,
        concurrency: int,
        channels: Mapping[str, Any],
        sources: Mapping[str, Any],
        on_outcomes: Callable[[list[Settled]], None] = lambda settled: None,
        on_taken_back: Callable[[list[str]], None] = lambda keys: None,
        on_error: Callable[[str], None] = lambda why: None,
        poll_cap: float | None = None,
        rates: Mapping[str, Rate | None] = RATE_DEFAULTS,
    ) -> None:
        self.db, self.clock, self.cluster, self.concurrency = db, clock, cluster, concurrency
        self.channels, self.sources = channels, sources
        self.on_outcomes, self.on_taken_back, self.on_error = on_outcomes, on_taken_back, on_error
        self.poll_cap = poll_cap  # the longest idle wait (a test clock that jumps)
        self.held = 0  # claimed rows whose answer is not written yet
        self.answers: list[Settled] = []
        self.wake = asyncio.Event()
        self._answered = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.running = True
        self.attempt: Attempt | None = None
        self.throttle = Throttle(rates, channels, sources)  # per dispatcher: N instances send N times as fast

    async def run(self) -> None:
        http, clients = http_client(self.concurrency), GuardedClients()
        self.attempt = self.attempt or (lambda send: attempt(send, http, self.channels, self.sources, clients))
        writer = asyncio.create_task(self._write_answers())
        try:
            await self.take_back()
            while self.running:
                self.wake.clear()  # before claiming: a wake-up during the claim is kept
                free = self.concurrency - self.held
                try:
                    claimed = await asyncio.to_thread(self._claim, free) if free > 0 else []
                except Exception as exc:  # the database refused: nothing was claimed; try again
                    log.exception("claiming sends failed; trying again")
                    self.on_error(f"{type(exc).__name__}: {exc}"[:300])
                    await self._idle()
                    continue
                for send in claimed:
                    self._start(send)
                if len(claimed) < free:
                    await self._idle()
                else:
                    await self.wake.wait()  # no free slot: an answer written frees one
        finally:
            await self._drain(writer)
            await http.aclose()
            await clients.aclose()

    async def once(self, http: object | None = None) -> int:
        """Claim what is due now, send it all and write the answers; how many were sent. For
        driving the dispatcher step by step (tests, with a clock they move)."""
        perform = self.attempt
        if http is not None:
            perform = lambda send: attempt(send, http, self.channels, self.sources)  # type: ignore[arg-type]  # noqa: E731
        assert perform is not None
        claimed = await asyncio.to_thread(self._claim, self.concurrency)

        async def one(send: Send) -> Outcome:
            assert perform is not None
            outcome = self.throttle.admit(send, self.clock()) or await perform(send)
            self.throttle.heard(send, outcome, self.clock())
            return outcome

        outcomes = await asyncio.gather(*(one(send) for send in claimed))
        settled = [after_attempt(send, outcome, self.clock()) for send, outcome in zip(claimed, outcomes, strict=True)]
        if settled:
            await asyncio.to_thread(self._finish, settled)
            self.on_outcomes(settled)
        return len(settled)

    async def take_back(self) -> None:
        """Rows dead dispatchers were sending: ready again, marked "outcome unknown"."""
        keys = await asyncio.to_thread(self._take_back)
        if keys:
            log.warning("%d sends were out when their dispatcher stopped: sending them again", len(keys))
            self.on_taken_back(keys)

    def _take_back(self) -> list[str]:
        with self.db.begin() as conn:
            return claims.take_back(conn, self.cluster.live(conn), self.clock())

    def _claim(self, free: int) -> list[Send]:
        with self.db.begin() as conn:
            return claims.claim(conn, self.cluster.id, self.clock(), free)

    def _start(self, send: Send) -> None:
        self.held += 1
        task = asyncio.create_task(self._perform(send))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _perform(self, send: Send) -> None:
        assert self.attempt is not None
        outcome = self.throttle.admit(send, self.clock()) or await self.attempt(send)
        self.throttle.heard(send, outcome, self.clock())
        self.answers.append(after_attempt(send, outcome, self.clock()))
        self._answered.set()

    async def _idle(self) -> None:
        """Nothing more is due now: wait for a wake-up, a slot, or the next retry's time."""
        try:
            due = await asyncio.to_thread(self._next_ready)
        except Exception:
            due = None
        timeout = self.cluster.beat_every
        if due is not None:
            timeout = min(timeout, max(0.0, (due - self.clock()).total_seconds()))
        if self.poll_cap is not None:
            timeout = min(timeout, self.poll_cap)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout)

    def _next_ready(self) -> datetime | None:
        with self.db.connect() as conn:
            return claims.next_ready(conn)

    async def _write_answers(self) -> None:
        while self.running or self.held:
            await self._answered.wait()
            self._answered.clear()
            batch, self.answers = self.answers, []
            if not batch:
                continue
            try:
                lost = await asyncio.to_thread(self._finish, batch)
            except Exception as exc:  # the database refused: keep them, try again
                log.exception("could not record %d answers; retrying", len(batch))
                self.on_error(f"{type(exc).__name__}: {exc}"[:300])
                self.answers = batch + self.answers
                await asyncio.sleep(self.cluster.beat_every / 10)
                self._answered.set()
                continue
            for key in lost:
                log.warning("the answer for %s came after its row was taken back; it was sent again", key)
            self.held -= len(batch)
            self.wake.set()
            self.on_outcomes(batch)

    def _finish(self, batch: list[Settled]) -> list[str]:
        with self.db.begin() as conn:
            return claims.finish(conn, self.cluster.id, batch)

    async def _drain(self, writer: asyncio.Task[None]) -> None:
        self.running = False
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=self.grace_s)
        for task in list(self.tasks):  # past the grace period: their outcome is unknown
            task.cancel()
        self._answered.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(writer, timeout=self.grace_s)

    grace_s = 20.0

    async def stop(self, grace: timedelta) -> None:
        self.grace_s = grace.total_seconds()
        self.running = False
        self.wake.set()
