"""Retention in a process of its own, started by the engine, pruning when the leading engine
asks it to.

A pass deletes in short batches under SQLite's one writer lock. In the engine's process its
Python work took turns at the GIL with the engine's, and an engine transaction that held the
writer lock waited for the GIL too; in its own process it only shares the CPU. It is not
niced: since webhooks are acknowledged from the port's spool (flowrun.state.spool) a prune
no longer delays them through the writer lock, and a niced prune got so little CPU that it
fell behind the load (25k runs, probes 300/s: 82-213 s niced, 54 s not, p99 ratio 1.0x).

The engine sends its `now` (so a test clock holds) and the longest frequency cap (the flows
stay in the engine) over a pipe and waits for the pass to end. The child stops between two
batches when the engine stops; SIGTERM and SIGINT stop it the same way (a kill in the middle
of a batch would leave the writer lock taken)."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event

from flowrun.config import Config
from flowrun.pruning import prune_now
from flowrun.serve.process import die_with_parent, setup_logging
from flowrun.state.database import make_engine
from flowrun.state.prune import Pace
from flowrun.state.sqlite_writer import LockLike

log = logging.getLogger("flowrun.retention")
# a batch holds the writer lock about 10 ms, then the pass rests as long: the engine's, the
# dispatcher's and the spool's turn
PACE = Pace(hold=0.010, rest=1.0)


def run_pruner(config: Config, writer_lock: LockLike | None, asks: Connection, stop: Event, parent: int) -> None:
    """The child's entry point (multiprocessing, spawn): a pass for each (now, cap) asked."""
    die_with_parent(parent, "flowrun-prune")
    setup_logging(config)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    db = make_engine(config.database, writer_lock)
    try:
        while not stop.is_set():
            try:
                asked = asks.recv()
            except EOFError:
                break
            if asked is None:
                break
            now, cap = asked
            try:
                prune_now(db, config, cap, now, PACE, stop.is_set)
            except Exception:
                log.exception("retention failed; it runs again at its next interval")
            asks.send(True)
    finally:
        db.dispose()


class Pruner:
    """The engine's side of the child: started on the first pass, a pass at a time, waited for."""

    def __init__(self, config: Config, writer_lock: LockLike | None) -> None:
        self.config, self.writer_lock = config, writer_lock
        self.ctx = multiprocessing.get_context("spawn")
        self.stop = self.ctx.Event()
        self.child: BaseProcess | None = None
        self.asks: Connection | None = None

    def prune(self, now: datetime, cap: timedelta) -> None:
        if self.child is None or not self.child.is_alive():
            self._start()
        assert self.asks is not None
        try:
            self.asks.send((now, cap))
            self.asks.recv()
        except (EOFError, OSError):  # the child died (it is started again next time)
            log.error("the prune process exited with %s", self.child.exitcode if self.child else None)

    def _start(self) -> None:
        mine, theirs = self.ctx.Pipe()
        args = (self.config, self.writer_lock, theirs, self.stop, os.getpid())
        self.child = self.ctx.Process(target=run_pruner, args=args, name="flowrun-prune", daemon=False)
        self.child.start()
        theirs.close()
        self.asks = mine

    def close(self) -> None:
        """The engine is stopping: a pass under way stops after its batch, then the child exits."""
        self.stop.set()
        if self.asks is not None:
            with contextlib.suppress(OSError):
                self.asks.send(None)

    def wait(self) -> None:
        """Until the child has exited (it must not be killed holding the writer lock)."""
        if self.child is not None:
            self.child.join()
