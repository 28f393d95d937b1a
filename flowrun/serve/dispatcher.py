"""Perform outbox rows: bounded concurrency, per-action timeouts, retries with exponential
backoff and jitter (honouring Retry-After), then parking for `flowrun retry`.

A row is claimed with a lease (status `sending`, due again when the lease ends). A provider's
answer goes to the worker, which commits it together with the run's next step in its next
batch (milliseconds later). The one window for a double send: the process dies after the
provider answered and before that commit; the lease then expires and the row is sent again,
with the same idempotency key (run + step) for providers that honour one.

HTTP goes through httpx's API on an aiohttp transport: httpx's own async pool managed about
140 requests/s with 32 concurrent tasks on this machine, the aiohttp transport about 1,500
(benchmarks/serve_ingest.py measures the whole path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from flowrun.actions import REGISTRY
from flowrun.actions.base import DeliveryContext, PermanentError, RetryableError
from flowrun.config import Config
from flowrun.engine.state import RunState
from flowrun.flow.model import Flow
from flowrun.guardrails import decide
from flowrun.serve.metrics import Metrics
from flowrun.serve.worker import Completion
from flowrun.state.sqlstore import SqlStore

log = logging.getLogger("flowrun.dispatch")
LEASE_MARGIN = timedelta(seconds=35)  # beyond a row's timeout: the 5 s wait_for slack plus commit time


def backoff_delay(
    attempt: int, base_s: float, max_s: float, retry_after: float | None, rand: Callable[[], float] = random.random
) -> float:
    """Full jitter on an exponential curve; never sooner than the provider's Retry-After."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    delay = ceiling * (0.5 + rand() / 2)
    return float(max(delay, retry_after or 0.0))


def http_client(connections: int) -> httpx.AsyncClient:
    """The client actions and pollers share (call inside the running event loop)."""
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    transport = AiohttpTransport(trust_env=False, limits=limits)
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False, limits=limits)


