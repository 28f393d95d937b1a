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

from flowrun.attribution.records import FIGURES

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
Index("inbox_age", inbox.c.status, inbox.c.received_at)  # retention: processed deliveries by age

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
    # retention (issue 17): state and trigger as zlib-compressed JSON; `state` is then "" and
    # `trigger_event` NULL (older rows keep their text, read as before)
    Column("state_z", LargeBinary),
    Column("trigger_z", LargeBinary),
)
Index("runs_wake", runs.c.wake_at)
Index("runs_customer", runs.c.customer_key, runs.c.status)
Index("runs_key", runs.c.flow_id, runs.c.concurrency_key, runs.c.status)
Index("runs_flow_status", runs.c.flow_id, runs.c.status)
Index("runs_awaiting", runs.c.status, runs.c.awaiting)
Index("runs_finished", runs.c.status, runs.c.updated_at)  # retention: finished runs by age

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

# -- attribution: delivered messages by provider id, engagement events, attributed orders --------
messages = Table(
    "messages",
    metadata,
    Column("message_id", Text, primary_key=True),  # the provider's id, as the send's result gave it
    Column("send_key", Text, nullable=False),
    Column("run_id", String(40), nullable=False),
    Column("flow_id", String(100), nullable=False),
    Column("step", Text, nullable=False),  # the step's name, else its path
    Column("split", Text),
    Column("arm", Text),
    Column("channel", String(16), nullable=False),
    Column("customer_key", Text),
    Column("recipient", Text),
    Column("sent_at", TZ, nullable=False),
    Column("part", Integer, nullable=False, default=0),
    Column("delivered_at", TZ),
    Column("opened_at", TZ),
    Column("human_opened_at", TZ),
    Column("last_open_at", TZ),
    Column("last_human_open_at", TZ),
    Column("clicked_at", TZ),
    Column("last_click_at", TZ),
    Column("unsubscribed_at", TZ),
    Column("bounced_at", TZ),
    Column("complained_at", TZ),
    Column("converted_at", TZ),
    Column("touched_at", TZ, nullable=False),  # the latest touch of any kind
)
Index("messages_customer", messages.c.customer_key, messages.c.touched_at)
Index("messages_run", messages.c.run_id)
Index("messages_flow", messages.c.flow_id, messages.c.sent_at)

engagements = Table(
    "engagements",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("message_id", Text),
    Column("recipient", Text),
    Column("occurred_at", TZ, nullable=False),
    Column("machine", Integer, nullable=False, default=0),
    Column("send_key", Text),  # null: no send with this message id (yet)
)
Index("engagements_message", engagements.c.message_id)
Index("engagements_unmatched", engagements.c.send_key, engagements.c.occurred_at)

attributions = Table(
    "attributions",
    metadata,
    Column("order_key", Text, primary_key=True),  # source + order id: one attribution per order
    Column("order_id", Text, nullable=False),
    Column("customer_key", Text, nullable=False),
    Column("ordered_at", TZ, nullable=False),
    Column("amount", Text, nullable=False),  # exact decimal text
    Column("amount_micros", BigInteger, nullable=False),  # the same in millionths, for sums in SQL
    Column("currency", String(8), nullable=False),
    Column("message_id", Text, nullable=False),
    Column("run_id", String(40), nullable=False),
    Column("flow_id", String(100), nullable=False),
    Column("step", Text, nullable=False),
    Column("split", Text),
    Column("arm", Text),
    Column("channel", String(16), nullable=False),
    Column("touch", String(16), nullable=False),
    Column("touched_at", TZ, nullable=False),
)
Index("attributions_flow", attributions.c.flow_id, attributions.c.ordered_at)

# The report's counters, kept by the runtime as messages change (a report over a million
# messages reads these few rows): per flow, step, arm, channel and UTC day of sending; rows with
# a currency hold attributed orders and revenue (in millionths) by the day of the order.
figures = Table(
    "figures",
    metadata,
    Column("flow_id", String(100), primary_key=True),
    Column("step", Text, primary_key=True),
    Column("split", Text, primary_key=True),  # "" outside a split
    Column("arm", Text, primary_key=True),
    Column("channel", String(16), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD, UTC
    Column("currency", String(8), primary_key=True),  # "" on the message-count rows
    *(Column(name, BigInteger, nullable=False, default=0) for name in FIGURES),
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

refund_history = Table(  # v10: the refunds taken off order_history.total_e4, each once
    "refund_history",
    metadata,
    Column("refund_id", Text, primary_key=True),  # source:refund:id
    Column("order_id", Text, nullable=False),
    Column("amount_e4", BigInteger, nullable=False),
)
Index("order_history_customer", order_history.c.customer_key, order_history.c.at)

segment_members = Table(  # who is in which segment now (kept from each profile's segments)
    "segment_members",
    metadata,
    Column("segment", String(64), primary_key=True),
    Column("customer_key", Text, primary_key=True),
    Column("since", TZ, nullable=False),
)
