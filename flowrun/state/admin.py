"""What an operator does by hand with `flowrun`: re-queue parked actions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from flowrun.engine.state import FINAL
from flowrun.runtime.records import SendStatus
from flowrun.state import codec
from flowrun.state.schema import outbox, runs


def requeue(conn: Connection, keys: Sequence[str] | None, when: datetime) -> tuple[int, list[tuple[str, str]]]:
    """Parked rows (all, or these) back to pending: the runtime decides their guardrails again and
    the dispatcher starts their attempts from zero. A row whose run has ended, or that is not
    parked, is refused with the reason."""
    query = select(outbox.c.key, outbox.c.status, runs.c.status.label("run_status")).join(
        runs, runs.c.id == outbox.c.run_id, isouter=True
    )
    query = query.where(outbox.c.key.in_(list(keys))) if keys else query.where(outbox.c.status == "parked")
    found = {row.key: row for row in conn.execute(query)}
    refused = [(key, "no such action") for key in keys or () if key not in found]
    movable, now = [], codec.utc(when)
    for key, row in found.items():
        if row.run_status in {s.value for s in FINAL}:
            refused.append((key, f"its run is {row.run_status}: nothing more is sent for it"))
        elif row.status != SendStatus.PARKED.value:
            refused.append((key, f"it is {row.status}, not parked"))
        else:
            movable.append(key)
    if movable:
        conn.execute(
            update(outbox)
            .where(outbox.c.key.in_(movable), outbox.c.status == SendStatus.PARKED.value)
            .values(status=SendStatus.PENDING.value, attempts=0, next_attempt_at=now, updated_at=now)
        )
    return len(movable), refused