class Dispatcher:
    def __init__(
        self,
        config: Config,
        engine: Engine,
        metrics: Metrics,
        complete: Callable[[Completion], None],
        wake_worker: Callable[[], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        flow_of: Callable[[RunState], Flow | None] = lambda run: None,
    ) -> None:
        self.config, self.engine, self.metrics, self.clock = config, engine, metrics, clock
        self.flow_of = flow_of  # for a flow's own guardrails
        self.complete, self.wake_worker = complete, wake_worker
        self.limit = asyncio.Semaphore(config.dispatch_concurrency)
        self.wake = asyncio.Event()
        self.in_flight: set[asyncio.Task[None]] = set()
        self.http = http_client(config.dispatch_concurrency)
        self.running = True

    async def run(self) -> None:
        while self.running:
            self.wake.clear()  # before claiming: a wake-up during the claim is not lost
            free = self.config.dispatch_concurrency - len(self.in_flight)
            rows = await asyncio.to_thread(self._claim, free) if free > 0 else []
            for row in rows:
                task = asyncio.create_task(self._perform(row))
                self.in_flight.add(task)
                task.add_done_callback(self._finished)
            if not rows or len(rows) == free:  # nothing due, or no free slot: wait for a change
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=0.5)

    def _finished(self, task: asyncio.Task[None]) -> None:
        """A slot is free: claim again now, not at the next poll."""
        self.in_flight.discard(task)
        self.wake.set()

    async def drain(self, grace: float) -> None:
        self.running = False
        self.wake.set()
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=grace)
        await self.http.aclose()

    def _claim(self, limit: int) -> list[dict[str, Any]]:
        now = self.clock()
        with self.engine.begin() as conn:
            store = SqlStore(conn)
            rows = store.claim_due(now, min(limit, 100), LEASE_MARGIN)
            return [row for row in rows if self._guard(store, row, now)]

    def _guard(self, store: SqlStore, row: dict[str, Any], now: datetime) -> bool:
        """Guardrails, decided in the claiming transaction (so two sends cannot both pass a cap)."""
        channel = REGISTRY[row["action"]].channel
        category = str(row["params"].get("category", "marketing"))
        if channel is None or category == "transactional":
            return True
        run = store.get(row["run_id"])
        customer = dict((run.trigger.data.get("customer") or {}) if run else {})
        who = run.customer_key if run else None
        flow = self.flow_of(run) if run else None
        rules = self.config.guardrails.overridden(flow.guardrails if flow else None)
        recent = store.recent_sends(who, channel, now - rules.longest_cap) if who else []
        decision = decide(
            rules, now, channel, category, customer, who, recent, store.is_suppressed(who) if who else False
        )
        if decision.kind == "send":
            if who:
                store.record_send(row["key"], who, channel, now)
            return True
        if decision.kind == "defer" and decision.at is not None:
            store.defer(row["key"], decision.at, now)
            store.record_attempt(row["key"], now, "deferred", decision.reason)
            log.info("action %s deferred: %s", row["key"], decision.reason)
            return False
        store.finish_action(row["key"], now, "done", result={"skipped": decision.reason})
        store.record_attempt(row["key"], now, "skipped", decision.reason)
        self.metrics.count("flowrun_actions_skipped_total", action=row["action"])
        log.info("action %s skipped: %s", row["key"], decision.reason)
        self.wake_worker()
        return False

    async def _perform(self, row: dict[str, Any]) -> None:
        action = REGISTRY[row["action"]]
        ctx = DeliveryContext(
            self.http,
            self.config.channels.get(row["action"], {}),
            log,
            float(row["timeout_s"]),
            self.config.sources,
            self.config.channels,
        )
        attempt = row["attempts"] + 1
        async with self.limit:
            try:
                result = await asyncio.wait_for(
                    action.deliver(row["params"], row["key"], ctx), timeout=row["timeout_s"] + 5
                )
            except PermanentError as exc:
                await asyncio.to_thread(self._park, row, attempt, f"permanent: {exc}")
                return
            except (RetryableError, TimeoutError) as exc:
                message = str(exc) or "timed out"
                retry_after = getattr(exc, "retry_after", None)
                if attempt >= row["max_attempts"]:
                    await asyncio.to_thread(self._park, row, attempt, f"gave up after {attempt} attempts: {message}")
                else:
                    delay = backoff_delay(attempt, row["backoff_s"], row["max_backoff_s"], retry_after)
                    await asyncio.to_thread(self._retry_later, row, attempt, message, delay)
                return
            except Exception as exc:  # a bug in a channel: park it, keep serving
                log.exception("action %s crashed", row["key"])
                await asyncio.to_thread(self._park, row, attempt, f"internal error: {exc!r}")
                return
        self._done(row, result)

    def _done(self, row: dict[str, Any], result: dict[str, Any]) -> None:
        self.complete(Completion(row["key"], row["run_id"], row["action"], row["params"], result, self.clock()))
        self.metrics.count("flowrun_actions_sent_total", action=row["action"])

    def _retry_later(self, row: dict[str, Any], attempt: int, message: str, delay: float) -> None:
        now = self.clock()
        with self.engine.begin() as conn:
            store = SqlStore(conn)
            store.finish_action(row["key"], now, "pending", error=message, retry_at=now + timedelta(seconds=delay))
            store.record_attempt(row["key"], now, "retry", f"attempt {attempt}: {message}; next in {delay:.1f} s")
        self.metrics.count("flowrun_actions_failed_total", action=row["action"])
        log.warning("action %s attempt %d failed: %s; retry in %.1f s", row["key"], attempt, message, delay)

    def _park(self, row: dict[str, Any], attempt: int, message: str) -> None:
        """`on_error: continue` hands the failure to the run; otherwise the action waits for `flowrun retry`."""
        now = self.clock()
        status = "failed" if row["on_error"] == "continue" else "parked"
        with self.engine.begin() as conn:
            store = SqlStore(conn)
            store.finish_action(row["key"], now, status, error=message)
            store.record_attempt(row["key"], now, status, message)
        if status == "failed":
            self.metrics.count("flowrun_actions_failed_final_total", action=row["action"])
            log.warning("action %s failed for good (on_error: continue): %s", row["key"], message)
            self.wake_worker()
            return
        self.metrics.count("flowrun_actions_parked_total", action=row["action"])
        log.error("action %s parked: %s (re-queue with `flowrun retry %s`)", row["key"], message, row["key"])
