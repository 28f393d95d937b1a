"""The outbox over SQL: the runtime's side (rows added, decided, cancelled, their outcome taken)
inside a unit of work, and the row codec the dispatcher shares.

The runtime and the dispatchers change disjoint states of a row: the runtime decides pending
rows, cancels unsent ones and marks outcomes applied; a dispatcher claims ready rows and writes
what the provider said. Every write of the runtime is conditional on the status it read, so a
row a dispatcher claimed in the meantime is left to it.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.engine import Connection

from flowrun.runtime.records import UNSENT, Attempt, Send, SendStatus
from flowrun.state import codec
from flowrun.state.database import insert_many_ignore
from flowrun.state.schema import attempts, outbox

_GET = select(outbox).where(outbox.c.key == bindparam("key"))
_PUT = (
    update(outbox)
    .where(and_(outbox.c.key == bindparam("b_key"), outbox.c.status == bindparam("b_was")))
    .values(
        status=bindparam("b_status"),
        next_attempt_at=bindparam("b_next"),
        updated_at=bindparam("b_updated"),
        last_error=bindparam("b_error"),
        result=bindparam("b_result"),
        applied_at=bindparam("b_applied"),
    )
)


class SqlOutbox:
    def __init__(self, reader: Connection) -> None:
        self.reader = reader
        self.added: dict[str, Send] = {}
        self.changed: dict[str, tuple[Send, SendStatus]] = {}  # the row, and the status it was read in
        self.notes: list[Attempt] = []
        self._read: dict[str, Send | None] = {}
        self._whole: set[str] = set()  # runs whose every row is in _read (prefetch_runs)

    def add(self, send: Send) -> bool:
        if send.run_id in self._whole and send.key not in self.added and send.key not in self.changed:
            exists = self._read.get(send.key) is not None  # its run's rows were all read: no query
        else:
            exists = self.get(send.key) is not None
        if exists:
            return False
        self.added[send.key] = send
        return True

    def get(self, key: str) -> Send | None:
        if key in self.added:
            return self.added[key]
        if key in self.changed:
            return self.changed[key][0]
        if key not in self._read:
            row = self.reader.execute(_GET, {"key": key}).mappings().first()
            self._read[key] = send_from_row(row) if row else None
        return self._read[key]

    def put(self, send: Send) -> None:
        if send.key in self.added:
            self.added[send.key] = send
            return
        was = self.changed[send.key][1] if send.key in self.changed else self._read_status(send.key)
        self.changed[send.key] = (send, was)

    def _read_status(self, key: str) -> SendStatus:
        found = self.get(key)
        assert found is not None, f"outbox row {key} was never read"
        return found.status

    def prefetch_runs(self, run_ids: Collection[str]) -> None:
        """Every row of these runs in one query (a unit's outcomes, and what a run that ends
        cancels), instead of one query per outcome and one per ending run."""
        wanted = sorted({r for r in run_ids if r not in self._whole})
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            for row in self.reader.execute(select(outbox).where(outbox.c.run_id.in_(part))).mappings():
                self._read.setdefault(row["key"], send_from_row(row))
            self._whole.update(part)

    def cancel_unsent(self, run_id: str, reason: str, now: datetime) -> list[str]:
        if run_id not in self._whole:
            query = select(outbox).where(outbox.c.run_id == run_id, outbox.c.status.in_([s.value for s in UNSENT]))
            for row in self.reader.execute(query).mappings():
                self._read.setdefault(row["key"], send_from_row(row))
        seen = [*self.added.values(), *(c[0] for c in self.changed.values()), *self._read.values()]
        keys = sorted({s.key for s in seen if s is not None and s.run_id == run_id})
        cancelled = []
        for key in keys:
            current = self.get(key)
            if current is not None and current.status in UNSENT:
                self.put(current.evolve(status=SendStatus.CANCELLED, last_error=reason, updated_at=now))
                cancelled.append(key)
        return cancelled

    def note(self, attempt: Attempt) -> None:
        self.notes.append(attempt)

    def flush(self, conn: Connection) -> None:
        insert_many_ignore(conn, outbox, [send_row(s) for s in self.added.values()])
        if self.changed:
            conn.execute(_PUT, [_put_params(send, was) for send, was in self.changed.values()])
        if self.notes:
            conn.execute(attempts.insert(), [attempt_row(a) for a in self.notes])


def _put_params(send: Send, was: SendStatus) -> dict[str, Any]:
    return {
        "b_key": send.key,
        "b_was": was.value,
        "b_status": send.status.value,
        "b_next": codec.utc(send.next_attempt_at),
        "b_updated": codec.utc(send.updated_at),
        "b_error": send.last_error or None,
        "b_result": codec.dumps(send.result) if send.result is not None else None,
        "b_applied": codec.utc(send.updated_at) if send.applied else None,
    }


def send_row(send: Send) -> dict[str, Any]:
    return {
        "key": send.key,
        "run_id": send.run_id,
        "part": send.part,
        "action": send.action,
        "step": send.step,
        "params": codec.dumps(send.params),
        "status": send.status.value,
        "customer_key": send.customer_key,
        "channel": send.channel,
        "category": send.category,
        "on_error": send.on_error,
        "attempts": send.attempts,
        "max_attempts": send.max_attempts,
        "backoff_s": send.backoff_s,
        "max_backoff_s": send.max_backoff_s,
        "timeout_s": send.timeout_s,
        "next_attempt_at": codec.utc(send.next_attempt_at),
        "created_at": codec.utc(send.created_at),
        "updated_at": codec.utc(send.updated_at),
        "last_error": send.last_error or None,
        "result": codec.dumps(send.result) if send.result is not None else None,
        "applied_at": codec.utc(send.updated_at) if send.applied else None,
        "claimed_by": send.claimed_by,
    }


def send_from_row(row: Any) -> Send:
    return Send(
        key=row["key"],
        run_id=row["run_id"],
        part=int(row["part"]),
        action=row["action"],
        step=row["step"],
        params=codec.loads(row["params"]),
        status=SendStatus(row["status"]),
        customer_key=row["customer_key"],
        channel=row["channel"],
        category=row["category"],
        on_error=row["on_error"],
        max_attempts=int(row["max_attempts"]),
        backoff_s=float(row["backoff_s"]),
        max_backoff_s=float(row["max_backoff_s"]),
        timeout_s=float(row["timeout_s"]),
        next_attempt_at=codec._aware(row["next_attempt_at"]),
        created_at=codec._aware(row["created_at"]),
        updated_at=codec._aware(row["updated_at"]),
        attempts=int(row["attempts"]),
        last_error=row["last_error"] or "",
        result=codec.loads(row["result"]) if row["result"] else None,
        applied=row["applied_at"] is not None,
        claimed_by=row["claimed_by"],
    )


def attempt_row(attempt: Attempt) -> dict[str, Any]:
    return {"key": attempt.key, "at": codec.utc(attempt.at), "outcome": attempt.outcome, "detail": attempt.detail}
