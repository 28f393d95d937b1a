"""`flowrun serve`: the engine process (worker, dispatcher, pollers and APScheduler, which
owns the clock and the wake-ups) and, as its child, the webhook port's process
(flowrun.serve.port). They share the database and two pipes: "new events" one way,
counters for /metrics the other."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text

from flowrun.config import Config
from flowrun.dryrun.session import load_all_flows
from flowrun.durations import parse_duration
from flowrun.errors import FlowrunError
from flowrun.serve.dispatcher import Dispatcher
from flowrun.serve.ingest import SetAside
from flowrun.serve.metrics import Metrics
from flowrun.serve.pollers import (
    OVERLAP,
    Polled,
    PollError,
    next_cursor,
    poll_shopify_checkouts,
    poll_shopify_inventory,
    poll_shopify_orders,
    poll_woocommerce_orders,
)
from flowrun.serve.port import PortProcess
from flowrun.serve.process import clock_from_env, loop_factory, setup_logging
from flowrun.serve.worker import Worker, store_polled
from flowrun.state.sqlstore import SqlStore
from flowrun.state.tables import make_engine, migrate

log = logging.getLogger("flowrun.serve")


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.engine = make_engine(config.database)
        self.metrics = Metrics()
        self.clock = clock_from_env()
        self.flows = load_all_flows([config.flows], locale=config.locale)
        self.worker = Worker(config, self.engine, self.flows, self.metrics, self.clock)
        self.dispatcher: Dispatcher | None = None
        self.port: PortProcess | None = None
        self.stopping: asyncio.Event | None = None
        self.exit_code = 0

    def reload(self) -> None:
        try:
            flows = load_all_flows([self.config.flows], locale=self.config.locale)
        except FlowrunError as exc:
            log.error("SIGHUP: the new flows are invalid, keeping the running set:\n%s", exc)
            return
        aside = self.worker.reload(flows)
        if self.port is not None:
            self.port.set_aside(aside)
        log.info("SIGHUP: reloaded %d flows (runs in flight finish on their own version)", len(flows))

    async def run(self) -> int:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        version = await asyncio.to_thread(migrate, self.engine)
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        aside = SetAside(self.worker.unread_topics())
        port = PortProcess(self.config, self.worker.wake.set, self.metrics, self._port_exited(loop), aside)
        port.start()
        self.port = port
        dispatcher = Dispatcher(
            self.config,
            self.engine,
            self.metrics,
            self.worker.complete,
            self.worker.poke,
            clock=self.clock,
            flow_of=self.worker.manager.flow_of,
        )
        self.dispatcher = dispatcher

        def outbox_changed() -> None:
            loop.call_soon_threadsafe(dispatcher.wake.set)

        self.worker.on_outbox = outbox_changed
        self.worker.start()
        scheduler = AsyncIOScheduler(timezone="UTC")
        # The pending steps live in flowrun's indexed tables; APScheduler only drives the
        # wake-ups, so a missed or coalesced tick loses nothing: the next sweep finds it.
        scheduler.add_job(
            self.worker.poke,
            "interval",
            seconds=0.25,
            id="sweep",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        scheduler.start()
        for name, interval, poll in self._pollers(dispatcher.http):
            scheduler.add_job(
                self._poll,
                "interval",
                args=[name, poll],
                seconds=interval.total_seconds(),
                id=name,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=None,
            )
        dispatch = asyncio.create_task(dispatcher.run())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        log.info(
            "flowrun serve: %d flows, schema v%d, %s, listening on %s:%d",
            len(self.flows),
            version,
            self.engine.url.render_as_string(hide_password=True),
            self.config.host,
            self.config.port,
        )
        await self.stopping.wait()
        log.info("draining: no new webhooks; finishing in-flight work (up to %s)", self.config.shutdown_grace)
        await asyncio.to_thread(port.stop, self.config.shutdown_grace.total_seconds())
        scheduler.shutdown(wait=False)
        await dispatcher.drain(self.config.shutdown_grace.total_seconds())
        dispatch.cancel()
        await asyncio.to_thread(self.worker.stop)
        self.engine.dispose()
        log.info("stopped cleanly" if self.exit_code == 0 else "stopped after the webhook port failed")
        return self.exit_code

    def _pollers(self, http: Any) -> list[tuple[str, timedelta, Callable[[datetime], Awaitable[list[Polled]]]]]:
        jobs: list[tuple[str, timedelta, Callable[[datetime], Awaitable[list[Polled]]]]] = []
        shop = self.config.sources.get("shopify") or {}
        every = shop.get("poll") or {}
        if every and shop.get("api_token") is not None:
            api = shop.get("api_url") or f"https://{shop['shop']}/admin/api/{shop.get('api_version', '2025-07')}"
            token = shop["api_token"].reveal()
            locations = list(shop.get("location_ids") or [])
            shopify_polls: dict[str, Callable[[datetime], Awaitable[list[Polled]]]] = {
                "orders": lambda since: poll_shopify_orders(http, api, token, since, asyncio.sleep),
                "checkouts": lambda since: poll_shopify_checkouts(http, api, token, since, asyncio.sleep),
                "inventory": lambda since: poll_shopify_inventory(http, api, token, locations, since, asyncio.sleep),
            }
            for what, poll in shopify_polls.items():
                if what in every:
                    jobs.append((f"poll:shopify:{what}", parse_duration(every[what]), poll))
        woo = self.config.sources.get("woocommerce") or {}
        if (woo.get("poll") or {}).get("orders") and woo.get("consumer_key") is not None:
            key, secret = woo["consumer_key"].reveal(), woo["consumer_secret"].reveal()
            jobs.append(
                (
                    "poll:woocommerce:orders",
                    parse_duration(woo["poll"]["orders"]),
                    lambda since: poll_woocommerce_orders(http, woo["url"], key, secret, since, asyncio.sleep),
                )
            )
        return jobs

    async def _poll(self, name: str, poll: Callable[[datetime], Awaitable[list[Polled]]]) -> None:
        def read_cursor() -> Any:
            with self.engine.begin() as conn:
                return SqlStore(conn).get_cursor(name)

        cursor = await asyncio.to_thread(read_cursor)
        now = self.clock()
        if cursor is None:  # first run: start from now, do not replay history
            await asyncio.to_thread(store_polled, self.engine, name, [], now, now)
            return
        try:
            polled = await poll(cursor - OVERLAP)
        except PollError as exc:
            self.metrics.count("flowrun_poll_errors_total", poller=name)
            log.warning("%s failed, will try again: %s", name, exc)
            return
        new = await asyncio.to_thread(store_polled, self.engine, name, polled, next_cursor(cursor, polled), now)
        self.metrics.count("flowrun_events_accepted_total", new, source=name)
        if new:
            self.worker.wake.set()

    def _stop(self) -> None:
        if self.stopping is not None:
            self.stopping.set()

    def _port_exited(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        def exited() -> None:  # called from the pipe reader's thread
            if self.stopping is not None and not self.stopping.is_set():
                log.error("the webhook port's process exited unexpectedly; stopping so systemd restarts serve")
                self.exit_code = 1
                loop.call_soon_threadsafe(self._stop)

        return exited


def check(config: Config) -> list[str]:
    """What `serve --check` reports: flows load, the database answers, channels exist."""
    flows = load_all_flows([config.flows], locale=config.locale)
    engine = make_engine(config.database)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()
    notes = [f"{len(flows)} flows valid in {config.flows}", f"database reachable: {config.database.split('://')[0]}"]
    from flowrun.actions import REGISTRY
    from flowrun.actions.base import ActionType
    from flowrun.flow.model import ActionStep

    used = {s.action.name for f in flows for s in _walk(f.steps) if isinstance(s, ActionStep)}
    undelivered = sorted(a for a in used if type(REGISTRY[a]).deliver is ActionType.deliver)
    if undelivered:
        notes.append(f"warning: no channel delivers {', '.join(undelivered)} yet; those actions will be parked")
    for name in sorted(used):
        missing = REGISTRY[name].unconfigured(config.channels, config.sources)
        if missing:
            notes.append(f"error: flows use `{name}` but {missing} is not configured in {config.file}")
    return notes


def _walk(steps: Any) -> Iterator[Any]:
    for step in steps:
        yield step
        for attr in ("then", "otherwise"):
            yield from _walk(getattr(step, attr, ()))
        for option in getattr(step, "options", ()):
            yield from _walk(option.steps)
        for branch in getattr(step, "branches", ()):
            yield from _walk(branch.steps)


def serve(config: Config) -> int:
    setup_logging(config)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(Service(config).run())
