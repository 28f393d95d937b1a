"""The tables (SQLAlchemy Core: one schema for SQLite and PostgreSQL), as of the newest version.
How older databases get here is flowrun.state.migrations."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()
TZ = DateTime(timezone=True)
SEQ = BigInteger().with_variant(Integer, "sqlite")  # SQLite's rowid alias must be INTEGER

schema_version = Table("schema_version", metadata, Column("version", Integer, primary_key=True))

inbox = Table(
    "inbox",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("delivery_id", Text, nullable=False),
    Column("topic", Text),
    Column("received_at", TZ, nullable=False),
    Column("triggered_at", Text),
    Column("body", LargeBinary, nullable=False),
    # pending -> done | ignored (nothing reads its topic) | rejected (cannot become an event) | failed (a bug)
    Column("status", String(16), nullable=False, default="pending"),
    Column("error", Text),
    Column("part", Integer, nullable=False, default=0),  # v6: the customer's partition
    Column("facts", Text),  # v6: what the store's API said that the body lacks (flowrun.events.enrich)
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
    Column("customer_key", Text),
    Column("concurrency_key", Text),
    Column("started_at", TZ, nullable=False),
    Column("updated_at", TZ, nullable=False),
    Column("wake_at", TZ),
    Column("awaiting", Text),
    Column("state", Text, nullable=False),
    Column("trigger_event", Text),  # v5
    Column("part", Integer, nullable=False, default=0),  # v6
)
Index("runs_wake", runs.c.wake_at)
Index("runs_customer", runs.c.customer_key, runs.c.status)
Index("runs_key", runs.c.flow_id, runs.c.concurrency_key, runs.c.status)
Index("runs_flow_status", runs.c.flow_id, runs.c.status)
Index("runs_awaiting", runs.c.status, runs.c.awaiting)

outbox = Table(
    "outbox",
    metadata,
    Column("key", Text, primary_key=True),  # idempotency key: run + step
    Column("run_id", String(40), nullable=False),
    Column("action", String(40), nullable=False),
    Column("params", Text, nullable=False),
    Column("status", String(16), nullable=False),  # flowrun.runtime.records.SendStatus
    Column("on_error", String(16), nullable=False, default="fail"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("backoff_s", Float, nullable=False),
    Column("max_backoff_s", Float, nullable=False),
    Column("timeout_s", Float, nullable=False),
    Column("next_attempt_at", TZ, nullable=False),
    Column("created_at", TZ, nullable=False),
    Column("updated_at", TZ, nullable=False),
    Column("last_error", Text),
    Column("result", Text),
    # v6
    Column("part", Integer, nullable=False, default=0),
    Column("step", Text, nullable=False, default=""),
    Column("customer_key", Text),
    Column("channel", String(16)),
    Column("category", String(16), nullable=False, default="marketing"),
    Column("applied_at", TZ),  # the run took the outcome
    Column("claimed_by", String(100)),  # the dispatcher sending it
)
Index("outbox_due", outbox.c.status, outbox.c.next_attempt_at)
Index("outbox_run", outbox.c.run_id)
Index(
    "outbox_outcomes",
    outbox.c.updated_at,
    sqlite_where=outbox.c.applied_at.is_(None) & outbox.c.status.in_(["delivered", "failed"]),
    postgresql_where=outbox.c.applied_at.is_(None) & outbox.c.status.in_(["delivered", "failed"]),
)

attempts = Table(
    "attempts",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("key", Text, nullable=False, index=True),
    Column("at", TZ, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text),
)

cursors = Table(
    "cursors",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
    Column("due_at", TZ),  # v2: checks that fire at a time
    Column("part", Integer, nullable=False, default=0),  # v6
)
Index("cursors_due", cursors.c.due_at)

sends = Table(
    "sends",
    metadata,
    Column("key", Text, primary_key=True),  # the outbox row: a retry is not a second send
    Column("customer_key", Text, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("at", TZ, nullable=False),
)
Index("sends_recent", sends.c.customer_key, sends.c.channel, sends.c.at)

suppressions = Table(
    "suppressions",
    metadata,
    Column("customer_key", Text, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("at", TZ, nullable=False),
)

loyalty_ledger = Table(
    "loyalty_ledger",
    metadata,
    Column("key", Text, primary_key=True),  # the action (run + step): applied once
    Column("customer_key", Text, nullable=False),
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
    Column("customer_key", Text, primary_key=True),
    Column("balance", Integer, nullable=False),
    Column("updated_at", TZ, nullable=False),
)

entries = Table(  # v6: when a customer last entered a flow (re-entry rules outlive pruned runs)
    "entries",
    metadata,
    Column("flow_id", String(100), primary_key=True),
    Column("customer_key", Text, primary_key=True),
    Column("run_id", String(40), nullable=False),
    Column("started_at", TZ, nullable=False),
)

prunes = Table(  # v6: what retention removed, and up to when
    "prunes",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("at", TZ, nullable=False),
    Column("kind", String(32), nullable=False),  # runs | inbox | ignored | sends
    Column("before", TZ, nullable=False),  # everything of its kind older than this may be gone
    Column("rows", Integer, nullable=False),
)

instances = Table(  # v6: each serve process that takes work, with its heartbeat
    "instances",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("role", String(16), nullable=False),  # engine | dispatcher
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", TZ, nullable=False),
    Column("heartbeat_at", TZ, nullable=False),
)

partitions = Table(  # v6: who moves which customers' runs (PostgreSQL, several instances)
    "partitions",
    metadata,
    Column("part", Integer, primary_key=True),
    Column("owner", String(100)),
    Column("lease_until", TZ),
)

# -- customer memory (issue 16 items 1-2: profiles, order history, segments) ----------------
profiles = Table(
    "profiles",
    metadata,
    Column("customer_key", Text, primary_key=True),
    Column("value", Text, nullable=False),  # flowrun.profile.record.Profile, as flowrun.state.codec JSON
    Column("part", Integer, nullable=False, default=0),
    Column("updated_at", TZ, nullable=False),
)

order_history = Table(  # one row per order: what `orders.count(…)` / `orders.revenue(…)` read
    "order_history",
    metadata,
    Column("order_id", Text, primary_key=True),  # source:id
    Column("customer_key", Text),
    Column("at", TZ, nullable=False),  # when flowrun learnt of it (a backfill: the store's order time)
    Column("currency", String(8), nullable=False),
    Column("total_e4", BigInteger, nullable=False),  # the total in ten-thousandths: sums stay exact in SQL
    Column("products", Text, nullable=False),  # JSON list of line titles
)
Index("order_history_at", order_history.c.at)
Index("order_history_customer", order_history.c.customer_key, order_history.c.at)

segment_members = Table(  # who is in which segment now (kept from each profile's segments)
    "segment_members",
    metadata,
    Column("segment", String(64), primary_key=True),
    Column("customer_key", Text, primary_key=True),
    Column("since", TZ, nullable=False),
)
