"""The run store over SQL, plus the inbox, outbox and cursor operations serve needs.

Every method works inside the caller's transaction (a Connection from `engine.begin()`),
so one event's run transitions, timers and outbox rows commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from flowrun.engine.state import FINAL, Perform, RunState, Status
from flowrun.state import codec
from flowrun.state.tables import (
    attempts,
    cursors,
    inbox,
    insert_ignore,
    insert_many_ignore,
    outbox,
    runs,
    sends,
    suppressions,
    upsert,
    upsert_many,
)

ACTIVE = [s.value for s in Status if s not in FINAL]
_GET_RUN = select(runs).where(runs.c.id == bindparam("id"))
_GET_CURSOR = select(cursors.c.value).where(cursors.c.name == bindparam("name"))
_DELETE_CURSOR = delete(cursors).where(cursors.c.name == bindparam("name"))
_DELETE_CURSORS = delete(cursors).where(cursors.c.name >= bindparam("low"), cursors.c.name < bindparam("high"))
_RECORD_ATTEMPT = insert(attempts)
_APPLY_RESULT = (
    update(outbox)
    .where(outbox.c.key == bindparam("b_key"))
    .values(
        status="applied",
        updated_at=bindparam("b_now"),
        attempts=outbox.c.attempts + 1,
        result=bindparam("b_result"),
    )
)
_MARK_INBOX = update(inbox).where(inbox.c.seq == bindparam("b_seq"))
_CURSOR_WRITES = {"delete": _DELETE_CURSOR, "clear": _DELETE_CURSORS}


class SqlStore:
    """RunStore over one open transaction.

    With `batched=True` (the worker's batches) run saves and outbox rows are held and written
    by `flush()` as one executemany each; every query that could see them flushes first, and
    the worker flushes before it commits. Runs read or written are kept for the transaction,
    and `prefetch` reads many in one query (due timers)."""

    def __init__(
        self, conn: Connection, *, batched: bool = False, known: MutableMapping[str, RunState] | None = None
    ) -> None:
        self.conn = conn
        self.batched = batched
        self._known = known if known is not None else {}  # runs as committed, kept by the caller
        self._sqlite = conn.dialect.name == "sqlite"
        self._runs: dict[str, RunState] = {}
        self._dirty: dict[str, dict[str, object]] = {}
        self._outbox: list[dict[str, object]] = []
        self._applied: list[dict[str, object]] = []
        self._marks: list[dict[str, Any]] = []
        self._held: dict[str, list[dict[str, Any]]] = {}  # cursor writes by kind: upsert, delete, clear
        self._touched: dict[str, str] = {}  # cursor name -> the kind of write held for it
        self._cleared: list[str] = []  # prefixes of held clears

    def flush(self) -> None:
        self._flush_small()
        if self._dirty:
            upsert_many(self.conn, runs, list(self._dirty.values()))
            self._dirty.clear()
        if self._outbox:
            insert_many_ignore(self.conn, outbox, self._outbox)
            self._outbox = []
        if self._applied:
            self.conn.execute(_APPLY_RESULT, self._applied)
            ok = [{"key": a["b_key"], "at": a["b_now"], "outcome": "ok", "detail": ""} for a in self._applied]
            self.conn.execute(_RECORD_ATTEMPT, ok)
            self._applied = []

    def _flush_small(self) -> None:
        """Inbox marks and cursor writes as one executemany per kind. Cursor writes only
        change order across kinds when they touch different names (`_write` flushes first
        when a new write would meet a held one), so the result is the order they were made in."""
        marks, self._marks = self._marks, []
        if marks:
            self.conn.execute(_MARK_INBOX, marks)
        held, self._held = self._held, {}
        self._touched, self._cleared = {}, []
        for kind, params in held.items():
            if kind == "upsert":
                upsert_many(self.conn, cursors, params)
            else:
                self.conn.execute(_CURSOR_WRITES[kind], params)

    def _write(self, kind: str, params: dict[str, Any]) -> None:
        if not self.batched:
            if kind == "upsert":
                upsert(self.conn, cursors, params)
            else:
                self.conn.execute(_CURSOR_WRITES[kind], params)
            return
        if kind == "clear":
            prefix = params["low"]
            if any(name.startswith(prefix) for name in self._touched):
                self._flush_small()
            self._cleared.append(prefix)
        else:
            name = params["name"]
            if self._touched.get(name, kind) != kind or any(name.startswith(p) for p in self._cleared):
                self._flush_small()
            self._touched[name] = kind
        self._held.setdefault(kind, []).append(params)

    def prefetch(self, run_ids: Sequence[str]) -> None:
        wanted = [r for r in run_ids if r not in self._runs and r not in self._known]
        for start in range(0, len(wanted), 500):
            query = select(runs).where(runs.c.id.in_(wanted[start : start + 500]))
            for row in self.conn.execute(query).mappings():
                self._runs[row["id"]] = codec.run_from_row(row)

    def get(self, run_id: str) -> RunState | None:
        cached = self._runs.get(run_id) or self._known.get(run_id)
        if cached is not None:
            return cached
        if self._sqlite and not self._exists_sqlite(run_id):  # most asks are "is this run new?"
            return None
        row = self.conn.execute(_GET_RUN, {"id": run_id}).mappings().first()
        if row is None:
            return None
        run = codec.run_from_row(row)
        if self.batched:
            self._runs[run_id] = run
        return run

    def _exists_sqlite(self, run_id: str) -> bool:
        """On the driver's cursor: a twentieth of a Core query's cost. The same connection,
        so it sees this transaction's own writes (held ones are in `_runs`, asked first)."""
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            return cursor.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None
        finally:
            cursor.close()

    def settled(self) -> dict[str, RunState]:
        """Every run this transaction read or wrote, as it stands at the end (for the caller
        to keep in `known` once the transaction has committed)."""
        return self._runs

    def save(self, run: RunState) -> None:
        self._known.pop(run.id, None)  # kept again only once this transaction commits
        values = _run_row(run)
        if self.batched:
            self._runs[run.id] = run
            self._dirty[run.id] = values
        else:
            upsert(self.conn, runs, values)

    def _active(self, *conditions: Any) -> list[RunState]:
        self.flush()
        query = select(runs).where(runs.c.status.in_(ACTIVE), *conditions).order_by(runs.c.started_at, runs.c.id)
        return [codec.run_from_row(r) for r in self.conn.execute(query).mappings()]

    def active_for_customer(self, customer_key: str, flow_ids: Collection[str]) -> list[RunState]:
        return self._active(runs.c.customer_key == customer_key, runs.c.flow_id.in_(sorted(flow_ids)))

    def active_for_key(self, flow_id: str, concurrency_key: str) -> list[RunState]:
        return self._active(runs.c.flow_id == flow_id, runs.c.concurrency_key == concurrency_key)

    def last_started(self, flow_id: str, customer_key: str) -> RunState | None:
        query = (
            select(runs)
            .where(
                runs.c.flow_id == flow_id, runs.c.customer_key == customer_key, runs.c.status != Status.SKIPPED.value
            )
            .order_by(runs.c.started_at.desc())
            .limit(1)
        )
        self.flush()
        row = self.conn.execute(query).mappings().first()
        return codec.run_from_row(row) if row else None

    def awaiting(self, event_type: str) -> list[RunState]:
        pattern = f"%{event_type}%"
        found = self._active(runs.c.status == Status.AWAITING.value, runs.c.awaiting.like(pattern))
        return [r for r in found if event_type in r.awaiting]

    # -- timers --------------------------------------------------------------------------

    def due_timers(self, now: datetime, limit: int) -> list[tuple[str, datetime]]:
        self.flush()
        query = select(runs.c.id, runs.c.wake_at).where(runs.c.wake_at <= now).order_by(runs.c.wake_at).limit(limit)
        return [(r.id, codec._aware(r.wake_at)) for r in self.conn.execute(query)]

    def next_wake(self) -> datetime | None:
        self.flush()
        value = self.conn.execute(select(func.min(runs.c.wake_at))).scalar()
        return codec._aware(value) if value else None

    # -- outbox --------------------------------------------------------------------------

    def enqueue(self, command: Perform, now: datetime, attempts_default: int) -> None:
        retry = command.retry
        # A step asked twice (a replayed transition) keeps its one row: one send.
        row: dict[str, object] = dict(
            key=command.key,
            run_id=command.run_id,
            action=command.action,
            on_error=command.on_error,
            params=codec.dumps(command.params),
            status="pending",
            attempts=0,
            max_attempts=retry.attempts or attempts_default,
            backoff_s=int(retry.backoff.total_seconds()),
            max_backoff_s=int(retry.max_backoff.total_seconds()),
            timeout_s=int(command.timeout_s),
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        if self.batched:
            self._outbox.append(row)
        else:
            insert_ignore(self.conn, outbox, row)

    def claim_due(self, now: datetime, limit: int, margin: timedelta) -> list[dict[str, Any]]:
        """Take due rows; `sending` rows whose lease ran out (a crash mid-send) come back.
        A row's lease is its own timeout plus `margin`, so a slow send is never re-sent while in flight."""
        self.flush()
        due = or_(
            and_(outbox.c.status == "pending", outbox.c.next_attempt_at <= now),
            and_(outbox.c.status == "sending", outbox.c.next_attempt_at <= now),
        )
        rows = [
            dict(r)
            for r in self.conn.execute(
                select(outbox).where(due).order_by(outbox.c.next_attempt_at).limit(limit)
            ).mappings()
        ]
        by_timeout: dict[int, list[str]] = {}
        for row in rows:
            by_timeout.setdefault(row["timeout_s"], []).append(row["key"])
            row["params"] = codec.loads(row["params"])
        for timeout_s, keys in by_timeout.items():
            lease = now + timedelta(seconds=timeout_s) + margin
            claim = update(outbox).where(outbox.c.key.in_(keys))
            self.conn.execute(claim.values(status="sending", next_attempt_at=lease, updated_at=now))
        return rows

    def record_attempt(self, key: str, now: datetime, outcome: str, detail: str) -> None:
        self.conn.execute(_RECORD_ATTEMPT, {"key": key, "at": now, "outcome": outcome, "detail": detail})

    def finish_action(
        self,
        key: str,
        now: datetime,
        status: str,
        *,
        result: Any = None,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        self.flush()
        values: dict[str, Any] = {"status": status, "updated_at": now, "attempts": outbox.c.attempts + 1}
        if result is not None:
            values["result"] = codec.dumps(result)
        if error is not None:
            values["last_error"] = error
        if retry_at is not None:
            values["next_attempt_at"] = retry_at
        self.conn.execute(update(outbox).where(outbox.c.key == key).values(**values))

    def apply_result(self, key: str, now: datetime, result: dict[str, Any]) -> None:
        """A delivered action's answer: the row `applied`, its result kept, the attempt listed."""
        values = {"b_key": key, "b_now": now, "b_result": codec.dumps(result)}
        if self.batched:
            self._applied.append(values)
        else:
            self.conn.execute(_APPLY_RESULT, values)
            self.record_attempt(key, now, "ok", "")

    def results_to_apply(self, limit: int) -> list[dict[str, Any]]:
        """Actions finished (sent, or failed for good with on_error: continue) whose run has not moved on."""
        self.flush()
        query = (
            select(outbox.c.key, outbox.c.run_id, outbox.c.status, outbox.c.result, outbox.c.last_error)
            .where(outbox.c.status.in_(["done", "failed"]))
            .order_by(outbox.c.updated_at)
            .limit(limit)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def mark_applied(self, key: str) -> None:
        self.flush()
        self.conn.execute(update(outbox).where(outbox.c.key == key).values(status="applied"))

    def requeue(self, keys: Sequence[str] | None, now: datetime) -> int:
        self.flush()
        query = update(outbox).where(outbox.c.status == "parked")
        if keys:
            query = query.where(outbox.c.key.in_(keys))
        return self.conn.execute(
            query.values(status="pending", attempts=0, next_attempt_at=now, updated_at=now)
        ).rowcount

    # -- guardrails -------------------------------------------------------------------------

    def recent_sends(self, customer_key: str, channel: str, since: datetime) -> list[datetime]:
        query = select(sends.c.at).where(
            sends.c.customer_key == customer_key, sends.c.channel == channel, sends.c.at > since
        )
        return [codec._aware(at) for at in self.conn.execute(query).scalars()]

    def record_send(self, key: str, customer_key: str, channel: str, now: datetime) -> None:
        insert_ignore(self.conn, sends, {"key": key, "customer_key": customer_key, "channel": channel, "at": now})

    def is_suppressed(self, customer_key: str) -> bool:
        query = select(suppressions.c.customer_key).where(suppressions.c.customer_key == customer_key)
        return self.conn.execute(query).first() is not None

    def set_suppressed(self, customer_key: str, suppressed: bool, reason: str, now: datetime) -> None:
        if suppressed:
            upsert(self.conn, suppressions, {"customer_key": customer_key, "reason": reason, "at": now})
        else:
            self.conn.execute(delete(suppressions).where(suppressions.c.customer_key == customer_key))

    def defer(self, key: str, until: datetime, now: datetime) -> None:
        """Back to pending until `until`, without spending an attempt (quiet hours)."""
        self.flush()
        self.conn.execute(
            update(outbox)
            .where(outbox.c.key == key)
            .values(status="pending", next_attempt_at=_utc(until), updated_at=now)
        )

    # -- inbox ---------------------------------------------------------------------------

    def pending_inbox(self, limit: int) -> list[dict[str, Any]]:
        self._flush_small()
        query = select(inbox).where(inbox.c.status == "pending").order_by(inbox.c.seq).limit(limit)
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def last_inbox_seq(self) -> int:
        return int(self.conn.execute(select(func.max(inbox.c.seq))).scalar() or 0)

    def mark_inbox(self, seq: int, status: str, error: str | None = None) -> None:
        params = {"b_seq": seq, "status": status, "error": error}
        if self.batched:
            self._marks.append(params)
        else:
            self.conn.execute(_MARK_INBOX, params)

    # -- cursors -------------------------------------------------------------------------

    def get_cursor(self, name: str) -> Any:
        self._flush_small()
        value = self.conn.execute(_GET_CURSOR, {"name": name}).scalar()
        return codec.loads(value) if value is not None else None

    def set_cursor(self, name: str, value: Any, due: datetime | None = None) -> None:
        """Store (or with None, delete) a cursor; `due` makes it a check `due_cursors` returns."""
        if value is None:
            self._write("delete", {"name": name})
        else:
            self._write("upsert", {"name": name, "value": codec.dumps(value), "due_at": _utc(due)})

    def clear_cursors(self, prefix: str) -> None:
        """Delete every cursor whose name starts with `prefix` (a range on the primary key)."""
        self._write("clear", {"low": prefix, "high": prefix + "\U0010ffff"})

    def due_cursors(self, now: datetime, limit: int) -> list[tuple[str, Any, datetime]]:
        self._flush_small()
        query = (
            select(cursors.c.name, cursors.c.value, cursors.c.due_at)
            .where(cursors.c.due_at <= now)
            .order_by(cursors.c.due_at)
            .limit(limit)
        )
        return [(r.name, codec.loads(r.value), codec._aware(r.due_at)) for r in self.conn.execute(query)]


def _utc(value: datetime | None) -> datetime | None:
    """SQLite keeps a timestamp's wall time and drops its offset: store every one in UTC
    (a quiet-hours end in New York was read back five hours early)."""
    return value.astimezone(UTC) if value is not None else None


def insert_inbox_rows(conn: Connection, rows: Iterable[dict[str, Any]]) -> list[bool]:
    """Insert deliveries; False for one already stored (a replay). One transaction.

    One lookup for the batch, then one INSERT for the new rows. If another writer stored one
    of them in between (PostgreSQL, another process), the batch is done again row by row,
    each with ON CONFLICT DO NOTHING. SQLite holds its write lock from BEGIN IMMEDIATE, so
    nothing can come in between there."""
    batch = list(rows)
    if conn.dialect.name == "sqlite":
        return insert_inbox_rows_sqlite(conn.connection.dbapi_connection, conn.dialect, batch)
    stored: set[tuple[str, str]] = set()
    for source in {r["source"] for r in batch}:
        ids = sorted({r["delivery_id"] for r in batch if r["source"] == source})
        found = conn.execute(_STORED_DELIVERIES, {"source": source, "ids": ids}).scalars()
        stored.update((source, delivery) for delivery in found)
    fresh, new = _split_new(batch, stored)
    if new:
        try:
            with conn.begin_nested():
                conn.execute(insert(inbox), new)
        except IntegrityError:
            return [insert_ignore(conn, inbox, {"status": "pending", **row}) for row in batch]
    return fresh


def insert_inbox_rows_sqlite(dbapi: Any, dialect: Any, rows: list[dict[str, Any]]) -> list[bool]:
    """`insert_inbox_rows` on a raw sqlite3 connection, inside the caller's BEGIN IMMEDIATE.

    Two statements whatever the batch size: a lookup and one multi-row INSERT. An
    executemany steps once per row and releases the GIL at every step, so the webhook loop
    and the writer traded the GIL row by row (about 0.2 ms a row)."""
    stored: set[tuple[str, str]] = set()
    cursor = dbapi.cursor()
    try:
        for source in {r["source"] for r in rows}:
            ids = sorted({r["delivery_id"] for r in rows if r["source"] == source})
            for at in range(0, len(ids), 900):
                part = ids[at : at + 900]
                marks = ",".join("?" * len(part))
                query = f"SELECT delivery_id FROM inbox WHERE source = ? AND delivery_id IN ({marks})"
                cursor.execute(query, [source, *part])
                stored.update((source, d) for (d,) in cursor.fetchall())
        fresh, new = _split_new(rows, stored)
        processors = [inbox.c[name].type.bind_processor(dialect) for name in _INBOX_COLUMNS]
        row_marks = "(" + ",".join("?" * len(_INBOX_COLUMNS)) + ")"
        for start in range(0, len(new), _SQLITE_ROWS_PER_STATEMENT):
            part = new[start : start + _SQLITE_ROWS_PER_STATEMENT]
            params = [
                process(row.get(name)) if process else row.get(name)
                for row in part
                for name, process in zip(_INBOX_COLUMNS, processors, strict=True)
            ]
            values = ",".join([row_marks] * len(part))
            cursor.execute(f"INSERT INTO inbox ({', '.join(_INBOX_COLUMNS)}) VALUES {values}", params)
    finally:
        cursor.close()
    return fresh


def pend_set_aside(conn: Connection, pairs: Iterable[tuple[str, str]], since: int) -> int:
    """Rows set aside after inbox row `since` whose (source, topic) is read now: pending again."""
    moved = 0
    for source, topic in sorted(pairs):
        moved += conn.execute(
            update(inbox)
            .where(inbox.c.status == "ignored", inbox.c.seq > since, inbox.c.source == source, inbox.c.topic == topic)
            .values(status="pending")
        ).rowcount
    return moved


def _split_new(rows: list[dict[str, Any]], stored: set[tuple[str, str]]) -> tuple[list[bool], list[dict[str, Any]]]:
    """Which rows are new, and those rows ready to insert (a delivery twice in one batch: once)."""
    fresh, new = [], []
    for row in rows:
        key = (row["source"], row["delivery_id"])
        fresh.append(key not in stored)
        if key not in stored:
            stored.add(key)
            new.append({"status": "pending", **row})
    return fresh, new


_STORED_DELIVERIES = select(inbox.c.delivery_id).where(
    inbox.c.source == bindparam("source"), inbox.c.delivery_id.in_(bindparam("ids", expanding=True))
)
_INBOX_COLUMNS = ("source", "delivery_id", "topic", "received_at", "triggered_at", "body", "status")
_SQLITE_ROWS_PER_STATEMENT = 1000  # 7,000 parameters: inside SQLite's limit (32,766 since 3.32)


def _run_row(run: RunState) -> dict[str, object]:
    return {
        "id": run.id,
        "flow_id": run.flow_id,
        "flow_version": run.flow_version,
        "status": run.status.value,
        "customer_key": run.customer_key,
        "concurrency_key": run.concurrency_key,
        "started_at": run.started_at,
        "updated_at": run.updated_at,
        "wake_at": _utc(run.wake_at) if not run.status.final else None,
        "awaiting": ",".join(run.awaiting) if run.status is Status.AWAITING else None,
        "state": codec.run_to_json(run),
        "trigger_event": codec.trigger_to_json(run.trigger),
    }
