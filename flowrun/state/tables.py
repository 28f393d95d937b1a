"""The SQL schema and its versioned migrations (SQLAlchemy Core: one schema, SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable

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
    Column("status", String(16), nullable=False, default="pending"),  # pending | done | rejected
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
)


def _v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[inbox, runs, outbox, attempts, cursors])


MIGRATIONS: list[Callable[[Connection], None]] = [_v1]


def insert_ignore(conn: Connection, table: Table, values: dict[str, object]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True if the row was new."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT that SQLAlchemy extends
    # with RETURNING, so only a returned row proves the insert happened.
    key = next(iter(table.primary_key.columns))
    statement = dialect_insert(table).values(**values).on_conflict_do_nothing().returning(key)
    return conn.execute(statement).first() is not None


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

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
            # IMMEDIATE: a transaction that reads then writes holds the write lock from the
            # start, so two writers wait for each other instead of failing with "locked".
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


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
