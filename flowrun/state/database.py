"""Engines for SQLite and PostgreSQL, read-only snapshots, and the dialect-specific statements
(INSERT … ON CONFLICT) every repository uses."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from sqlalchemy import Table, create_engine, event
from sqlalchemy.engine import Connection, Engine

from flowrun.state.sqlite_writer import LockLike, connection_class

WRITE_TIMEOUT_S = 30.0  # the longest a writer waits for SQLite's lock before its transaction fails


def make_engine(url: str, writer_lock: LockLike | None = None, write_timeout_s: float = WRITE_TIMEOUT_S) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite(url, writer_lock, write_timeout_s)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def sqlite_path(url: str) -> Path | None:
    path = url.removeprefix("sqlite:///")
    return Path(path) if path and path != ":memory:" and url.startswith("sqlite") else None


def _sqlite(url: str, lock: LockLike | None, timeout_s: float) -> Engine:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={
            "timeout": timeout_s,
            "check_same_thread": False,
            "factory": connection_class(lock, timeout_s),
        },
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # BEGIN is ours (below)
        cursor = dbapi_connection.cursor()
        # retention: a new database gives pages back to the file system after a prune
        # (flowrun.state.prune.vacuum); an existing file is left as it is
        if cursor.execute("PRAGMA page_count").fetchone()[0] == 0:
            cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged webhook survives power loss too
        cursor.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        if conn.get_execution_options().get("flowrun_read_only"):
            conn.exec_driver_sql("BEGIN")  # WAL: a reader sees a snapshot and waits for nobody
            return
        conn.connection.dbapi_connection.begin_immediate()

    return engine


def reading(engine: Engine) -> Connection:
    """A connection for reads only: on SQLite a plain (deferred) transaction, a WAL snapshot
    that neither takes nor waits for the write lock. Writing through it fails."""
    return engine.connect().execution_options(flowrun_read_only=True)


def _dialect_insert(dialect: str, table: Table) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    return dialect_insert(table)


# Statements are built once and executed with parameters: building one per call cost more than
# running it, and a constant statement keeps SQLAlchemy's compiled cache warm.
@functools.cache
def _insert_ignore(dialect: str, table: Table, returning: bool) -> Any:
    statement = _dialect_insert(dialect, table).on_conflict_do_nothing()
    # RETURNING, not rowcount: psycopg reports -1 for such an INSERT, so only a returned row
    # proves it happened.
    return statement.returning(next(iter(table.primary_key.columns))) if returning else statement


@functools.cache
def _upsert(dialect: str, table: Table) -> Any:
    statement = _dialect_insert(dialect, table)
    keys = [c.name for c in table.primary_key.columns]
    changes = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys}
    return statement.on_conflict_do_update(index_elements=keys, set_=changes)


def insert_ignore(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING; True if the row was new."""
    return conn.execute(_insert_ignore(conn.dialect.name, table, True), values).first() is not None


def insert_many_ignore(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(_insert_ignore(conn.dialect.name, table, False), rows)


def upsert_many(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT, or UPDATE every other column of the row with the same primary key."""
    if rows:
        conn.execute(_upsert(conn.dialect.name, table), rows)
