"""The data half of migration v6: new columns filled in from what v5 kept."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from flowrun.state import codec
from flowrun.state.schema import cursors, inbox, outbox, runs

TEXT_COLUMNS = {  # PostgreSQL: values from stores have no natural length
    "inbox": ["delivery_id", "topic", "triggered_at"],
    "runs": ["customer_key", "concurrency_key", "awaiting"],
    "outbox": ["key"],
    "attempts": ["key"],
    "cursors": ["name"],
    "sends": ["key", "customer_key"],
    "suppressions": ["customer_key"],
    "loyalty_ledger": ["key", "customer_key"],
    "loyalty_balances": ["customer_key"],
}


def run(conn: Connection) -> None:
    from flowrun.state.migrations import add_missing_columns

    for table in (inbox, runs, outbox, cursors):
        add_missing_columns(conn, table)
    if conn.dialect.name == "postgresql":
        for name, columns in TEXT_COLUMNS.items():
            for column in columns:
                conn.execute(text(f"ALTER TABLE {name} ALTER COLUMN {column} TYPE TEXT"))
        for name in ("backoff_s", "max_backoff_s", "timeout_s"):
            conn.execute(text(f"ALTER TABLE outbox ALTER COLUMN {name} TYPE DOUBLE PRECISION"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS outbox_run ON outbox (run_id)"))
    where = "applied_at IS NULL AND status IN ('delivered', 'failed')"
    conn.execute(text(f"CREATE INDEX IF NOT EXISTS outbox_outcomes ON outbox (updated_at) WHERE {where}"))
    _runs(conn)
    _outbox(conn)
    _cursors(conn)
    _entries(conn)


def _runs(conn: Connection) -> None:
    from flowrun.runtime.records import event_key, partition_of

    rows = conn.execute(text("SELECT id, customer_key, trigger_event, state FROM runs")).all()
    for run_id, customer, trigger, state in rows:
        if customer:
            part = partition_of(customer)
        else:
            stored = codec.loads(trigger) if trigger else codec.loads(state)["trigger"]
            part = partition_of(event_key(codec.event_from_dict(stored)))
        conn.execute(text("UPDATE runs SET part = :part WHERE id = :id"), {"part": part, "id": run_id})


def _outbox(conn: Connection) -> None:
    from flowrun.actions import REGISTRY

    # v5: pending (the dispatcher decided guardrails at its claim), sending, done / failed (to
    # apply), applied, parked. Pending rows are decided again by the runtime.
    conn.execute(text("UPDATE outbox SET applied_at = updated_at, status = 'delivered' WHERE status = 'applied'"))
    conn.execute(text("UPDATE outbox SET status = 'delivered' WHERE status = 'done'"))
    found = conn.execute(
        text(
            "SELECT o.key, o.action, o.params, r.part, r.customer_key FROM outbox o LEFT JOIN runs r ON r.id = o.run_id"
        )
    ).all()
    for key, action, params, part, customer in found:
        decoded: dict[str, Any] = codec.loads(params)
        kind = REGISTRY.get(action)
        values = {
            "key": key,
            "part": part or 0,
            "step": key.split("/", 1)[1] if "/" in key else "",
            "customer": customer,
            "channel": kind.channel if kind else None,
            "category": str(decoded.get("category", "marketing")),
        }
        conn.execute(
            text(
                "UPDATE outbox SET part = :part, step = :step, customer_key = :customer, channel = :channel,"
                " category = :category WHERE key = :key"
            ),
            values,
        )


def _cursors(conn: Connection) -> None:
    """v5 kept one abandonment check per checkout (`abandon:<customer>:<checkout>`, the event as
    value); v6 keeps one per customer holding its open checkouts."""
    from flowrun.runtime.records import partition_of

    merged: dict[str, dict[str, Any]] = {}
    for name, value, due in conn.execute(text("SELECT name, value, due_at FROM cursors WHERE name LIKE 'abandon:%'")):
        who, _, checkout = name[len("abandon:") :].rpartition(":")  # customer keys hold ':' too
        merged.setdefault(who, {})[checkout] = {"event": codec.loads(value), "due": codec._aware(due)}
    conn.execute(text("DELETE FROM cursors WHERE name LIKE 'abandon:%'"))
    for who, open_ in merged.items():
        due = min(v["due"] for v in open_.values())
        values = {"name": f"abandon:{who}", "value": codec.dumps({"checkouts": open_}), "due": due}
        conn.execute(
            text("INSERT INTO cursors (name, value, due_at, part) VALUES (:name, :value, :due, :part)"),
            {**values, "part": partition_of(who)},
        )
    for name in [r[0] for r in conn.execute(text("SELECT name FROM cursors WHERE name LIKE 'inactive:%'"))]:
        who = name[len("inactive:") :]
        conn.execute(
            text("UPDATE cursors SET part = :part WHERE name = :name"), {"part": partition_of(who), "name": name}
        )


def _entries(conn: Connection) -> None:
    """Re-entry was read from the runs themselves; it has its own table now."""
    from flowrun.state.schema import entries

    entries.create(conn, checkfirst=True)
    conn.execute(
        text(
            "INSERT INTO entries (flow_id, customer_key, run_id, started_at)"
            " SELECT r.flow_id, r.customer_key, MIN(r.id), r.started_at FROM runs r"
            " JOIN (SELECT flow_id, customer_key, MAX(started_at) AS latest FROM runs"
            "       WHERE customer_key IS NOT NULL AND status <> 'skipped' GROUP BY flow_id, customer_key) last"
            " ON last.flow_id = r.flow_id AND last.customer_key = r.customer_key AND last.latest = r.started_at"
            " WHERE r.status <> 'skipped' GROUP BY r.flow_id, r.customer_key, r.started_at"
        )
    )
