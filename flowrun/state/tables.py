"""The SQL schema and its versioned migrations (SQLAlchemy Core: one schema, SQLite and PostgreSQL)."""

from __future__ import annotations

import fcntl
import functools
import mmap
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine

metadata = MetaData()
TZ = DateTime(timezone=True)

schema_version = Table("schema_version", metadata, Column("version", Integer, primary_key=True))

inbox = Table(
    "inbox",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("delivery_id", String(200), nullable=False),
    Column("topic", String(100)),
    Column("received_at", TZ, nullable=False),
    Column("triggered_at", String(64)),
    Column("body", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),  # pending, done, ignored, rejected, failed
    Column("error", Text),
    UniqueConstraint("source", "delivery_id", name="inbox_delivery"),
)
Index("inbox_pending", inbox.c.status, inbox.c.seq)

runs = Table(
    "runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("flow_id", String(100), nullable=False),
    Column("flow_version", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("customer_key", String(320)),
    Column("concurrency_key", String(320)),
    Column("started_at", TZ, nullable=False),
    Column("updated_at", TZ, nullable=False),
    Column("wake_at", TZ),
    Column("awaiting", String(200)),
    Column("state", Text, nullable=False),
    Column("trigger_event", Text),  # v5: written with the run; NULL for older runs (in `state`)
)
Index("runs_wake", runs.c.wake_at)
Index("runs_customer", runs.c.customer_key, runs.c.status)
Index("runs_key", runs.c.flow_id, runs.c.concurrency_key, runs.c.status)
Index("runs_flow_status", runs.c.flow_id, runs.c.status)

outbox = Table(
    "outbox",
    metadata,
    Column("key", String(300), primary_key=True),  # idempotency key: run + step
    Column("run_id", String(40), nullable=False),
    Column("action", String(40), nullable=False),
    Column("params", Text, nullable=False),
    # pending | sending -> done | failed (a result the worker has still to apply) -> applied; or parked
    Column("status", String(16), nullable=False),
    Column("on_error", String(16), nullable=False, default="fail"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("backoff_s", Integer, nullable=False),
    Column("max_backoff_s", Integer, nullable=False),
    Column("timeout_s", Integer, nullable=False),
    Column("next_attempt_at", TZ, nullable=False),
    Column("created_at", TZ, nullable=False),
    Column("updated_at", TZ, nullable=False),
    Column("last_error", Text),
    Column("result", Text),
)
Index("outbox_due", outbox.c.status, outbox.c.next_attempt_at)

attempts = Table(
    "attempts",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("key", String(300), nullable=False, index=True),
    Column("at", TZ, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text),
)

cursors = Table(
    "cursors",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("due_at", TZ),  # v2: set for checks that fire at a time
)


Index("cursors_due", cursors.c.due_at)
Index("runs_awaiting", runs.c.status, runs.c.awaiting)


def _v1(conn: Connection) -> None:
    # v1 as it shipped; indexes added later come from create_all too, so v2 says IF NOT EXISTS.
    metadata.create_all(conn, tables=[inbox, runs, outbox, attempts])
    v1_cursors = Table(
        "cursors",
        MetaData(),
        Column("name", String(200), primary_key=True),
        Column("value", Text, nullable=False),
    )
    v1_cursors.create(conn)


def _v2(conn: Connection) -> None:
    """Derived-event checks (abandonment, inactivity) get an indexed due time: the sweep
    asks for what is due instead of reading every pending check."""
    zone = " WITH TIME ZONE" if conn.dialect.name == "postgresql" else ""
    conn.execute(text(f"ALTER TABLE cursors ADD COLUMN due_at TIMESTAMP{zone}"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS cursors_due ON cursors (due_at)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS runs_awaiting ON runs (status, awaiting)"))
    from flowrun.state import codec

    old = conn.execute(text("SELECT name, value FROM cursors WHERE name LIKE 'abandon:%'")).all()
    for name, value in old:  # v1 kept {"due", "event"} in the value
        check = codec.loads(value)
        moved = {"value": codec.dumps(check["event"]), "due_at": check["due"]}
        conn.execute(cursors.update().where(cursors.c.name == name).values(**moved))


sends = Table(
    "sends",
    metadata,
    Column("key", String(300), primary_key=True),  # the outbox row: a retry is not a second send
    Column("customer_key", String(320), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("at", TZ, nullable=False),
)
Index("sends_recent", sends.c.customer_key, sends.c.channel, sends.c.at)

suppressions = Table(
    "suppressions",
    metadata,
    Column("customer_key", String(320), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("at", TZ, nullable=False),
)


def _v3(conn: Connection) -> None:
    """Guardrails: marketing sends per customer and channel (caps), and unsubscribed customers."""
    metadata.create_all(conn, tables=[sends, suppressions])


loyalty_ledger = Table(
    "loyalty_ledger",
    metadata,
    Column("key", String(300), primary_key=True),  # the action (run + step): applied once
    Column("customer_key", String(320), nullable=False),
    Column("points", Integer, nullable=False),
    Column("balance", Integer, nullable=False),  # after this change
    Column("reason", Text, nullable=False),
    Column("run_id", String(40), nullable=False),
    Column("at", TZ, nullable=False),
)
Index("loyalty_by_customer", loyalty_ledger.c.customer_key, loyalty_ledger.c.at)

loyalty_balances = Table(
    "loyalty_balances",
    metadata,
    Column("customer_key", String(320), primary_key=True),
    Column("balance", Integer, nullable=False),
    Column("updated_at", TZ, nullable=False),
)


def _v4(conn: Connection) -> None:
    """The loyalty ledger: every change with its reason and run, and a balance per customer."""
    metadata.create_all(conn, tables=[loyalty_ledger, loyalty_balances])


def _v5(conn: Connection) -> None:
    """A run's trigger event in its own column: it never changes, so a transition reuses the
    JSON written when the run started instead of encoding the whole event again."""
    from sqlalchemy import inspect

    if "trigger_event" not in {c["name"] for c in inspect(conn).get_columns("runs")}:  # v1 creates it now
        conn.execute(text("ALTER TABLE runs ADD COLUMN trigger_event TEXT"))


MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3, _v4, _v5]


def _dialect_insert(dialect: str, table: Table) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    return dialect_insert(table)


# Statements are built once and executed with parameters: building one per call (`.values(**row)`)
# cost more than running it, and a constant statement keeps SQLAlchemy's compiled cache warm.
@functools.cache
def _insert_ignore_statement(dialect: str, table: Table) -> Any:
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT that SQLAlchemy extends
    # with RETURNING, so only a returned row proves the insert happened.
    key = next(iter(table.primary_key.columns))
    return _dialect_insert(dialect, table).on_conflict_do_nothing().returning(key)


@functools.cache
def _upsert_statement(dialect: str, table: Table) -> Any:
    statement = _dialect_insert(dialect, table)
    keys = [c.name for c in table.primary_key.columns]
    changes = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys}
    return statement.on_conflict_do_update(index_elements=keys, set_=changes)


@functools.cache
def _insert_many_ignore_statement(dialect: str, table: Table) -> Any:
    return _dialect_insert(dialect, table).on_conflict_do_nothing()


def insert_many_ignore(conn: Connection, table: Table, rows: list[dict[str, object]]) -> None:
    """Many rows in one executemany; rows whose key exists are left alone."""
    conn.execute(_insert_many_ignore_statement(conn.dialect.name, table), rows)


def upsert_many(conn: Connection, table: Table, rows: list[dict[str, object]]) -> None:
    conn.execute(_upsert_statement(conn.dialect.name, table), rows)


def insert_ignore(conn: Connection, table: Table, values: dict[str, object]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True if the row was new."""
    return conn.execute(_insert_ignore_statement(conn.dialect.name, table), values).first() is not None


def upsert(conn: Connection, table: Table, values: dict[str, object]) -> None:
    """INSERT, or UPDATE every other column of the row with the same primary key."""
    conn.execute(_upsert_statement(conn.dialect.name, table), values)


URGENT = threading.local()  # a thread that sets URGENT.writes = True goes first (the inbox writer)


def _serialised_connection(path: str | None) -> type[sqlite3.Connection]:
    """SQLite has one writer. Writers queue for it on locks taken at BEGIN and handed over
    the moment COMMIT or ROLLBACK returns: waiting in SQLite's busy handler instead sleeps in
    growing steps (up to 100 ms) and collapsed ingest under load.

    Within a process, threads queue on a Python lock, and a waiting urgent thread (the
    webhook inbox writer) goes before the others, whose batches would otherwise take the
    lock back before a waiting webhook got its turn. Between processes (serve's webhook port
    and its engine, the CLI) the holder also takes an flock on `<database>.lock`, which the
    kernel hands to a waiter as soon as it is released.

    An urgent writer also raises a flag in the lock file's first byte while it waits, so a
    holder in another process can see it (`urgent_waiting`) and end its batch early."""
    writer = threading.Lock()
    turn = threading.Condition()
    urgent = [0]
    lock_file: list[int] = []
    flag: list[mmap.mmap] = []

    def opened() -> int:
        if not lock_file:
            fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if os.fstat(fd).st_size < 1:
                os.pwrite(fd, b"\0", 0)
            flag.append(mmap.mmap(fd, 1))
            lock_file.append(fd)
        return lock_file[0]

    def flock(operation: int) -> None:
        if path is not None:
            fcntl.flock(opened(), operation)

    def raise_flag(value: int) -> None:
        if path is not None:
            opened()
            flag[0][0] = value

    class Serialised(sqlite3.Connection):
        holds = False

        @staticmethod
        def urgent_waiting() -> bool:
            """An urgent writer (a webhook's commit) waits for the lock, in this process or another."""
            return urgent[0] > 0 or (path is not None and bool(opened() and flag[0][0]))

        def take_writer_lock(self) -> None:
            is_urgent = bool(getattr(URGENT, "writes", False))
            if is_urgent:
                with turn:
                    urgent[0] += 1
                try:
                    writer.acquire()
                finally:
                    with turn:
                        urgent[0] -= 1
            else:
                with turn:
                    turn.wait_for(lambda: urgent[0] == 0, timeout=0.25)
                writer.acquire()
            try:
                if is_urgent:
                    raise_flag(1)
                try:
                    flock(fcntl.LOCK_EX)
                finally:
                    if is_urgent:
                        raise_flag(0)
            except BaseException:
                writer.release()
                raise
            self.holds = True

        def try_writer_lock(self) -> bool:
            """The writer locks if both are free this instant (for a caller that must not wait)."""
            if not writer.acquire(blocking=False):
                return False
            try:
                if path is not None:
                    fcntl.flock(opened(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                writer.release()
                return False
            self.holds = True
            return True

        def begin_immediate(self) -> None:
            """Take the writer locks, then BEGIN IMMEDIATE: a transaction that reads then
            writes holds SQLite's write lock from the start, so two writers wait for each
            other instead of one failing with "locked"."""
            self.take_writer_lock()
            try:
                self.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.drop_writer_lock()
                raise

        def drop_writer_lock(self) -> None:
            if self.holds:
                self.holds = False
                try:
                    flock(fcntl.LOCK_UN)
                finally:
                    writer.release()
                with turn:
                    turn.notify_all()

        def commit(self) -> None:
            try:
                super().commit()
            finally:
                self.drop_writer_lock()

        def rollback(self) -> None:
            try:
                super().rollback()
            finally:
                self.drop_writer_lock()

    return Serialised


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={
                "timeout": 30,
                "check_same_thread": False,
                "factory": _serialised_connection(path if path and path != ":memory:" else None),
            },
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (below)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged webhook survives power loss too
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):  # type: ignore[no-untyped-def]
            if conn.get_execution_options().get("flowrun_read_only"):
                conn.exec_driver_sql("BEGIN")  # WAL: a reader sees a snapshot and waits for nobody
                return
            conn.connection.dbapi_connection.begin_immediate()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def urgent_waiting(conn: Connection) -> Callable[[], bool]:
    """For a long writer: whether a webhook's commit is waiting for the write lock (always
    False off SQLite, where writers do not queue on one lock)."""
    dbapi = conn.connection.dbapi_connection
    return getattr(dbapi, "urgent_waiting", lambda: False)  # type: ignore[no-any-return]


def reading(engine: Engine) -> Connection:
    """A connection for reads only: on SQLite it begins a plain (deferred) transaction, a WAL
    snapshot that neither takes nor waits for the write lock, where every other transaction
    begins IMMEDIATE. Writing through it fails; use `engine.begin()` for that."""
    return engine.connect().execution_options(flowrun_read_only=True)


def migrate(engine: Engine) -> int:
    """Bring the schema to the newest version; returns it. Safe to call at every start."""
    with engine.begin() as conn:
        schema_version.create(conn, checkfirst=True)
        if engine.dialect.name == "postgresql":
            conn.execute(text("LOCK TABLE schema_version IN EXCLUSIVE MODE"))
        current = conn.execute(select(schema_version.c.version).order_by(schema_version.c.version.desc())).scalar()
        current = current or 0
        for version, step in enumerate(MIGRATIONS[current:], start=current + 1):
            step(conn)
            conn.execute(insert(schema_version).values(version=version))
        return len(MIGRATIONS)
