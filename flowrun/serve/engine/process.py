"""The engine's process: the runtime over SQL, its sources, and — when it leads — schedules and
pollers. Woken by the port (new inbox rows) and the dispatcher (answers written); otherwise it
sleeps until the next timer, check or deferred send of its partitions, or its next heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from flowrun.config import Config
from flowrun.dryrun.session import load_all_flows
from flowrun.durations import format_duration
from flowrun.errors import FlowrunError
from flowrun.pruning import longest_cap
from flowrun.runtime.records import Applied
from flowrun.segments.loader import project_segments
from flowrun.serve import messages as m
from flowrun.serve.cluster import Cluster
from flowrun.serve.engine.leader import poll_once, pollers, tick_schedules
from flowrun.serve.engine.lookups import Lookups
from flowrun.serve.engine.loop import EngineLoop
from flowrun.serve.engine.retention import Pruner
from flowrun.serve.health import Heartbeat
from flowrun.serve.ingest import SetAside
from flowrun.serve.metrics import Metrics
from flowrun.serve.process import clock_from_env, die_with_parent, setup_logging, test_clock_poll
from flowrun.state import inbox as inbox_rows
from flowrun.state.database import make_engine, reading
from flowrun.state.sqlite_writer import LockLike

log = logging.getLogger("flowrun.engine")
PRUNE_FIRST_AFTER_S = 30.0  # the first prune after start (then `retention.every` after each)


@dataclass(frozen=True)
class EnginePipes:
    wakes: list[Connection]  # from the port and the dispatcher
    to_dispatcher: Connection
    control_to_port: Connection
    status_to_port: Connection


def run_engine(config: Config, pipes: EnginePipes, writer_lock: LockLike | None, parent: int) -> None:
    """The child process's entry point (multiprocessing, spawn)."""
    die_with_parent(parent, "flowrun-engine")
    setup_logging(config)
    EngineProcess(config, pipes, writer_lock).run()


