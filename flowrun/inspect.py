"""`flowrun runs`, `show`, `retry` and `loyalty`: read the state database (and `retry`
re-queues), at this flowrun's schema version only."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from flowrun.config import Config
from flowrun.durations import format_duration
from flowrun.engine.state import FINAL
from flowrun.errors import UsageError
from flowrun.jsonout import iso, plain
from flowrun.state import admin, codec
from flowrun.state import inbox as inbox_rows
from flowrun.state.customers import SqlLedger, balances, history
from flowrun.state.database import reading, sqlite_path
from flowrun.state.prune import watermark
from flowrun.state.runs import SqlRuns
from flowrun.state.schema import attempts, outbox, runs
from flowrun.state.schema_check import open_current
from flowrun.state.spool import spool_path
from flowrun.state.spool_admin import refused, respool, waiting


def state_engine(config: Config) -> Engine:
    """The state database as it is (for `flowrun prune`)."""
    return _engine(config)


def _engine(config: Config) -> Engine:
    """The state database as it is: never created nor migrated here (flowrun.state.schema_check)."""
    return open_current(config.database)


def list_runs(config: Config, flow: str | None, status: str | None, customer: str | None, limit: int) -> list[str]:
    query = (
        select(runs.c.id, runs.c.flow_id, runs.c.status, runs.c.customer_key, runs.c.started_at, runs.c.wake_at)
        .order_by(runs.c.started_at.desc(), runs.c.id)
        .limit(limit)
    )
    if flow:
        query = query.where(runs.c.flow_id == flow)
    if status == "waiting":
        query = query.where(runs.c.status.notin_([s.value for s in FINAL]))
    elif status:
        query = query.where(runs.c.status == status)
    if customer:
        query = query.where(runs.c.customer_key == customer_filter(customer))
    with reading(_engine(config)) as conn:
        rows = conn.execute(query).all()
        gone = _pruned(conn)
    lines = [f"{'RUN':<24} {'FLOW':<28} {'STATUS':<15} {'STARTED':<21} {'NEXT':<21} CUSTOMER"]
    for r in rows:
        wake = _short(r.wake_at) if r.wake_at else "-"
        lines.append(
            f"{r.id:<24} {r.flow_id:<28} {r.status:<15} {_short(r.started_at):<21} {wake:<21} {r.customer_key or '-'}"
        )
    if gone:
        lines.append(f"(older finished runs{gone})")
    return lines


def _pruned(conn: Connection) -> str:
    """`: pruned on <date> by retention (runs: 90d)` when runs have been pruned, else ''."""
    mark = watermark(conn)
    if mark is None:
        return ""
    at, before = mark
    window = format_duration(at - before)
    return f": pruned on {_short(at)} by retention (runs: {window}; runs finished before {_short(before)} are gone)"


def customer_filter(customer: str) -> str:
    """A customer as people type it (an email) or as flowrun keys it (`id:42`, `phone:+1...`)."""
    return customer if ":" in customer else f"email:{customer.lower()}"


def loyalty(config: Config, customer: str | None, limit: int) -> list[str]:
    """Balances (highest first), or one customer's balance and ledger, newest first."""
    with reading(_engine(config)) as conn:
        ledger = SqlLedger(conn)
        if customer is None:
            rows = balances(conn, limit)
            return [f"{'BALANCE':>8}  CUSTOMER", *(f"{b:>8}  {k}" for k, b in rows)]
        key = customer_filter(customer)
        entries = history(conn, key, limit)
        header = f"{'WHEN':<21} {'POINTS':>7} {'BALANCE':>8}  {'RUN':<24} REASON"
        lines = [f"{key}: {ledger.balance(key)} points", header]
        for e in entries:
            lines.append(f"{_short(e.at):<21} {e.points:>+7} {e.balance:>8}  {e.run_id:<24} {e.reason}")
        return lines


def _short(value: datetime) -> str:
    return iso(codec._aware(value).replace(microsecond=0))


