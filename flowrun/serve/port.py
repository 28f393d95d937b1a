"""The webhook port as its own process: uvicorn, the inbox writer, /healthz and /metrics.

Accepting a webhook (read, check the signature, parse, group-commit to the inbox, answer)
shares no GIL with the engine: in one process the worker's and dispatcher's Python work
took the interpreter from the event loop and the writer, and ingest ran at a third of the
rate it reaches alone. The two processes meet in the database; the port sends one byte down
a pipe after each commit of events the engine reads, so it starts on them at once, and the
engine sends its counters back every half second for /metrics, and after a reload the
topics nothing reads now (`SetAside`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection

import uvicorn
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from flowrun.config import Config
from flowrun.serve import messages as m
from flowrun.serve.ingest import InboxWriter
from flowrun.serve.metrics import Labels, Metrics
from flowrun.serve.process import clock_from_env, die_with_parent, loop_factory, setup_logging
from flowrun.serve.webhooks import build_app
from flowrun.state.database import make_engine, reading
from flowrun.state.schema import inbox, outbox, runs
from flowrun.state.sqlite_writer import LockLike

log = logging.getLogger("flowrun.port")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # handlers are installed below: SIGTERM and SIGINT stop accepting, SIGHUP is the engine's


@dataclass(frozen=True)
class PortPipes:
    to_engine: Connection  # new inbox rows
    control: Connection  # from the engine: topics to set aside
    statuses: list[Connection]  # from the engine and the dispatcher: heartbeats and counters


def run_port(config: Config, pipes: PortPipes, writer_lock: LockLike | None, parent: int) -> None:
    """The child process's entry point (multiprocessing, spawn)."""
    die_with_parent(parent, "flowrun-port")
    setup_logging(config)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve(config, pipes, writer_lock))


async def _serve(config: Config, pipes: PortPipes, writer_lock: LockLike | None) -> None:
    engine = make_engine(config.database, writer_lock)
    metrics = Metrics()
    metrics.gauges = lambda: asyncio.to_thread(_gauges, engine)
    to_engine = m.Outlet(pipes.to_engine, lossy=True)
    writer = InboxWriter(engine, on_commit=lambda: to_engine.send(m.InboxCommitted()))
    writer.start()
    m.listen(pipes.control, writer.set_aside, "port-control")
    heard: dict[str, tuple[float, m.Status]] = {}

    def status(message: m.Status) -> None:
        heard[message.part] = (time.monotonic(), message)
        metrics.peers[message.part] = message.metrics or {}

    for n, end in enumerate(pipes.statuses):
        m.listen(end, status, f"port-status-{n}")
    stale_after = config.lease.total_seconds()

    async def health() -> bool:
        now = time.monotonic()
        for part in ("engine", "dispatcher"):
            if part not in heard or now - heard[part][0] > stale_after:
                return False
        try:
            return await asyncio.to_thread(_probe, engine)
        except Exception:
            return False

    app = build_app(config, writer.store, metrics, health, now=clock_from_env())
    server = _Server(
        uvicorn.Config(app, host=config.host, port=config.port, log_config=None, access_log=False, lifespan="off")
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    await server.serve()
    await asyncio.to_thread(writer.stop)  # in-flight webhooks were answered: their rows are committed
    engine.dispose()


def _probe(engine: Engine) -> bool:
    with reading(engine) as conn:
        conn.execute(text("SELECT 1"))
    return True


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