class EngineProcess:
    def __init__(self, config: Config, pipes: EnginePipes, writer_lock: LockLike | None) -> None:
        self.config = config
        self.db = make_engine(config.database, writer_lock)
        self.clock = clock_from_env()
        self.metrics = Metrics()
        self.cluster = Cluster(self.db, "engine", config.lease)
        self.dispatcher = m.Outlet(pipes.to_dispatcher, lossy=True)
        self.control = m.Outlet(pipes.control_to_port, lossy=False)
        self.status = m.Outlet(pipes.status_to_port, lossy=True)
        self.pipes = pipes
        self.loop = EngineLoop(
            self.db,
            load_all_flows([config.flows], locale=config.locale),
            config.settings(),
            self.clock,
            self.cluster,
            on_ready=lambda n: self.dispatcher.send(m.SendsReady(n)),
            on_applied=self._count,
            lookups=Lookups(self.db, config.sources, lambda: self.loop.wake.set()),
        )
        self.pruner = Pruner(config, writer_lock)
        self.heartbeat = Heartbeat("engine", config.lease)  # /healthz: rounds fail, or stop coming
        self.stopping = threading.Event()
        self.reloading = threading.Event()
        self.leading = False

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self._stop())
        signal.signal(signal.SIGINT, lambda *_: self._stop())
        signal.signal(signal.SIGHUP, lambda *_: self._reload())
        self.cluster.join()
        for n, end in enumerate(self.pipes.wakes):
            m.listen(end, lambda _msg: self.loop.wake.set(), f"engine-wake-{n}")
        self.control.send(SetAside(self.loop.sources.unread_topics()))
        threading.Thread(target=self._poll_forever, name="pollers", daemon=True).start()
        threading.Thread(target=self._retain_forever, name="retention", daemon=True).start()
        log.info("engine %s: %d flows", self.cluster.id, len(self.loop.runtime.flows.current))
        beat_at = 0.0
        while not self.stopping.is_set():
            if self.reloading.is_set():
                self.reloading.clear()
                self._apply_reload()
            if time.monotonic() >= beat_at:
                self._beat()
                beat_at = time.monotonic() + self.cluster.beat_every
            try:
                if self.leading:
                    tick_schedules(self.db, list(self.loop.runtime.flows.current.values()), self.clock())
                moved = self.loop.round()
            except Exception as exc:  # the database refused, a lease was lost: the work stays where it is
                log.exception("engine round failed; trying again")
                self.heartbeat.failed(f"{type(exc).__name__}: {exc}"[:300])
                self.stopping.wait(1.0)
                continue
            self.heartbeat.progressed(self.clock(), more=False)
            if not moved:
                self._sleep(beat_at)
        self._finish()

    def _sleep(self, beat_at: float) -> None:
        timeout = max(0.0, beat_at - time.monotonic())
        due = self.loop.next_due()
        if due is not None:
            timeout = min(timeout, max(0.0, (due - self.clock()).total_seconds()))
        poll = test_clock_poll()
        if poll is not None:
            timeout = min(timeout, poll)
        self.loop.wake.wait(timeout)
        self.loop.wake.clear()

    def _beat(self) -> None:
        try:
            self.cluster.beat()
            leading = self.cluster.leads()
        except Exception:
            log.exception("heartbeat failed")
            leading = False
        if leading != self.leading:
            log.info("%s %s the leader (schedules, pollers)", self.cluster.id, "is now" if leading else "is no longer")
            self.leading = leading
        self.status.send(m.Status("engine", {"engine": self.heartbeat.snapshot()}, self.metrics.snapshot()))

    def _count(self, applied: list[Applied]) -> None:
        for result in applied:
            for run in result.runs:
                self.metrics.count("flowrun_run_transitions_total", status=run.status.value)
            for matched in result.engaged:
                self.metrics.count("flowrun_engagement_events_total", match="matched" if matched else "unknown")

    def _reload(self) -> None:
        self.reloading.set()
        self.loop.wake.set()

    def _apply_reload(self) -> None:
        try:
            flows = load_all_flows([self.config.flows], locale=self.config.locale)
            segments = project_segments([self.config.flows], flows)
        except FlowrunError as exc:
            log.error("SIGHUP: the new flows or segments are invalid, keeping the running set:\n%s", exc)
            return
        with reading(self.db) as conn:
            since = inbox_rows.last_seq(conn)
        self.loop.reload(flows, segments)
        self.control.send(SetAside(self.loop.sources.unread_topics(), since))
        log.info(
            "SIGHUP: reloaded %d flows and %d segments (runs in flight finish on their own version)",
            len(flows),
            len(segments),
        )

    def _stop(self) -> None:
        self.stopping.set()
        self.pruner.close()
        self.loop.wake.set()

    def _finish(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.round()  # the answers the dispatcher wrote while draining
        self.pruner.wait()
        with contextlib.suppress(Exception):
            self.cluster.leave()
        self.db.dispose()
        log.info("engine stopped")

    def _poll_forever(self) -> None:
        """Pollers on their own event loop, each on its interval, only while this instance leads."""
        asyncio.run(self._polls())

    async def _polls(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        from flowrun.serve.dispatcher.deliver import http_client

        http = http_client(8)
        scheduler = AsyncIOScheduler(timezone="UTC")
        for name, every, poll in pollers(self.config, http):
            # coalesced, never overlapping; a poll missed while busy is not made up (the next
            # one reads from the same cursor)
            scheduler.add_job(
                self._poll,
                "interval",
                args=[name, poll],
                seconds=every.total_seconds(),
                id=name,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=None,
            )
        scheduler.start()
        try:
            await asyncio.to_thread(self.stopping.wait)
        finally:
            scheduler.shutdown(wait=False)
            await http.aclose()

    def _retain_forever(self) -> None:
        """Retention while this instance leads, each pass handed to the prune process and waited
        for on this thread: soon after start, then `retention.every` after each pass ends, so a
        long pass is never overlapped or skipped."""
        every = self.config.retention.every.total_seconds()
        wait = min(PRUNE_FIRST_AFTER_S, every)
        while not self.stopping.wait(wait):
            wait = every
            if not self.leading:
                continue
            cap = longest_cap(self.config, list(self.loop.runtime.flows.current.values()))
            try:
                self.pruner.prune(self.clock(), cap)
            except Exception:
                log.exception("retention failed; it runs again in %s", format_duration(self.config.retention.every))

    async def _poll(self, name: str, poll: Any) -> None:
        if not self.leading:  # only the leader polls
            return
        try:
            new = await poll_once(self.db, name, poll, self.clock)
        except Exception as exc:
            self.metrics.count("flowrun_poll_errors_total", poller=name)
            log.warning("%s failed, will try again: %s", name, exc)
            return
        self.metrics.count("flowrun_events_accepted_total", new, source=name)
        if new:
            self.loop.wake.set()
