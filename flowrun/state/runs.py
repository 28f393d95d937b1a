"""Runs over SQL inside a unit of work: reads from its snapshot (or runs decoded before and kept
by the caller), writes held until the commit. Queries see the unit's own writes."""

from __future__ import annotations

from collections.abc import Callable, Collection, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from flowrun.engine.state import FINAL, RunState, Status
from flowrun.runtime.protocols import Entered
from flowrun.runtime.sending import run_part
from flowrun.state import codec
from flowrun.state.schema import entries, runs

ACTIVE = [s.value for s in Status if s not in FINAL]
_GET = select(runs).where(runs.c.id == bindparam("id"))


class SqlRuns:
    def __init__(
        self, reader: Connection, parts: frozenset[int] | None, known: MutableMapping[str, RunState] | None = None
    ) -> None:
        self.reader, self.parts = reader, parts
        self.known = known if known is not None else {}  # committed runs the caller keeps decoded
        self.changed: dict[str, RunState] = {}
        self.entered: dict[tuple[str, str], RunState] = {}  # (flow, customer): runs started here
        self._read: dict[str, RunState | None] = {}

    def get(self, run_id: str) -> RunState | None:
        if run_id in self.changed:
            return self.changed[run_id]
        if run_id in self._read:
            return self._read[run_id]
        run = self.known.get(run_id)
        if run is None:
            row = self.reader.execute(_GET, {"id": run_id}).mappings().first()
            run = codec.run_from_row(row) if row else None
        self._read[run_id] = run
        return run

    def prefetch(self, run_ids: Collection[str]) -> None:
        wanted = [r for r in run_ids if r not in self.changed and r not in self._read and r not in self.known]
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            found = {row["id"]: row for row in self.reader.execute(select(runs).where(runs.c.id.in_(part))).mappings()}
            for run_id in part:
                self._read[run_id] = codec.run_from_row(found[run_id]) if run_id in found else None

    def save(self, run: RunState) -> None:
        new = run.id not in self.changed and self._read.get(run.id, 0) is None
        if new and run.customer_key and run.status is not Status.SKIPPED:
            self.entered[(run.flow_id, run.customer_key)] = run
        self.changed[run.id] = run

    def active_for_customer(self, customer_key: str, flow_ids: Collection[str]) -> list[RunState]:
        wanted = set(flow_ids)
        return self._query(
            (runs.c.customer_key == customer_key, runs.c.flow_id.in_(sorted(wanted)), runs.c.status.in_(ACTIVE)),
            lambda r: r.customer_key == customer_key and r.flow_id in wanted and not r.status.final,
        )

    def active_for_key(self, flow_id: str, concurrency_key: str) -> list[RunState]:
        return self._query(
            (runs.c.flow_id == flow_id, runs.c.concurrency_key == concurrency_key, runs.c.status.in_(ACTIVE)),
            lambda r: r.flow_id == flow_id and r.concurrency_key == concurrency_key and not r.status.final,
        )

    def awaiting(self, event_type: str) -> list[RunState]:
        where: tuple[Any, ...] = (runs.c.status == Status.AWAITING.value, runs.c.awaiting.like(f"%{event_type}%"))
        if self.parts is not None:
            where = (*where, runs.c.part.in_(sorted(self.parts)))
        return self._query(
            where,
            lambda r: (
                r.status is Status.AWAITING
                and event_type in r.awaiting
                and (self.parts is None or run_part(r) in self.parts)
            ),
        )

    def last_started(self, flow_id: str, customer_key: str) -> Entered | None:
        here = self.entered.get((flow_id, customer_key))
        if here is not None:
            return here
        query = select(entries.c.run_id, entries.c.started_at).where(
            entries.c.flow_id == flow_id, entries.c.customer_key == customer_key
        )
        row = self.reader.execute(query).first()
        return Entry(row.run_id, codec._aware(row.started_at)) if row else None

    def _query(self, where: tuple[Any, ...], keep: Callable[[RunState], bool]) -> list[RunState]:
        query = select(runs).where(*where).order_by(runs.c.started_at, runs.c.id)
        merged = {r.id: r for r in (self._decoded(row) for row in self.reader.execute(query).mappings())}
        merged.update(self.changed)
        return sorted((r for r in merged.values() if keep(r)), key=lambda r: (r.started_at, r.id))

    def _decoded(self, row: Any) -> RunState:
        run_id = row["id"]
        cached = self._read.get(run_id) or self.known.get(run_id)
        if cached is None:
            cached = codec.run_from_row(row)
            self._read[run_id] = cached
        return cached

    def rows(self) -> list[dict[str, object]]:
        return [run_row(run) for run in self.changed.values()]

    def entry_rows(self) -> list[dict[str, object]]:
        return [
            {"flow_id": f, "customer_key": c, "run_id": r.id, "started_at": codec.utc(r.started_at)}
            for (f, c), r in self.entered.items()
        ]


@dataclass(frozen=True)
class Entry:
    id: str
    started_at: datetime


def run_row(run: RunState) -> dict[str, object]:
    return {
        "id": run.id,
        "flow_id": run.flow_id,
        "flow_version": run.flow_version,
        "status": run.status.value,
        "customer_key": run.customer_key,
        "concurrency_key": run.concurrency_key,
        "started_at": codec.utc(run.started_at),
        "updated_at": codec.utc(run.updated_at),
        "wake_at": codec.utc(run.wake_at) if not run.status.final else None,
        "awaiting": ",".join(run.awaiting) if run.status is Status.AWAITING else None,
        "state": "",
        "state_z": codec.pack(codec.run_to_json(run)),
        "trigger_event": None,
        "trigger_z": codec.trigger_packed(run.trigger),
        "part": run_part(run),
    }