def show_run(config: Config, run_id: str) -> list[str]:
    engine = _engine(config)
    with reading(engine) as conn:
        run = SqlRuns(conn, None).get(run_id)
        if run is None:
            raise UsageError(f"no run {run_id!r}{_pruned(conn)}; `flowrun runs` lists them")
        actions = (
            conn.execute(select(outbox).where(outbox.c.run_id == run_id).order_by(outbox.c.created_at)).mappings().all()
        )
        tries = (
            conn.execute(
                select(attempts).where(attempts.c.key.in_([a["key"] for a in actions])).order_by(attempts.c.seq)
            )
            .mappings()
            .all()
        )
    lines = [
        f"run {run.id}  flow {run.flow_id} (version {run.flow_version})  status {run.status.value}",
        f"trigger {run.trigger.type} from {run.trigger.source} (event {run.trigger.id}), "
        f"customer {run.customer_key or '-'}",
    ]
    if run.reason:
        lines.append(f"reason: {run.reason}")
    if run.wake_at and not run.status.final:
        lines.append(f"next: {iso(run.wake_at)}")
    lines.append("")
    for entry in run.trace:
        detail = plain(dict(entry.detail)) if entry.detail else ""
        lines.append(f"{iso(entry.at)}  {entry.step:<22} {entry.kind:<10} {entry.outcome}")
        if detail:
            lines.append(f"    {detail}")
    for action in actions:
        lines.append("")
        lines.append(
            f"action {action['key']}: {action['action']} {action['status']} after {action['attempts']} attempt(s)"
            + (f"; last error: {action['last_error']}" if action["last_error"] else "")
        )
        for attempt in (t for t in tries if t["key"] == action["key"]):
            lines.append(f"    {iso(codec._aware(attempt['at']))}  {attempt['outcome']}  {attempt['detail'] or ''}")
    return lines


def list_parked(config: Config) -> list[str]:
    with reading(_engine(config)) as conn:
        rows = (
            conn.execute(select(outbox).where(outbox.c.status == "parked").order_by(outbox.c.updated_at))
            .mappings()
            .all()
        )
    return [f"{r['key']}  {r['action']}  attempts={r['attempts']}  {r['last_error']}" for r in rows]


def requeue(config: Config, keys: list[str] | None) -> tuple[int, list[tuple[str, str]]]:
    """Parked actions back to the runtime (decided again, attempts from zero); and those refused, why."""
    with _engine(config).begin() as conn:
        return admin.requeue(conn, keys, datetime.now(UTC))


def inbox_problems(config: Config) -> list[str]:
    with reading(_engine(config)) as conn:
        rows = inbox_rows.problems(conn)
    lines = []
    for row in rows:
        lines.append(
            f"{row['seq']:>8}  {row['status']:<8} {row['source']}/{row['topic']} {row['delivery_id']}"
            f"  received {_short(row['received_at'])}"
        )
        lines.append(f"          {row['error']}")
    path = sqlite_path(config.database)
    if path is None:
        return lines
    for row in refused(path):
        lines.append(
            f"{'spool ' + str(row['seq']):>8}  refused  {row['source']}/{row['topic']} {row['delivery_id']}"
            f"  received {_short(datetime.fromisoformat(row['received_at']))}"
        )
        lines.append(f"          the inbox refused it; kept in {spool_path(path)}: {row['error']}")
    spooled = waiting(path, _engine(config))
    if spooled:
        lines.append(
            f"{spooled} accepted deliver{'y waits' if spooled == 1 else 'ies wait'} in {spool_path(path)}"
            " (not in the inbox yet): a running serve moves them in order, a stopped one when it starts"
        )
    return lines


def replay_inbox(config: Config, seqs: list[int] | None) -> int:
    """Rejected or failed rows pending again; with every one (no `seqs`), also the spool's
    refused rows spooled again."""
    with _engine(config).begin() as conn:
        count = inbox_rows.replay(conn, seqs)
    path = sqlite_path(config.database)
    return count + (respool(path) if seqs is None and path is not None else 0)


def report_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """`--since`: an ISO time (UTC when it names no zone), or an offset back from now (7d)."""
    from flowrun.durations import DurationSyntaxError, parse_duration

    if text is None:
        return None
    try:
        return (now or datetime.now(UTC)) - parse_duration(text)
    except DurationSyntaxError:
        pass
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r} is neither an offset back (7d) nor an ISO time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)
