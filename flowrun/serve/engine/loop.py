"""The engine: work from its sources applied by the runtime, in units of work of up to `batch`
pieces, each committed in one short write transaction.

If a piece of work breaks the runtime, the pieces before it are applied again without it (the
runtime is deterministic: they give the same writes) and committed, and that piece is set aside
in its own unit of work: an inbox row is marked `failed` (listed and replayable with
`flowrun inbox`), a timer, outcome or send ends its run `failed` with the error, a check stops
firing. Nothing is retried every round for ever, and nothing behind it waits.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from flowrun.engine.state import RunState
from flowrun.flow.model import Flow
from flowrun.runtime.records import Applied
from flowrun.runtime.runtime import Runtime
from flowrun.runtime.settings import Settings
from flowrun.segments.model import Segment
from flowrun.serve.cluster import Cluster
from flowrun.serve.engine.lookups import Lookups
from flowrun.serve.engine.sources import Sources
from flowrun.serve.engine.work import Work
from flowrun.state import codec
from flowrun.state.database import reading
from flowrun.state.schema import cursors, outbox, runs
from flowrun.state.uow import SqlUnitOfWork, commit

log = logging.getLogger("flowrun.engine")
KNOWN_RUNS = 4096  # committed, unfinished runs kept decoded: an action's result then needs no decoding


class EngineLoop:
    def __init__(
        self,
        db: Engine,
        flows: Sequence[Flow],
        settings: Settings,
        clock: Callable[[], datetime],
        cluster: Cluster,
        *,
        batch: int = 256,
        on_ready: Callable[[int], None] = lambda n: None,
        on_applied: Callable[[list[Applied]], None] = lambda applied: None,
        lookups: Lookups | None = None,
    ) -> None:
        self.db, self.clock, self.cluster, self.batch = db, clock, cluster, batch
        self.runtime = Runtime(flows, settings)
        self.sources = Sources(self.runtime, batch, lookups)
        self.on_ready, self.on_applied = on_ready, on_applied
        self.known: OrderedDict[str, RunState] = OrderedDict()
        self.wake = threading.Event()
        self.lock = threading.Lock()  # a reload waits for the round in progress

    def reload(self, flows: Sequence[Flow], segments: tuple[Segment, ...] | None = None) -> None:
        with self.lock:
            self.runtime.load(flows, segments)
            self.sources.reloaded()

    def round(self) -> bool:
        """Everything due now, once; True if anything was applied."""
        with self.lock:
            if self.cluster.changed:
                self.known.clear()  # runs of partitions taken or given back may have moved elsewhere
                self.cluster.changed = False
            now, parts = self.clock(), self.cluster.owned
            with reading(self.db) as reader, reader.begin():
                work = self.sources.collect(reader, parts, now)
            for start in range(0, len(work), self.batch):
                self._apply(work[start : start + self.batch], parts, now)
            return bool(work)

    def _apply(self, work: list[Work], parts: frozenset[int] | None, now: datetime) -> None:
        while work:
            _, broke = self._unit(work, parts, now)
            if broke is None:
                return
            index, error = broke
            if index:
                self._unit(work[:index], parts, now)  # the same writes as before, without the broken piece
            self._set_aside(work[index], error, parts, now)
            work = work[index + 1 :]

    def _unit(
        self, work: list[Work], parts: frozenset[int] | None, now: datetime
    ) -> tuple[list[Applied], tuple[int, str] | None]:
        results: list[Applied] = []
        with reading(self.db) as reader, reader.begin():
            uow = SqlUnitOfWork(reader, parts, self.known, now)
            touched = [w.run_id for w in work if w.run_id]
            touched += [run_id for w in work for unit in w.inputs for run_id in self.runtime.started_by(unit)]
            uow.runs.prefetch(touched)
            uow.outbox.prefetch_runs(touched)
            for index, piece in enumerate(work):
                try:
                    for unit in piece.inputs:
                        results.append(self.runtime.apply(uow, unit, now))
                    piece.done(uow)
                except Exception as exc:
                    log.exception("%s broke the runtime; setting it aside", piece.label)
                    return [], (index, f"{type(exc).__name__}: {exc}")
        commit(self.db, uow, self.cluster.fence)
        self._remember(uow)
        ready = sum(len(a.ready) for a in results)
        if ready:
            self.on_ready(ready)
        self.on_applied(results)
        return results, None

    def _set_aside(self, piece: Work, error: str, parts: frozenset[int] | None, now: datetime) -> None:
        if piece.quarantine is None:
            return
        with reading(self.db) as reader, reader.begin():
            uow = SqlUnitOfWork(reader, parts, self.known, now)
            piece.quarantine(uow, error)
        commit(self.db, uow, self.cluster.fence)
        self._remember(uow)

    def _remember(self, uow: SqlUnitOfWork) -> None:
        """Runs just committed (only this process writes a partition's runs)."""
        for run_id, run in uow.runs.changed.items():
            if run.status.final:
                self.known.pop(run_id, None)
            else:
                self.known[run_id] = run
                self.known.move_to_end(run_id)
        while len(self.known) > KNOWN_RUNS:
            self.known.popitem(last=False)

    def next_due(self) -> datetime | None:
        """The earliest timer, check or deferred send of this instance's partitions."""
        parts = self.cluster.owned
        with reading(self.db) as conn:
            times: list[Any] = []
            for column, where in (
                (runs.c.wake_at, runs.c.part),
                (cursors.c.due_at, cursors.c.part),
                (outbox.c.next_attempt_at, outbox.c.part),
            ):
                query = select(func.min(column))
                if column is outbox.c.next_attempt_at:
                    query = query.where(outbox.c.status == "pending")
                if parts is not None:
                    query = query.where(where.in_(sorted(parts)))
                times.append(conn.execute(query).scalar())
        found = [codec._aware(t) for t in times if t is not None]
        return min(found) if found else None
