"""Retention (issue 17): pruning takes what is past its window and never what dedupe, re-entry,
the ledger, parked actions or caps still need. In-process engine and dispatcher (tests/node.py)
on SQLite and PostgreSQL, a clock the test moves, a real HTTP sink; the CLI on a SQLite file."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, literal_column, select

from flowrun.config import load_config
from flowrun.errors import ConfigError
from flowrun.retention import Retention
from flowrun.serve.metrics import Metrics
from flowrun.serve.port import _gauges
from flowrun.state import storage
from flowrun.state.database import make_engine
from flowrun.state.migrations import migrate
from flowrun.state.prune import UNPACED, Pace, prune, settled_outbox, step_write, steps
from flowrun.state.schema import attempts, entries, inbox, loyalty_balances, loyalty_ledger, outbox, runs
from tests.conftest import ROOT
from tests.node import Node
from tests.servekit import Clock, Sink, config, database_params, database_url

ORDER = json.loads((ROOT / "examples/events/shopify/orders/create.json").read_bytes())
FORWARD = """
flow: forward
on: order.created
if: order.total_price > 0
steps:
  - http: {url: "SINK/hook", json: {order: "{{ order.id }}"}}
"""


def order(n: int, email: str = "ada@example.com") -> bytes:
    customer = {**ORDER["customer"], "email": email}
    return json.dumps({**ORDER, "id": 7000 + n, "order_number": 3000 + n, "customer": customer}).encode()


@pytest.fixture(params=database_params())
def db(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Rig:
    def __init__(self, tmp_path: Path, db: str, flow: str, sink: Sink, retention: Retention) -> None:
        folder = tmp_path / "flows"
        folder.mkdir(exist_ok=True)
        (folder / "f.yaml").write_text(flow.replace("SINK", sink.url))
        self.sink, self.clock = sink, Clock()
        self.config = config(tmp_path, database_url(db, tmp_path), folder, action_attempts=2, retention=retention)
        self.node = Node(self.config, self.clock)

    def deliver(self, n: int, email: str = "ada@example.com", delivery: str | None = None) -> bool:
        return self.node.deliver("shopify", "orders/create", order(n, email), delivery or f"d-{n}")

    def prune(self) -> dict[str, int]:
        return prune(self.node.db, self.config.retention, self.clock())

    def count(self, table: Any, *where: Any) -> int:
        return self.node.count(table, *where)


@pytest.fixture
def rig(tmp_path: Path, db: str):  # type: ignore[no-untyped-def]
    made: list[Rig] = []
    with Sink() as sink:

        def make(flow: str, retention: Retention | None = None) -> Rig:
            made.append(Rig(tmp_path, db, flow, sink, retention or Retention()))
            return made[-1]

        yield make
    for r in made:
        r.node.close()


def test_a_replayed_delivery_inside_the_retry_window_is_still_deduped_after_a_prune(rig) -> None:
    r = rig(FORWARD, Retention(inbox=timedelta(hours=1), runs=timedelta(hours=1)))
    assert r.deliver(1)
    r.node.settle()
    assert len(r.sink.requests) == 1
    r.clock.advance(timedelta(hours=30))
    removed = r.prune()
    assert removed["inbox"] == 1 and removed["runs"] == 0  # the body went; runs are kept 48h at least
    with r.node.db.connect() as conn:
        [(body, status)] = conn.execute(select(inbox.c.body, inbox.c.status)).all()
    assert (bytes(body), status) == (b"", "done")  # the slim dedupe key row
    assert not r.deliver(1)  # Shopify retries the same webhook id: refused as stored
    r.node.settle()
    assert len(r.sink.requests) == 1 and r.count(runs) == 1
    r.clock.advance(timedelta(hours=19))  # 49 h after the delivery: past the retry window
    removed = r.prune()
    assert r.count(inbox) == 0 and r.count(runs) == 0 and r.count(outbox) == 0
    assert removed["runs"] == 3  # the run, its outbox row, its attempt
    assert r.count(entries) == 1  # re-entry's slim row stays


def test_reentry_once_holds_after_the_customers_old_run_is_pruned(rig) -> None:
    r = rig(FORWARD.replace("if: order", "reentry: once\nif: order"))
    r.deliver(1)
    r.node.settle()
    r.clock.advance(timedelta(days=100))
    r.prune()
    assert r.count(runs) == 0 and r.count(inbox) == 0
    r.deliver(2)  # a second order, 100 days later: the rule says once
    r.node.settle()
    with r.node.db.connect() as conn:
        [(status,)] = conn.execute(select(runs.c.status)).all()
    assert status == "skipped" and len(r.sink.requests) == 1


def test_the_loyalty_ledger_and_balances_are_untouched(rig) -> None:
    r = rig("flow: points\non: order.created\nsteps:\n  - loyalty_points: {points: 10, reason: order}\n")
    for n in range(3):
        r.deliver(n)
    r.node.settle()
    assert r.count(loyalty_ledger) == 3
    r.clock.advance(timedelta(days=400))
    removed = r.prune()
    assert removed["runs"] > 0 and r.count(runs) == 0
    assert r.count(loyalty_ledger) == 3
    with r.node.db.connect() as conn:
        assert conn.execute(select(loyalty_balances.c.balance)).scalar() == 30


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_parked_actions_and_their_runs_survive_any_prune(rig) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    r = rig(FORWARD.replace("SINK", dead))
    r.deliver(1)
    r.node.run_until(r.clock() + timedelta(hours=2))
    assert r.count(outbox, outbox.c.status == "parked") == 1
    tried = r.count(attempts)
    r.clock.advance(timedelta(days=500))
    r.prune()
    assert r.count(outbox, outbox.c.status == "parked") == 1 and r.count(runs) == 1
    assert r.count(attempts) == tried > 0


def test_failed_runs_and_rejected_deliveries_are_kept_until_handled(rig) -> None:
    r = rig(FORWARD)
    r.node.deliver("shopify", "orders/create", b'{"id": "not an order"', "bad-1")
    r.node.settle()
    assert r.count(inbox, inbox.c.status == "rejected") == 1
    r.clock.advance(timedelta(days=500))
    r.prune()
    assert r.count(inbox, inbox.c.status == "rejected") == 1


def test_a_failed_window_takes_rejected_deliveries_after_it(rig) -> None:
    r = rig(FORWARD, Retention(failed=timedelta(days=3)))
    r.node.deliver("shopify", "orders/create", b'{"id": "not an order"', "bad-1")
    r.node.settle()
    r.clock.advance(timedelta(days=2, hours=23))
    assert r.prune()["failed"] == 0
    r.clock.advance(timedelta(hours=2))
    assert r.prune()["failed"] == 1 and r.count(inbox) == 0


def test_the_send_log_is_kept_by_default_and_never_pruned_below_the_longest_cap() -> None:
    from flowrun.state.prune import steps

    now = Clock()()
    assert [s.family for s in steps(Retention(), now)] == ["inbox", "ignored"]
    [sends_step] = [s for s in steps(Retention(sends=timedelta(days=1)), now, timedelta(days=7)) if s.family == "sends"]
    assert sends_step.cutoff == now - timedelta(days=7)


def test_ignored_deliveries_go_after_two_days(rig) -> None:
    r = rig(FORWARD)
    r.node.deliver("shopify", "products/update", b'{"id": 1}', "ignored-1")
    r.node.settle()
    assert r.count(inbox, inbox.c.status == "ignored") == 1
    r.clock.advance(timedelta(hours=47))
    assert r.prune()["ignored"] == 0
    r.clock.advance(timedelta(hours=2))
    assert r.prune()["ignored"] == 1 and r.count(inbox) == 0


def test_pruning_goes_in_batches_and_the_metrics_show_size_and_last_prune(rig, db: str) -> None:
    r = rig(FORWARD, Retention(batch=7))
    for n in range(30):
        r.deliver(n, email=f"c{n}@example.com")
    r.node.settle()
    assert len(r.sink.requests) == 30
    r.clock.advance(timedelta(days=91))
    removed = r.prune()
    assert removed["runs"] == 90 and removed["inbox"] == 30
    assert r.count(runs) == 0 and r.count(entries) == 30
    metrics = Metrics()
    metrics.gauges = _async(lambda: _gauges(r.node.db, r.config.database))
    text = __import__("asyncio").run(metrics.render())
    size = next(line for line in text.splitlines() if line.startswith("flowrun_database_bytes "))
    assert float(size.split()[1]) > 10_000
    last = next(line for line in text.splitlines() if line.startswith("flowrun_last_prune_timestamp_seconds "))
    assert float(last.split()[1]) == r.clock().timestamp()
    assert 'flowrun_last_prune_rows{family="runs"} 90.0' in text
    assert 'flowrun_table_rows{family="entries"} 30.0' in text
    assert 'flowrun_pruned_rows{family="inbox"} 30.0' in text


def _async(fn: Any) -> Any:
    async def call() -> Any:
        return fn()

    return call


# -- the project file, the CLI, serve --check --------------------------------------------


def test_retention_is_checked_with_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "flowrun.yaml"
    path.write_text(
        "guardrails:\n  caps:\n    email: {max: 1, per: 7d}\nretention:\n  dedupe: 1h\n  sends: 2d\n  runz: 3d\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    messages = " | ".join(f"{p.line}:{p.column} {p.message}" for p in caught.value.problems)
    assert "5:11 dedupe 1h is shorter than the stores' retry window (48h)" in messages
    assert "6:10 sends 2d is shorter than the longest cap (7d)" in messages
    assert any(p.line == 7 and "runz" in p.message for p in caught.value.problems), messages
    path.write_text("retention: {runs: 30d, inbox: keep, every: 1m}\n")
    loaded = load_config(path).retention
    assert (loaded.runs, loaded.inbox, loaded.every, loaded.ignored) == (
        timedelta(days=30),
        None,
        timedelta(minutes=1),
        timedelta(days=2),
    )


def _project(tmp_path: Path, sink: Sink) -> tuple[Path, Node, Clock]:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "f.yaml").write_text(FORWARD.replace("SINK", sink.url))
    url = f"sqlite:///{tmp_path / 'state.db'}"
    (tmp_path / "flowrun.yaml").write_text(f"database: {url}\nflows: flows\n")
    clock = Clock()  # 2026-01-05: older than 90 days for the CLI's wall clock
    return tmp_path / "flowrun.yaml", Node(config(tmp_path, url, folder), clock), clock


def test_prune_dry_run_counts_and_changes_nothing_then_prune_and_show_say_pruned(tmp_path: Path, cli) -> None:
    with Sink() as sink:
        project, node, _ = _project(tmp_path, sink)
        for n in range(3):
            node.deliver("shopify", "orders/create", order(n, f"p{n}@example.com"), f"d-{n}")
        node.settle()
        with node.db.connect() as conn:
            run_id = conn.execute(select(runs.c.id)).scalars().first()
            before = {t.name: conn.execute(select(func.count()).select_from(t)).scalar() for t in (runs, outbox, inbox)}
        node.close()
    dry = cli("prune", "--dry-run", "-c", str(project))
    assert dry.exit_code == 0, dry.stderr
    assert "would prune (--dry-run: nothing changed):" in dry.stdout
    assert "runs:            3 runs, 3 outbox rows, 3 attempts" in dry.stdout
    assert "inbox:           3 deliveries deleted" in dry.stdout
    node = Node(load_config(project), Clock())
    assert {t.name: node.count(t) for t in (runs, outbox, inbox)} == before
    node.close()
    done = cli("prune", "-c", str(project))
    assert done.exit_code == 0, done.stderr
    assert "  runs: 9 rows" in done.stdout and "  inbox: 3 rows" in done.stdout
    shown = cli("show", run_id, "-c", str(project))
    assert shown.exit_code == 2
    assert f"no run {run_id!r}: pruned on " in shown.stderr and "by retention (runs: 90d;" in shown.stderr
    listed = cli("runs", "-c", str(project))
    assert listed.exit_code == 0 and "(older finished runs: pruned on " in listed.stdout


def test_serve_check_warns_when_the_disk_under_the_database_is_nearly_full(tmp_path: Path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    assert storage.disk_warning(url) is None or "GB free" in str(storage.disk_warning(url))
    total, free = 20 << 30, 1 << 29
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda _p: type("U", (), {"total": total, "free": free})())
    warning = storage.disk_warning(url)
    assert warning == (
        f"warning: the disk holding {tmp_path / 'state.db'} has 0.50 GB free of 20.00 GB (2.5%; flowrun wants 10 % and"
        " 1 GB): free space, or shorten `retention:`"
    )
    assert storage.disk_warning("postgresql://x@127.0.0.1/db") is None
    from flowrun.serve.check import check

    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "f.yaml").write_text("flow: f\non: order.created\nsteps:\n  - log: {message: hi}\n")
    notes = check(config(tmp_path, url, tmp_path / "flows"))
    assert warning in notes and not any(n.startswith("error:") for n in notes)


def test_a_new_sqlite_database_vacuums_incrementally_and_gives_pages_back(tmp_path: Path) -> None:
    with Sink() as sink:
        folder = tmp_path / "flows"
        folder.mkdir()
        (folder / "f.yaml").write_text(FORWARD.replace("SINK", sink.url))
        clock = Clock()
        node = Node(config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", folder), clock)
        for n in range(300):
            node.deliver("shopify", "orders/create", order(n, f"v{n}@example.com"), f"d-{n}")
        node.settle()
        with node.db.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
        clock.advance(timedelta(days=91))
        removed = prune(node.db, replace(Retention(), batch=50), clock())
        with node.db.connect() as conn:
            after = conn.exec_driver_sql("PRAGMA page_count").scalar()
            assert conn.exec_driver_sql("PRAGMA freelist_count").scalar() == 0
        node.close()
    assert removed["pages"] > 0 and after < pages / 2


# -- a real flowrun serve: its leader prunes on its interval -----------------------------


def test_serve_prunes_on_its_interval_keeps_dedupe_keys_and_reports_it(tmp_path: Path) -> None:
    from tests.liveserve import T0, LiveServe
    from tests.liveserve import order as live_order

    with Sink() as sink:
        serve = LiveServe(
            tmp_path,
            f"sqlite:///{tmp_path / 'state.db'}",
            {"f.yaml": FORWARD.replace("SINK", sink.url).replace("order.total_price > 0", "order.id")},
            extra="channels: {http: {allow_hosts: [127.0.0.1]}}\nretention: {inbox: 1h, runs: 48h, every: 1s}\n",
        ).start()
        try:
            assert serve.post_shopify(live_order(1), "d-1").status_code == 200
            serve.wait_for(lambda: len(sink.requests) == 1, "the action")
            serve.wait_for(lambda: serve.count(select(runs).where(runs.c.status == "completed")) == 1, "the run")
            [run_id] = [r["id"] for r in serve.rows(select(runs.c.id))]
            serve.set_time(T0 + timedelta(hours=30))  # bodies go, keys and runs stay
            serve.wait_for(lambda: serve.count(select(inbox).where(func.length(inbox.c.body) == 0)) == 1, "the prune")
            replay = serve.post_shopify(live_order(1), "d-1")  # the store retries the same webhook
            assert replay.status_code == 200
            serve.wait_for(lambda: 'flowrun_events_duplicate_total{source="shopify"} 1.0' in serve.metrics(), "dup")
            serve.set_time(T0 + timedelta(hours=50))
            serve.wait_for(lambda: serve.count(select(runs)) == 0 and serve.count(select(inbox)) == 0, "the prune")
            serve.wait_for(lambda: 'flowrun_pruned_rows{family="runs"} 3.0' in serve.metrics(), "the metrics")
            text = serve.metrics()
            gauge = {x.split()[0]: float(x.split()[1]) for x in text.splitlines() if x.startswith("flowrun_")}
            assert gauge["flowrun_last_prune_timestamp_seconds"] == (T0 + timedelta(hours=50)).timestamp()
            assert gauge["flowrun_database_bytes"] > 0
            shown = serve.cli("show", run_id)
            assert shown.returncode == 2 and f"no run {run_id!r}: pruned on 2026-01-07" in shown.stderr, shown.stderr
        finally:
            assert serve.stop() == 0
    assert len(sink.requests) == 1  # the replay inside the retry window sent nothing


# -- a batch's write: short, by key, and only what is still prunable -------------------------


def _plan(conn: Any, statement: Any) -> str:
    compiled = statement.compile(conn, compile_kwargs={"render_postcompile": True})
    sql, params = str(compiled), compiled.construct_params()
    ordered = [params[name] for name in compiled.positiontup]
    return " ".join(str(row[3]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, tuple(ordered)))


def test_a_batch_write_finds_its_rows_by_key_not_by_scanning_a_status(tmp_path: Path) -> None:
    # with `status IN (...)` beside the keys, SQLite chose the status index and scanned every
    # row of that status once per batch: a 10-row batch held the writer lock ~17 ms
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}", None)
    migrate(engine)
    now = Clock()()
    step = next(s for s in steps(Retention(inbox=timedelta(hours=1)), now) if s.family == "inbox")
    with engine.connect() as conn:
        inbox_plan = _plan(conn, step_write(step, literal_column("rowid"), list(range(10))))
        outbox_plan = _plan(conn, settled_outbox([f"r_{n}" for n in range(10)]))
    assert "INTEGER PRIMARY KEY" in inbox_plan and "inbox_age" not in inbox_plan, inbox_plan
    assert "outbox_run" in outbox_plan and "outbox_due" not in outbox_plan, outbox_plan
    engine.dispose()


def test_a_delivery_set_aside_again_after_it_was_picked_is_not_pruned(rig) -> None:
    r = rig(FORWARD, Retention(ignored=timedelta(hours=1)))
    r.node.deliver("shopify", "products/update", b'{"id": 1}', "d-ignored")
    r.node.settle()
    r.clock.advance(timedelta(days=3))
    step = next(s for s in steps(r.config.retention, r.clock()) if s.family == "ignored" and not s.slim)
    assert r.count(inbox, step.where) == 1  # picked by this step ...
    with r.node.db.begin() as conn:  # ... then a flow that reads the topic came with SIGHUP
        conn.execute(inbox.update().values(status="pending"))
    with r.node.db.begin() as conn:
        rid = literal_column("ctid" if conn.dialect.name == "postgresql" else "rowid")
        picked = select(rid).select_from(inbox).scalar_subquery()  # the write is handed the row
        assert conn.execute(step_write(step, rid, picked)).rowcount == 0
    assert r.count(inbox) == 1


def test_pace_sizes_a_batch_by_the_time_per_row_it_measured() -> None:
    pace = Pace(hold=0.010)
    assert pace.first(500) == 8  # a first batch too small to hold the lock long
    assert pace.next(100, 0.020, 500) == 50  # twice the hold: half the rows
    assert pace.next(100, 0.001, 500) == 200  # far under: at most doubled
    assert pace.next(400, 0.001, 500) == 500  # never above the configured batch
    assert pace.next(10, 5.0, 500) == 1  # a stalled batch: one row at a time, not none
    assert UNPACED.first(500) == 500 and UNPACED.next(7, 9.0, 500) == 500  # the CLI: full batches
