"""Versioned migrations. A new database gets the newest schema at once; an older one is brought
forward one version at a time, each step in the same transaction as its version stamp."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Table, insert, inspect, select, text
from sqlalchemy.engine import Connection, Engine

from flowrun.state import codec
from flowrun.state.schema import (
    attributions,
    engagements,
    figures,
    instances,
    loyalty_balances,
    loyalty_ledger,
    messages,
    metadata,
    order_history,
    partitions,
    profiles,
    prunes,
    refund_history,
    runs,
    schema_version,
    segment_members,
    sends,
    suppressions,
)


def _v2(conn: Connection) -> None:
    """Derived-event checks get an indexed due time."""
    zone = " WITH TIME ZONE" if conn.dialect.name == "postgresql" else ""
    conn.execute(text(f"ALTER TABLE cursors ADD COLUMN due_at TIMESTAMP{zone}"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS cursors_due ON cursors (due_at)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS runs_awaiting ON runs (status, awaiting)"))
    old = conn.execute(text("SELECT name, value FROM cursors WHERE name LIKE 'abandon:%'")).all()
    for name, value in old:  # v1 kept {"due", "event"} in the value
        check = codec.loads(value)
        moved = {"value": codec.dumps(check["event"]), "due_at": check["due"]}
        conn.execute(
            text("UPDATE cursors SET value = :value, due_at = :due_at WHERE name = :name"), {**moved, "name": name}
        )


def _v3(conn: Connection) -> None:
    """Guardrails: marketing sends per customer and channel (caps), and unsubscribed customers."""
    metadata.create_all(conn, tables=[sends, suppressions])


def _v4(conn: Connection) -> None:
    """The loyalty ledger."""
    metadata.create_all(conn, tables=[loyalty_ledger, loyalty_balances])


def _v5(conn: Connection) -> None:
    """A run's trigger event in its own column, encoded once."""
    if "trigger_event" not in _columns(conn, "runs"):
        conn.execute(text("ALTER TABLE runs ADD COLUMN trigger_event TEXT"))


def _v6(conn: Connection) -> None:
    """One runtime: partitions on every row that moves with a customer, outbox rows that carry
    their guardrail inputs and whether the run took their outcome, instances and leases."""
    from flowrun.state import upgrade_v6

    upgrade_v6.run(conn)
    metadata.create_all(conn, tables=[instances, partitions, prunes])
    seed_partitions(conn)


def _v7_retention(conn: Connection) -> None:
    """Retention: compressed run state and trigger columns, indexes to find old rows by age."""
    add_missing_columns(conn, runs)
    conn.execute(text("CREATE INDEX IF NOT EXISTS runs_finished ON runs (status, updated_at)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS inbox_age ON inbox (status, received_at)"))


def _v8_attribution(conn: Connection) -> None:
    """Attribution: delivered messages by provider id, engagement events, attributed orders, counters."""
    metadata.create_all(conn, tables=[messages, engagements, attributions, figures])


def _v9_memory(conn: Connection) -> None:
    """Customer memory: profiles, the order history, segment members."""
    metadata.create_all(conn, tables=[profiles, order_history, segment_members])


def _v10_refunds(conn: Connection) -> None:
    """Refunds lower the order history's totals (and spend), once per refund id."""
    metadata.create_all(conn, tables=[refund_history])


MIGRATIONS: list[Callable[[Connection], None]] = [
    _v2,
    _v3,
    _v4,
    _v5,
    _v6,
    _v7_retention,
    _v8_attribution,
    _v9_memory,
    _v10_refunds,
]
NEWEST = len(MIGRATIONS) + 1
MIGRATION_LOCK = 0x6D696772  # "migr": an advisory lock key apart from the leader's


def seed_partitions(conn: Connection) -> None:
    from flowrun.runtime.records import PARTITIONS

    have = {row[0] for row in conn.execute(select(partitions.c.part))}
    missing = [{"part": p} for p in range(PARTITIONS) if p not in have]
    if missing:
        conn.execute(insert(partitions), missing)


def version_of(conn: Connection) -> int:
    """The schema version of this database (0: none yet)."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    found = conn.execute(select(schema_version.c.version).order_by(schema_version.c.version.desc())).scalar()
    return int(found or 0)


def migrate(engine: Engine) -> int:
    """Bring the schema to the newest version; returns it. Safe to call at every start, and
    from several instances at once on PostgreSQL: they queue on a transaction-scoped advisory
    lock taken before anything is created (two CREATE TABLEs racing collide in pg_type)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        schema_version.create(conn, checkfirst=True)
        current = version_of(conn)
        if current == 0:
            metadata.create_all(conn)
            seed_partitions(conn)
            conn.execute(insert(schema_version), [{"version": v} for v in range(1, NEWEST + 1)])
            return NEWEST
        for version, step in enumerate(MIGRATIONS[current - 1 :], start=current + 1):
            step(conn)
            conn.execute(insert(schema_version).values(version=version))
        return NEWEST


def _columns(conn: Connection, table: str) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns(table)}


def add_missing_columns(conn: Connection, table: Table) -> None:
    """ALTER TABLE ADD COLUMN for each column of `table` the database lacks (with its default)."""
    have = _columns(conn, table.name)
    for column in table.columns:
        if column.name in have:
            continue
        kind = column.type.compile(dialect=conn.dialect)
        default = column.default.arg if column.default is not None else None  # type: ignore[attr-defined]
        suffix = f" NOT NULL DEFAULT {_literal(default)}" if default is not None and not column.nullable else ""
        conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}{suffix}"))


def _literal(value: object) -> str:
    return str(value) if isinstance(value, (int, float)) else "'" + str(value).replace("'", "''") + "'"
