"""The dispatcher's process: its own event loop and HTTP client, so sending shares no GIL with
the engine or the webhook port. Woken by the engine when rows become ready."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection

from flowrun.config import Config
from flowrun.runtime.attempts import Settled
from flowrun.serve import messages as m
from flowrun.serve.cluster import Cluster
from flowrun.serve.dispatcher.loop import Dispatcher
from flowrun.serve.health import Heartbeat
from flowrun.serve.metrics import Metrics
from flowrun.serve.process import clock_from_env, die_with_parent, loop_factory, setup_logging, test_clock_poll
from flowrun.state.database import make_engine
from flowrun.state.sqlite_writer import LockLike

log = logging.getLogger("flowrun.dispatch")


@dataclass(frozen=True)
class DispatcherPipes:
    wake: Connection  # from the engine
    to_engine: Connection
    status_to_port: Connection


def run_dispatcher(config: Config, pipes: DispatcherPipes, writer_lock: LockLike | None, parent: int) -> None:
    die_with_parent(parent, "flowrun-sender")
    setup_logging(config)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve(config, pipes, writer_lock))


async def _serve(config: Config, pipes: DispatcherPipes, writer_lock: LockLike | None) -> None:
    db = make_engine(config.database, writer_lock)
    cluster = Cluster(db, "dispatcher", config.lease)
    await asyncio.to_thread(cluster.join)
    metrics = Metrics()
    engine = m.Outlet(pipes.to_engine, lossy=True)
    status = m.Outlet(pipes.status_to_port, lossy=True)

    def answered(settled: list[Settled]) -> None:
        engine.send(m.OutcomesWritten(len(settled)))
        for item in settled:
            metrics.count("flowrun_action_attempts_total", action=item.send.action, outcome=item.attempt.outcome)

    def taken_back(keys: list[str]) -> None:
        metrics.count("flowrun_actions_outcome_unknown_total", len(keys))

    clock = clock_from_env()
    heartbeat = Heartbeat("dispatcher", config.lease)  # /healthz: claims or beats fail, or stop coming
    dispatcher = Dispatcher(
        db,
        clock,
        cluster,
        concurrency=config.dispatch_concurrency,
        channels=config.channels,
        sources=config.sources,
        on_outcomes=answered,
        on_taken_back=taken_back,
        poll_cap=test_clock_poll(),
        rates=config.rate_limits,
        on_error=lambda why: heartbeat.failed(why),
    )
    loop = asyncio.get_running_loop()
    m.listen(pipes.wake, lambda _msg: loop.call_soon_threadsafe(dispatcher.wake.set), "dispatcher-wake")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(dispatcher.stop(config.shutdown_grace)))
    loop.add_signal_handler(signal.SIGHUP, lambda: None)

    async def beat() -> None:
        while dispatcher.running:
            try:
                await asyncio.to_thread(cluster.beat)
                if cluster.shared:
                    await dispatcher.take_back()
                heartbeat.progressed(clock(), more=False)
            except Exception as exc:
                log.exception("dispatcher heartbeat failed")
                heartbeat.failed(f"{type(exc).__name__}: {exc}"[:300])
            status.send(m.Status("dispatcher", {"dispatcher": heartbeat.snapshot()}, metrics.snapshot()))
            await asyncio.sleep(cluster.beat_every)

    beating = asyncio.create_task(beat())
    log.info("dispatcher %s: up to %d sends at once", cluster.id, config.dispatch_concurrency)
    await dispatcher.run()
    beating.cancel()
    await asyncio.to_thread(cluster.leave)
    db.dispose()
    log.info("dispatcher stopped")
