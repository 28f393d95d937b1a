"""Retention over SQL: what may go (`plan`), and taking it away in small batches (`prune`).

Each batch is one short transaction of at most `Retention.batch` rows (on SQLite it takes the
shared writer lock once, briefly; the webhook port and the engine get their turn between
batches). Under serve a `Pace` sizes each batch so its write holds the lock about as long as the
pace allows (the size follows the time per row the last batch measured) and rests in between.
Rows are picked by their row id (`rowid` on SQLite, `ctid` on PostgreSQL) in a subquery with
LIMIT. Afterwards SQLite gives the freed pages back with `PRAGMA
incremental_vacuum` (databases created by this flowrun have auto_vacuum=INCREMENTAL; an older
file reuses its free pages instead of shrinking); PostgreSQL's autovacuum does the rest.

Never pruned: unfinished runs and their outbox rows, parked or unsent actions, pending
deliveries, `entries` (re-entry rules), the loyalty ledger and balances, suppressions, checks.
Each pass is recorded in `prunes` (kind, the cutoff, rows) and the cursor `prune:last`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import delete, exists, func, insert, literal_column, select, update
from sqlalchemy.engine import Connection, Engine

from flowrun.engine.state import Status
from flowrun.retention import Retention
from flowrun.state import codec
from flowrun.state.cursors import get_cursor, set_cursor
from flowrun.state.schema import attempts, inbox, outbox, prunes, runs, sends

FINISHED = [s.value for s in (Status.COMPLETED, Status.CONVERTED, Status.SKIPPED, Status.CANCELLED)]
SETTLED = ["delivered", "failed", "skipped", "cancelled"]  # an outbox row nothing will send again
FAMILIES = ("runs", "failed", "inbox", "ignored", "sends")
LAST = "prune:last"


@dataclass(frozen=True)
class Step:
    """One kind of row to take away: its family, what it does, the table and which rows."""

    family: str
    label: str
    cutoff: datetime
    where: Any
    table: Any
    slim: bool = False  # drop the body, keep the row (a dedupe key)
    statuses: tuple[str, ...] = ()  # what a picked row's status must still be when it is written


def _unindexed(column: Any) -> Any:
    """The column's value in a form SQLite's planner does not look up in an index. A batch's
    write finds its rows by key; given `status IN (...)` as well, the planner chose the index on
    status and scanned every row of that status, once per batch."""
    return column.concat("")


def _utc(value: datetime) -> datetime:
    found = codec.utc(value)
    assert found is not None
    return found


def steps(retention: Retention, now: datetime, longest_cap: timedelta = timedelta(0)) -> Iterator[Step]:
    now = _utc(now)
    keys = max(retention.dedupe, timedelta(hours=48))
    for family, window, status in (("inbox", retention.inbox, "done"), ("ignored", retention.ignored, "ignored")):
        if window is None:
            continue
        cut = now - max(window, keys)
        yield Step(family, "deliveries", cut, _aged(status, cut), inbox, statuses=(status,))
        if window < keys:  # the body goes now, the key row once the retry window is over (deleted first: not slimmed)
            cut = now - window
            aged = _aged(status, cut) & (func.length(inbox.c.body) > 0)
            yield Step(family, "bodies", cut, aged, inbox, slim=True, statuses=(status,))
    if retention.failed is not None:
        cut = now - max(retention.failed, keys)
        problems = ("rejected", "failed")
        where = inbox.c.status.in_(problems) & (inbox.c.received_at < cut)
        yield Step("failed", "deliveries", cut, where, inbox, statuses=problems)
    if retention.sends is not None:
        cut = now - max(retention.sends, longest_cap)
        yield Step("sends", "sends", cut, sends.c.at < cut, sends)  # a send log row never changes


def run_cutoffs(retention: Retention, now: datetime) -> Iterator[tuple[str, datetime, list[str]]]:
    now = _utc(now)
    keys = max(retention.dedupe, timedelta(hours=48))
    if retention.runs is not None:
        yield "runs", now - max(retention.runs, keys), FINISHED
    if retention.failed is not None:
        yield "failed", now - max(retention.failed, keys), [Status.FAILED.value]


def _aged(status: str, cut: datetime) -> Any:
    return (inbox.c.status == status) & (inbox.c.received_at < cut)


def _old_runs(cut: datetime, statuses: list[str]) -> Any:
    unsettled = exists().where(outbox.c.run_id == runs.c.id, outbox.c.status.notin_(SETTLED))
    return select(runs.c.id).where(runs.c.status.in_(statuses), runs.c.updated_at < cut, ~unsettled)


def plan(conn: Connection, retention: Retention, now: datetime, longest_cap: timedelta = timedelta(0)) -> list[str]:
    """What a prune now would take, one line per table family (for `flowrun prune --dry-run`)."""
    lines = []
    for family, cut, statuses in run_cutoffs(retention, now):
        ids = _old_runs(cut, statuses).subquery()
        n_runs = conn.execute(select(func.count()).select_from(ids)).scalar() or 0
        n_out = conn.execute(select(func.count()).where(outbox.c.run_id.in_(select(ids.c.id)))).scalar() or 0
        keys = select(outbox.c.key).where(outbox.c.run_id.in_(select(ids.c.id)))
        n_att = conn.execute(select(func.count()).where(attempts.c.key.in_(keys))).scalar() or 0
        lines.append(f"{family + ':':<9}{n_runs:>9} runs, {n_out} outbox rows, {n_att} attempts ({_before(cut)})")
    for step in steps(retention, now, longest_cap):
        n = conn.execute(select(func.count()).select_from(step.table).where(step.where)).scalar() or 0
        what = "inbox bodies dropped (dedupe key kept)" if step.slim else f"{step.label} deleted"
        lines.append(f"{step.family + ':':<9}{n:>9} {what} ({_before(step.cutoff)})")
    return lines


def _before(cut: datetime) -> str:
    return f"before {_utc(cut).replace(microsecond=0).isoformat()}"


def _rid(conn: Connection) -> Any:
    return literal_column("ctid" if conn.dialect.name == "postgresql" else "rowid")


@dataclass(frozen=True)
class Pace:
    """How a prune shares SQLite's one writer. `hold`: the longest a batch's write should keep
    the lock (None: full batches, the CLI's way); `rest`: seconds of rest per second held."""

    hold: float | None = None
    rest: float = 0.0

    def first(self, most: int) -> int:
        return most if self.hold is None else min(most, 8)

    def next(self, size: int, took: float, most: int) -> int:
        """The next batch's size from what this one took: at most doubling, at least one row."""
        if self.hold is None:
            return most
        if took <= 0:
            return min(most, 2 * size)
        return max(1, min(most, 2 * size, int(size * self.hold / took)))

    def pause(self, took: float) -> None:
        if self.rest > 0:
            time.sleep(took * self.rest)

    def drain(self, batch: Callable[[int], tuple[int, int, float]], most: int, stopping: Callable[[], bool]) -> int:
        """Batches until one comes back short: `batch(size)` gives (rows picked, rows removed,
        seconds its write held the lock); the rows removed in all."""
        removed, size = 0, self.first(most)
        while not stopping():
            picked, gone, took = batch(size)
            removed += gone
            if picked < size:
                break
            self.pause(took)
            size = self.next(size, took, most)
        return removed


UNPACED = Pace()  # the CLI's: full batches, no rest


def _batch(db: Engine, step: Step, size: int) -> tuple[int, int, float]:
    """One batch of a step: rows picked, rows removed, and how long the write held the lock."""
    picked: Any = select(literal_column("rowid")).select_from(step.table).where(step.where).limit(size)
    if db.dialect.name == "sqlite":  # picked in a read: the writer lock is held for the writes alone
        with db.connect() as conn:
            picked = list(conn.execute(picked).scalars())
        if not picked:
            return 0, 0, 0.0
    with db.begin() as conn:  # the lock is held from here (the wait for it is not the batch's doing)
        held = time.perf_counter()
        rid = _rid(conn)
        if conn.dialect.name == "postgresql":
            picked = select(rid).select_from(step.table).where(step.where).limit(size).scalar_subquery()
        n = int(conn.execute(step_write(step, rid, picked)).rowcount or 0)
    return n, n, time.perf_counter() - held  # PostgreSQL picks in the write: what it removed


def step_write(step: Step, rid: Any, picked: Any) -> Any:
    """The write of a batch of `step`: the picked rows, found by their row id."""
    query: Any = update(inbox).values(body=b"", facts=None) if step.slim else delete(step.table)
    query = query.where(rid.in_(picked))
    if step.statuses:  # set aside, replayed: a row's status may have moved since it was picked
        query = query.where(_unindexed(step.table.c.status).in_(step.statuses))
    return query


def settled_outbox(run_ids: list[str]) -> Any:
    """The outbox rows of finished runs, found by run (each is settled: nothing sends it again)."""
    return delete(outbox).where(outbox.c.run_id.in_(run_ids), _unindexed(outbox.c.status).in_(SETTLED))


def _runs_batch(db: Engine, cut: datetime, statuses: list[str], size: int) -> tuple[int, int, float]:
    """One batch of finished runs with their outbox rows and attempts, picked in a read (no
    writer lock: final runs and settled rows do not change back) and deleted in one short write:
    runs removed, rows removed, seconds the write held the lock."""
    with db.connect() as conn:
        ids = list(conn.execute(_old_runs(cut, statuses).limit(size)).scalars())
        keys = list(conn.execute(select(outbox.c.key).where(outbox.c.run_id.in_(ids))).scalars()) if ids else []
    if not ids:
        return 0, 0, 0.0
    with db.begin() as conn:
        held = time.perf_counter()
        n_att = 0
        for at in range(0, len(keys), 500):
            n_att += int(conn.execute(delete(attempts).where(attempts.c.key.in_(keys[at : at + 500]))).rowcount or 0)
        n_out = int(conn.execute(settled_outbox(ids)).rowcount or 0)
        n_runs = int(conn.execute(delete(runs).where(runs.c.id.in_(ids))).rowcount or 0)
    return n_runs, n_runs + n_out + n_att, time.perf_counter() - held


def prune(
    db: Engine,
    retention: Retention,
    now: datetime,
    longest_cap: timedelta = timedelta(0),
    pace: Pace = UNPACED,
    stopping: Callable[[], bool] = lambda: False,
) -> dict[str, int]:
    """Everything past its window, batch by batch; rows removed per family (and `pages` freed)."""
    started, wall = time.perf_counter(), time.time()
    removed = {family: 0 for family in FAMILIES}
    cuts: dict[str, datetime] = {}
    most = retention.batch
    for family, cut, statuses in run_cutoffs(retention, now):
        cuts[family] = cut
        removed[family] += pace.drain(partial(_runs_batch, db, cut, statuses), most, stopping)
    for step in steps(retention, now, longest_cap):
        cuts.setdefault(step.family, step.cutoff)
        removed[step.family] += pace.drain(partial(_batch, db, step), most, stopping)
    removed["pages"] = vacuum(db, pace)
    took_s = {"wall_started": wall, "seconds": time.perf_counter() - started}
    with db.begin() as conn:
        record(conn, now, removed, cuts, took_s)
    return removed


def record(
    conn: Connection, now: datetime, removed: dict[str, int], cuts: dict[str, datetime], took: dict[str, float]
) -> None:
    rows = [
        {"at": _utc(now), "kind": family, "before": cuts[family], "rows": n}
        for family, n in removed.items()
        if n and family in cuts
    ]
    if rows:
        conn.execute(insert(prunes), rows)
    conn.execute(delete(prunes).where(prunes.c.at < _utc(now - timedelta(days=400))))
    this = {"at": now, "rows": removed, **took}
    before = get_cursor(conn, LAST) or {}
    worked = this if any(n for family, n in removed.items() if family != "pages") else before.get("worked")
    set_cursor(conn, LAST, {**this, "worked": worked})  # `worked`: the last pass that removed rows


def vacuum(db: Engine, pace: Pace = UNPACED, most: int = 500) -> int:
    """SQLite: give free pages back to the file system, at most `most` pages per short write."""
    if db.dialect.name != "sqlite":
        return 0
    with db.connect() as conn:
        if conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() != 2:  # 2: INCREMENTAL
            return 0
    return pace.drain(partial(_vacuum_step, db), most, lambda: False)


def _vacuum_step(db: Engine, pages: int) -> tuple[int, int, float]:
    """Up to `pages` free pages given back in one write: (pages asked for while more were free,
    pages freed, seconds the write held the lock)."""
    raw: Any = db.raw_connection()
    try:
        raw.begin_immediate()  # flowrun's writer lock, then BEGIN IMMEDIATE
        held = time.perf_counter()
        before = int(raw.execute("PRAGMA freelist_count").fetchone()[0])
        # sqlite3_exec steps the pragma to its end (a cursor frees one page per step)
        raw.executescript(f"PRAGMA incremental_vacuum({int(pages)})")
        freed = before - int(raw.execute("PRAGMA freelist_count").fetchone()[0])
        raw.commit()
        took = time.perf_counter() - held
    finally:
        raw.close()
    return (pages if before > pages else 0), freed, took


def watermark(conn: Connection, kinds: tuple[str, ...] = ("runs", "failed")) -> tuple[datetime, datetime] | None:
    """The latest prune of runs: (when it ran, the cutoff it used), for `show` of a pruned run."""
    row = conn.execute(
        select(prunes.c.at, prunes.c.before).where(prunes.c.kind.in_(kinds)).order_by(prunes.c.before.desc()).limit(1)
    ).first()
    return (codec._aware(row.at), codec._aware(row.before)) if row else None
