"""The dispatcher's writes: claiming ready rows, taking back what dead dispatchers held, and
writing what providers answered. Claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL, so any
number of dispatchers share one outbox; SQLite has one dispatcher.

A claimed row is `sending`, `claimed_by` this dispatcher. Its outcome is written only while it
still is: a row taken back from a dispatcher presumed dead is not written over by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, exists, select, update
from sqlalchemy.engine import Connection

from flowrun.engine.state import FINAL
from flowrun.runtime.attempts import Settled
from flowrun.runtime.records import Attempt, Send, SendStatus
from flowrun.state import codec
from flowrun.state.outbox import attempt_row, send_from_row
from flowrun.state.schema import attempts, outbox, runs, sends

_FINISH = (
    update(outbox)
    .where(
        and_(
            outbox.c.key == bindparam("b_key"),
            outbox.c.status == SendStatus.SENDING.value,
            outbox.c.claimed_by == bindparam("b_me"),
        )
    )
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        next_attempt_at=bindparam("b_next"),
        updated_at=bindparam("b_updated"),
        last_error=bindparam("b_error"),
        result=bindparam("b_result"),
        claimed_by=None,
    )
)
UNKNOWN = "outcome unknown: the dispatcher sending it stopped before recording the answer; sent again"


def claim(conn: Connection, me: str, now: datetime, limit: int) -> list[Send]:
    """Up to `limit` ready rows due now, never one whose run has ended."""
    run_ended = exists().where(runs.c.id == outbox.c.run_id, runs.c.status.in_([s.value for s in FINAL]))
    due = (
        select(outbox.c.key)
        .where(outbox.c.status == SendStatus.READY.value, outbox.c.next_attempt_at <= codec.utc(now), ~run_ended)
        .order_by(outbox.c.next_attempt_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    claimed = (
        update(outbox)
        .where(outbox.c.key.in_(due.scalar_subquery()))
        .values(status=SendStatus.SENDING.value, claimed_by=me, updated_at=codec.utc(now))
        .returning(*outbox.c)
    )
    return sorted((send_from_row(r) for r in conn.execute(claimed).mappings()), key=lambda s: s.next_attempt_at)


def take_back(conn: Connection, live: Sequence[str], now: datetime) -> list[str]:
    """Rows that no live dispatcher holds (a dead one was sending them, or a pre-v6 one left them)
    are ready again, each marked: the provider may have accepted one before its dispatcher died,
    so it may go out twice."""
    orphaned = outbox.c.claimed_by.is_(None) | outbox.c.claimed_by.not_in(list(live))
    query = select(outbox.c.key).where(outbox.c.status == SendStatus.SENDING.value, orphaned)
    keys = list(conn.execute(query).scalars())
    if keys:
        conn.execute(
            update(outbox)
            .where(outbox.c.key.in_(keys), outbox.c.status == SendStatus.SENDING.value)
            .values(
                status=SendStatus.READY.value,
                claimed_by=None,
                next_attempt_at=codec.utc(now),
                updated_at=codec.utc(now),
            )
        )
        conn.execute(attempts.insert(), [attempt_row(Attempt(k, now, "unknown", UNKNOWN)) for k in keys])
    return keys


def finish(conn: Connection, me: str, settled: Sequence[Settled]) -> list[str]:
    """Write what the providers answered; the keys whose row was no longer ours (dropped)."""
    lost = []
    for item in settled:
        if conn.execute(_FINISH, _finish_params(me, item.send)).rowcount == 0:
            lost.append(item.send.key)
    kept = [s for s in settled if s.send.key not in lost]
    if kept:
        conn.execute(attempts.insert(), [attempt_row(s.attempt) for s in kept])
    gone = [{"b_key": s.send.key} for s in kept if s.gives_back_cap]
    if gone:
        conn.execute(sends.delete().where(sends.c.key == bindparam("b_key")), gone)
    return lost


def release(conn: Connection, me: str, keys: Sequence[str]) -> None:
    """Claimed rows this dispatcher will not send after all (it is stopping): ready again."""
    if keys:
        conn.execute(
            update(outbox)
            .where(outbox.c.key.in_(list(keys)), outbox.c.claimed_by == me, outbox.c.status == SendStatus.SENDING.value)
            .values(status=SendStatus.READY.value, claimed_by=None)
        )


def next_ready(conn: Connection) -> datetime | None:
    from sqlalchemy import func

    value = conn.execute(select(func.min(outbox.c.next_attempt_at)).where(outbox.c.status == "ready")).scalar()
    return codec._aware(value) if value is not None else None


def _finish_params(me: str, send: Send) -> dict[str, Any]:
    return {
        "b_key": send.key,
        "b_me": me,
        "b_status": send.status.value,
        "b_attempts": send.attempts,
        "b_next": codec.utc(send.next_attempt_at),
        "b_updated": codec.utc(send.updated_at),
        "b_error": send.last_error or None,
        "b_result": codec.dumps(send.result) if send.result is not None else None,
    }
