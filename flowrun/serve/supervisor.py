"""`flowrun serve`: a supervisor and three processes that each do one thing, started with
multiprocessing's `spawn` (a fork would copy threads and open connections):

- the webhook port (flowrun.serve.port): verify, bound, store, acknowledge; /healthz, /metrics;
- the engine (flowrun.serve.engine): inputs applied by the runtime, schedules and pollers;
- the dispatcher (flowrun.serve.dispatcher): sends performed, answers written back.

They meet in the database and talk through typed messages (flowrun.serve.messages). SIGTERM
stops the port first (no new webhooks, in-flight ones answered), then the dispatcher (in-flight
sends finish within `limits.shutdown_grace`), then the engine (it applies their answers). If a
part dies, the others are stopped and serve exits 1 so systemd restarts it; if the supervisor
dies, even by `kill -9`, the kernel kills its children (`PR_SET_PDEATHSIG`).

On SQLite, one `flowrun serve` at a time: it holds `<database>.serve.lock`, and the parts
share one writer lock (flowrun.state.sqlite_writer).
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from flowrun.config import Config
from flowrun.errors import UsageError
from flowrun.serve.dispatcher.process import DispatcherPipes, run_dispatcher
from flowrun.serve.engine.process import EnginePipes, run_engine
from flowrun.serve.port import PortPipes, run_port
from flowrun.serve.process import setup_logging
from flowrun.state.database import make_engine, sqlite_path
from flowrun.state.migrations import migrate

log = logging.getLogger("flowrun.serve")
ORDER_OF_STOPPING = ("port", "dispatcher", "engine")
PEERS = ("engine", "dispatcher")  # the parts that report to the port's /healthz


class AlreadyServing(UsageError):
    pass


def hold_serve_lock(config: Config) -> int | None:
    """SQLite: the one `flowrun serve` on this database (an flock the kernel drops when we die)."""
    path = sqlite_path(config.database)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.serve.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyServing(
            f"another `flowrun serve` is running on {path} (it holds {path}.serve.lock). SQLite takes one"
            " instance; to run several, use PostgreSQL (see the README's 'Several instances')."
        ) from None
    return fd


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.context = multiprocessing.get_context("spawn")
        self.processes: dict[str, BaseProcess] = {}
        self.stopping = threading.Event()
        self.failed: str | None = None
        self.lock: Any = None  # the shared SQLite writer lock: alive while the children are

    def start(self) -> None:
        ctx, config, me = self.context, self.config, os.getpid()
        lock = self.lock = ctx.Lock() if sqlite_path(config.database) is not None else None
        port_wake_r, port_wake_w = ctx.Pipe(duplex=False)
        disp_wake_r, disp_wake_w = ctx.Pipe(duplex=False)
        answers_r, answers_w = ctx.Pipe(duplex=False)
        control_r, control_w = ctx.Pipe(duplex=False)
        engine_status_r, engine_status_w = ctx.Pipe(duplex=False)
        disp_status_r, disp_status_w = ctx.Pipe(duplex=False)
        parts: dict[str, tuple[Any, tuple[Any, ...]]] = {
            "port": (
                run_port,
                (config, PortPipes(port_wake_w, control_r, [engine_status_r, disp_status_r], PEERS), lock, me),
            ),
            "engine": (
                run_engine,
                (config, EnginePipes([port_wake_r, answers_r], disp_wake_w, control_w, engine_status_w), lock, me),
            ),
            "dispatcher": (run_dispatcher, (config, DispatcherPipes(disp_wake_r, answers_w, disp_status_w), lock, me)),
        }
        for name, (target, args) in parts.items():
            process = ctx.Process(target=target, args=args, name=f"flowrun-{name}", daemon=False)
            process.start()
            self.processes[name] = process
        for end in (port_wake_r, port_wake_w, disp_wake_r, disp_wake_w, answers_r, answers_w):
            end.close()  # only the children hold them now: a child's exit reads as EOF there
        for end in (control_r, control_w, engine_status_r, engine_status_w, disp_status_r, disp_status_w):
            end.close()

    def watch(self) -> None:
        """Until a stop is asked for or a part exits on its own."""
        sentinels: dict[Any, str] = {p.sentinel: name for name, p in self.processes.items()}
        while not self.stopping.is_set():
            for sentinel in wait(list(sentinels), timeout=0.5):
                name = sentinels[sentinel]
                if not self.stopping.is_set():
                    code = self.processes[name].exitcode
                    log.error(
                        "the %s process exited unexpectedly (code %s); stopping so systemd restarts serve", name, code
                    )
                    self.failed = name
                    self.stopping.set()
                return

    def stop(self) -> list[str]:
        """Stop the parts in order; the ones that had to be killed."""
        killed = []
        grace = self.config.shutdown_grace.total_seconds()
        for name in ORDER_OF_STOPPING:
            process = self.processes.get(name)
            if process is None or not process.is_alive():
                continue
            process.terminate()
            deadline = time.monotonic() + grace + 5
            while process.is_alive() and time.monotonic() < deadline:
                process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("the %s process did not stop within %.0f s; killing it", name, grace + 5)
                process.kill()
                process.join()
                killed.append(name)
        return killed


def serve(config: Config) -> int:
    setup_logging(config)
    serve_lock = hold_serve_lock(config)
    db = make_engine(config.database)
    version = migrate(db)
    db.dispose()
    supervisor = Supervisor(config)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stopping.set())
    signal.signal(signal.SIGHUP, lambda *_: _forward_hup(supervisor))
    supervisor.start()
    log.info(
        "flowrun serve: schema v%d, %s, listening on %s:%d",
        version,
        config.database.split("://")[0],
        config.host,
        config.port,
    )
    supervisor.watch()
    log.info("draining: no new webhooks; finishing in-flight work (up to %s)", config.shutdown_grace)
    killed = supervisor.stop()
    if serve_lock is not None:
        os.close(serve_lock)
    if supervisor.failed:
        log.error("stopped after the %s process failed", supervisor.failed)
        return 1
    if killed:
        log.error("stopped after killing %s (what they had acknowledged was already committed)", ", ".join(killed))
        return 1
    log.info("stopped cleanly")
    return 0


def _forward_hup(supervisor: Supervisor) -> None:
    engine = supervisor.processes.get("engine")
    if engine is not None and engine.pid is not None:
        os.kill(engine.pid, signal.SIGHUP)
