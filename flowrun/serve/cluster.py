"""Who does what when several `flowrun serve` instances share one PostgreSQL database.

- Every engine and dispatcher process registers in `instances` and beats there every third of
  the lease. One whose beat is older than the lease is dead: its claimed sends are taken back.
- Customers' runs are moved in hash partitions (flowrun.runtime.records.PARTITIONS). An engine
  holds a lease on its share of them (partitions / live engines, rounded up), renews it with its
  beat, takes partitions whose lease ran out and gives back what is over its share. Every write
  transaction checks, holding the rows `FOR SHARE`, that its partitions are still its own
  (`fence`), so a paused instance that lost them cannot write over the new owner.
- One engine is the leader (a session-level advisory lock): it ticks schedules and runs pollers.
  The lock goes with its database session: when that instance dies, another takes it.

On SQLite there is one instance (`flowrun serve` holds `<database>.serve.lock`): it owns every
partition and leads, and at start every other registered process is dead.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine

from flowrun.errors import FlowrunError
from flowrun.runtime.records import PARTITIONS
from flowrun.state.schema import instances, partitions

log = logging.getLogger("flowrun.cluster")
LEADER_LOCK = 0x666C6F77  # "flow": the advisory lock key of the leader


class LeaseLost(FlowrunError):
    """A partition this instance was moving is another's now: its unit of work is dropped."""


def _wall() -> datetime:
    return datetime.now(UTC)


class Cluster:
    def __init__(self, db: Engine, role: str, lease: timedelta) -> None:
        self.db, self.role, self.lease = db, role, lease
        self.shared = db.dialect.name == "postgresql"
        self.id = f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._owned: frozenset[int] = frozenset()
        self._leader: Connection | None = None
        self.changed = False  # ownership changed at the last beat

    @property
    def owned(self) -> frozenset[int] | None:
        """The partitions this instance moves; None for all of them (SQLite)."""
        return self._owned if self.shared else None

    @property
    def beat_every(self) -> float:
        return self.lease.total_seconds() / 3

    def join(self) -> None:
        now = _wall()
        with self.db.begin() as conn:
            if not self.shared:  # the serve lock is ours: whoever registered before is gone
                conn.execute(delete(instances).where(instances.c.role == self.role))
            row = {"id": self.id, "role": self.role, "host": socket.gethostname(), "pid": os.getpid()}
            conn.execute(insert(instances).values(**row, started_at=now, heartbeat_at=self._now(conn)))
        self.beat()

    def leave(self) -> None:
        with self.db.begin() as conn:
            conn.execute(delete(instances).where(instances.c.id == self.id))
            if self.shared and self.role == "engine":
                conn.execute(
                    update(partitions).where(partitions.c.owner == self.id).values(owner=None, lease_until=None)
                )
        if self._leader is not None:
            self._leader.close()
            self._leader = None

    def beat(self) -> None:
        """Heartbeat; renew, take and give back partitions (engines on PostgreSQL)."""
        with self.db.begin() as conn:
            now = self._now(conn)
            conn.execute(update(instances).where(instances.c.id == self.id).values(heartbeat_at=now))
            if self.shared:  # long gone: nobody needs to know they were here
                conn.execute(delete(instances).where(instances.c.heartbeat_at < now - 100 * self.lease))
            if self.shared and self.role == "engine":
                before = self._owned
                self._owned = self._balance(conn, now)
                self.changed = before != self._owned
                if self.changed:
                    log.info("%s moves partitions %s", self.id, _ranges(self._owned))

    def _balance(self, conn: Connection, now: datetime) -> frozenset[int]:
        until = now + self.lease
        live = conn.execute(
            select(func.count()).where(instances.c.role == "engine", instances.c.heartbeat_at > now - self.lease)
        ).scalar()
        share = math.ceil(PARTITIONS / max(1, int(live or 1)))
        mine = set(
            conn.execute(
                update(partitions)
                .where(partitions.c.owner == self.id, partitions.c.lease_until > now)
                .values(lease_until=until)
                .returning(partitions.c.part)
            ).scalars()
        )
        if len(mine) > share:
            extra = sorted(mine)[share:]
            conn.execute(update(partitions).where(partitions.c.part.in_(extra)).values(owner=None, lease_until=None))
            mine -= set(extra)
        elif len(mine) < share:
            free = (
                select(partitions.c.part)
                .where((partitions.c.owner.is_(None)) | (partitions.c.lease_until <= now))
                .order_by(partitions.c.part)
                .limit(share - len(mine))
                .with_for_update(skip_locked=True)
            )
            taken = conn.execute(
                update(partitions)
                .where(partitions.c.part.in_(free.scalar_subquery()))
                .values(owner=self.id, lease_until=until)
                .returning(partitions.c.part)
            ).scalars()
            mine.update(taken)
        return frozenset(mine)

    def fence(self, conn: Connection, parts: set[int]) -> None:
        """Inside a write transaction: raise LeaseLost unless every partition written is ours, and
        hold them so nobody can take them before this transaction ends."""
        if not self.shared or not parts:
            return
        held = set(
            conn.execute(
                select(partitions.c.part)
                .where(
                    partitions.c.part.in_(sorted(parts)),
                    partitions.c.owner == self.id,
                    partitions.c.lease_until > func.now(),
                )
                .with_for_update(read=True)
            ).scalars()
        )
        if held != parts:
            lost = parts - held
            self._owned = self._owned - lost
            self.changed = True
            raise LeaseLost(f"partitions {_ranges(frozenset(lost))} are no longer this instance's")

    def live(self, conn: Connection) -> list[str]:
        query = select(instances.c.id).where(instances.c.role == self.role)
        if self.shared:
            query = query.where(instances.c.heartbeat_at > func.now() - self.lease)
        else:
            query = query.where(instances.c.id == self.id)
        return list(conn.execute(query).scalars())

    def leads(self) -> bool:
        """Whether this instance is the leader now (taking the lock if it is free)."""
        if not self.shared:
            return True
        try:
            if self._leader is None:
                self._leader = self.db.connect()
            held = bool(self._leader.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK}).scalar())
            self._leader.commit()
            return held
        except Exception:  # the session is gone, and the lock with it
            log.warning("lost the leader's database session; trying again")
            if self._leader is not None:
                self._leader.invalidate()
                self._leader = None
            return False

    def _now(self, conn: Connection) -> datetime:
        if self.shared:
            value: Any = conn.execute(select(func.now())).scalar()
            return value  # type: ignore[no-any-return]
        return _wall()


def _ranges(parts: frozenset[int]) -> str:
    found = sorted(parts)
    return f"{found[0]}..{found[-1]} ({len(found)})" if found else "none"
