"""The webhook port as its own process: uvicorn, the inbox writer, /healthz and /metrics.

Accepting a webhook (read, check the signature, parse, group-commit to the inbox, answer)
shares no GIL with the engine: in one process the worker's and dispatcher's Python work
took the interpreter from the event loop and the writer, and ingest ran at a third of the
rate it reaches alone. The two processes meet in the database; the port sends one byte down
a pipe after each commit of events the engine reads, so it starts on them at once, and the
engine sends its counters back every half second for /metrics, and after a reload the
topics nothing reads now (`SetAside`). /healthz reports the inbox writer's heartbeat and
whether the database takes a write (flowrun.serve.health); connections are bounded by
flowrun.serve.connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import uvicorn
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from flowrun.config import Config
from flowrun.serve.connections import (
    ConnectionGuard,
    ConnectionLimits,
    fitting_limit,
    guarded_protocol,
    raise_file_limit,
)
from flowrun.serve.health import Health
from flowrun.serve.ingest import InboxWriter, SetAside
from flowrun.serve.metrics import Labels, Metrics
from flowrun.serve.process import clock_from_env, die_with_parent, loop_factory, setup_logging
from flowrun.serve.webhooks import build_app
from flowrun.state.tables import inbox, make_engine, outbox, reading, runs, schema_version

log = logging.getLogger("flowrun.port")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # handlers are installed below: SIGTERM and SIGINT stop accepting, SIGHUP is the engine's


def run_port(config: Config, wake: Connection, peer_metrics: Connection, parent: int, aside: SetAside) -> None:
    """The child process's entry point (multiprocessing, spawn). Exits 1 when the inbox
    writer died: the engine sees the port gone and stops serve non-zero (systemd restarts it)."""
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    setup_logging(config)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        code = runner.run(_serve(config, wake, peer_metrics, aside))
    if code:
        sys.exit(code)


async def _serve(config: Config, wake: Connection, peer_metrics: Connection, aside: SetAside) -> int:
    engine = make_engine(config.database)
    clock = clock_from_env()
    metrics = Metrics(sources=config.sources)
    metrics.gauges = lambda: asyncio.to_thread(_gauges, engine)
    health = Health(clock)
    health.probe("database", functools.partial(_probe_write, engine), config.stall_after)
    loop = asyncio.get_running_loop()
    exit_code = 0

    os.set_blocking(wake.fileno(), False)  # a full pipe already holds a wake-up: never wait on it

    def committed() -> None:
        with contextlib.suppress(OSError):  # full, or the engine is gone: it reads the inbox when it is back
            wake.send_bytes(b"w")

    def writer_died() -> None:  # on the writer's thread
        nonlocal exit_code
        exit_code = 1
        loop.call_soon_threadsafe(setattr, server, "should_exit", True)

    writer = InboxWriter(
        engine,
        on_commit=committed,
        aside=aside,
        clock=clock,
        heartbeat=health.heartbeat("inbox_writer", config.stall_after),
        on_death=writer_died,
    )
    app = build_app(config, writer.store, metrics, health.report, now=clock)
    soft, _ = raise_file_limit()
    limits = ConnectionLimits(
        max_connections=fitting_limit(config.max_connections, soft),
        request_timeout=config.request_timeout.total_seconds(),
    )
    server = _Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            http=guarded_protocol(ConnectionGuard(limits, metrics)),
            timeout_keep_alive=5,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    writer.start()
    threading.Thread(target=_receive, args=(peer_metrics, metrics, writer), name="from-engine", daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    await server.serve()
    await asyncio.to_thread(writer.stop)  # in-flight webhooks were answered: their rows are committed
    engine.dispose()
    if exit_code:
        log.error("the webhook port stopped because its inbox writer failed")
    return exit_code


def _receive(peer: Connection, metrics: Metrics, writer: InboxWriter) -> None:
    with contextlib.suppress(EOFError, OSError):
        while True:
            message = peer.recv()
            if isinstance(message, SetAside):
                writer.set_aside(message)
            else:
                metrics.set_peer("engine", message)


def _probe_write(engine: Engine) -> None:
    """The database takes a write: an UPDATE of every schema_version row, rolled back (on
    SQLite it takes the write lock; on PostgreSQL it fails on a read-only or standby server)."""
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            conn.execute(update(schema_version).values(version=schema_version.c.version))
        finally:
            transaction.rollback()


def _gauges(engine: Engine) -> dict[str, dict[Labels, float]]:
    with reading(engine) as conn:
        by_status = conn.execute(select(runs.c.status, func.count()).group_by(runs.c.status)).all()
        actions = conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all()
        backlog = conn.execute(select(func.count()).where(inbox.c.status == "pending")).scalar()
    return {
        "flowrun_runs": {(("status", s),): float(n) for s, n in by_status},
        "flowrun_actions": {(("status", s),): float(n) for s, n in actions},
        "flowrun_inbox_backlog": {(): float(backlog or 0)},
    }


class PortProcess:
    """The engine's handle on the port's process: start, stop (SIGTERM: stop accepting, answer
    what is in flight), and the two pipes. `on_exit` runs if the process ends on its own."""

    def __init__(
        self,
        config: Config,
        on_wake: Callable[[], None],
        metrics: Metrics,
        on_exit: Callable[[], None],
        aside: SetAside,
    ):
        context = multiprocessing.get_context("spawn")
        self._wake_in, wake_out = context.Pipe(duplex=False)
        metrics_in, self._metrics_out = context.Pipe(duplex=False)
        self._child_ends = (wake_out, metrics_in)
        self.process = context.Process(
            target=run_port,
            args=(config, wake_out, metrics_in, os.getpid(), aside),
            name="flowrun-port",
            daemon=False,
        )
        self.on_wake, self.metrics, self.on_exit = on_wake, metrics, on_exit
        self._stopped = threading.Event()
        self._sending = threading.Lock()  # two threads send down one pipe

    def set_aside(self, aside: SetAside) -> None:
        with self._sending, contextlib.suppress(OSError, ValueError):
            self._metrics_out.send(aside)

    def start(self) -> None:
        self.process.start()
        for end in self._child_ends:  # only the child holds these now: its exit reads as EOF here
            end.close()
        threading.Thread(target=self._read_wakes, name="port-wakes", daemon=True).start()
        threading.Thread(target=self._send_metrics, name="port-metrics", daemon=True).start()

    def stop(self, grace: float) -> None:
        self._stopped.set()
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(grace)
        if self.process.is_alive():
            log.error("the webhook port did not stop within %.0f s; killing it", grace)
            self.process.kill()
            self.process.join()

    def _read_wakes(self) -> None:
        try:
            while True:
                self._wake_in.recv_bytes()
                self.on_wake()
        except (EOFError, OSError):
            pass
        self.process.join()
        if not self._stopped.is_set():
            self.on_exit()

    def _send_metrics(self) -> None:
        while not self._stopped.wait(0.5):
            try:
                with self._sending:
                    self._metrics_out.send(self.metrics.snapshot())
            except (OSError, ValueError):
                return
