"""The webhook port's process: uvicorn, the inbox writer, /healthz and /metrics.

Accepting a webhook (read, check the signature, bound, group-commit to the inbox, answer)
shares no GIL with the engine or the dispatcher. The processes meet in the database and talk
through typed messages (flowrun.serve.messages): the port nudges the engine after each commit
of deliveries it reads; the engine sends the topics nothing reads (`SetAside`) on a control
pipe; the engine and the dispatcher send their heartbeats and counters, which /healthz and
/metrics report. Connections are bounded by flowrun.serve.connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection

import uvicorn
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from flowrun.config import Config
from flowrun.serve import messages as m
from flowrun.serve.connections import (
    ConnectionGuard,
    ConnectionLimits,
    fitting_limit,
    guarded_protocol,
    raise_file_limit,
)
from flowrun.serve.health import Health
from flowrun.serve.ingest import InboxWriter
from flowrun.serve.metrics import Labels, Metrics
from flowrun.serve.process import clock_from_env, die_with_parent, loop_factory, setup_logging
from flowrun.serve.webhooks import build_app
from flowrun.state import storage
from flowrun.state.database import make_engine, reading, sqlite_path
from flowrun.state.schema import inbox, outbox, runs, schema_version
from flowrun.state.spool import Spool, spool_path
from flowrun.state.spool_admin import refused_count, waiting
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
    peers: tuple[str, ...] = ()  # the parts /healthz waits to hear from


def run_port(config: Config, pipes: PortPipes, writer_lock: LockLike | None, parent: int) -> None:
    """The child process's entry point (multiprocessing, spawn). Exits 1 when the inbox writer
    died: the supervisor sees the port gone and stops serve non-zero (systemd restarts it)."""
    die_with_parent(parent, "flowrun-port")
    setup_logging(config)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        code = runner.run(_serve(config, pipes, writer_lock))
    if code:
        sys.exit(code)


async def _serve(config: Config, pipes: PortPipes, writer_lock: LockLike | None) -> int:
    engine = make_engine(config.database, writer_lock)
    clock = clock_from_env()
    metrics = Metrics(sources=config.sources)
    metrics.gauges = lambda: asyncio.to_thread(_gauges, engine, config.database)
    health = Health(clock)
    health.probe("database", functools.partial(_probe_write, engine), config.stall_after)
    for peer in pipes.peers:
        health.expect(peer)
    loop = asyncio.get_running_loop()
    exit_code = 0
    to_engine = m.Outlet(pipes.to_engine, lossy=True)

    def committed() -> None:
        to_engine.send(m.InboxCommitted())

    def writer_died() -> None:  # on the writer's thread
        nonlocal exit_code
        exit_code = 1
        loop.call_soon_threadsafe(setattr, server, "should_exit", True)

    def status(message: m.Status) -> None:
        health.set_peer(message.part, message.beats)
        metrics.set_peer(message.part, message.metrics or {})

    path = sqlite_path(config.database)
    spool = Spool(spool_path(path), engine) if path is not None else None
    writer = InboxWriter(
        engine,
        spool=spool,
        on_commit=committed,
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
    m.listen(pipes.control, writer.set_aside, "port-control")
    for n, end in enumerate(pipes.statuses):
        m.listen(end, status, f"port-status-{n}")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    await server.serve()
    await asyncio.to_thread(writer.stop)  # in-flight webhooks were answered: their rows are committed
    if spool is not None:
        spool.close()
    engine.dispose()
    if exit_code:
        log.error("the webhook port stopped because its inbox writer failed")
    return exit_code


def _probe_write(engine: Engine) -> None:
    """The database takes a write: an UPDATE of every schema_version row, rolled back (on
    SQLite it takes the write lock; on PostgreSQL it fails on a read-only or standby server)."""
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            conn.execute(update(schema_version).values(version=schema_version.c.version))
        finally:
            transaction.rollback()


def _gauges(engine: Engine, url: str) -> dict[str, dict[Labels, float]]:
    with reading(engine) as conn:
        by_status = conn.execute(select(runs.c.status, func.count()).group_by(runs.c.status)).all()
        actions = conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all()
        backlog = conn.execute(select(func.count()).where(inbox.c.status == "pending")).scalar()
        size, counts = storage.database_bytes(conn, url), storage.rows(conn)
        last, pruned = storage.last_prune(conn), storage.pruned_total(conn)
    path = sqlite_path(url)
    spooled = waiting(path, engine) if path is not None else 0
    refused = refused_count(path) if path is not None else 0
    gauges: dict[str, dict[Labels, float]] = {
        "flowrun_runs": {(("status", s),): float(n) for s, n in by_status},
        "flowrun_actions": {(("status", s),): float(n) for s, n in actions},
        "flowrun_inbox_backlog": {(): float(backlog or 0)},
        "flowrun_inbox_spooled": {(): float(spooled)},
        "flowrun_inbox_refused": {(): float(refused)},
        "flowrun_database_bytes": {(): float(size)},
        "flowrun_table_rows": {(("family", name),): float(n) for name, n in counts.items()},
        "flowrun_pruned_rows": {(("family", name),): float(n) for name, n in pruned.items()},
    }
    if last is not None:
        at, removed, took = last
        gauges["flowrun_last_prune_timestamp_seconds"] = {(): at.timestamp()}
        gauges["flowrun_last_prune_duration_seconds"] = {(): took}
        gauges["flowrun_last_prune_rows"] = {(("family", k),): float(v) for k, v in removed.items()}
    return gauges
