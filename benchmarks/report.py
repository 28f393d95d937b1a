"""`flowrun report` over 1,000,000 sends (messages) and 100,000 attributed orders, rows built in
SQL directly. Prints the report's time in-process and as the command, against a baseline
measured in the same run: a bare COUNT(*) over the same messages table. Goal: under 2 s.

    .venv/bin/python benchmarks/report.py [--messages N] [--orders N] [--postgres URL]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, best_of, report
from sqlalchemy import text

from flowrun.attribution.sources import from_sql
from flowrun.state.database import make_engine
from flowrun.state.migrations import migrate
from flowrun.state.schema import attributions, engagements, figures, messages

SQLITE_SERIES = "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n + 1 < :count)"


def _time(dialect: str, offset: str) -> str:
    if dialect == "sqlite":
        return f"datetime('2026-01-01', '+' || ({offset}) || ' seconds')"
    return f"(TIMESTAMPTZ '2026-01-01 00:00:00+00' + ({offset}) * INTERVAL '1 second')"


def build(url: str, count: int, orders: int) -> None:
    engine = make_engine(url)
    migrate(engine)
    dialect = engine.dialect.name
    series = SQLITE_SERIES if dialect == "sqlite" else ""
    source = "s" if dialect == "sqlite" else "generate_series(0, :count - 1) AS s(n)"
    t = lambda offset: _time(dialect, offset)  # noqa: E731
    cast = "" if dialect == "sqlite" else "::text"
    with engine.begin() as conn:
        for table in (messages, engagements, attributions, figures):
            conn.execute(table.delete())
        conn.execute(
            text(
                f"""{series} INSERT INTO messages (message_id, send_key, run_id, flow_id, step, split, arm, channel,
                customer_key, recipient, sent_at, part, delivered_at, opened_at, human_opened_at, last_open_at,
                last_human_open_at, clicked_at, last_click_at, unsubscribed_at, bounced_at, complained_at,
                converted_at, touched_at)
                SELECT 'm' || n{cast}, 'r' || n{cast} || '/steps[0]', 'r' || (n / 2){cast}, 'flow-' || (n % 20){cast},
                  'step-' || (n % 3){cast},
                  CASE WHEN n % 20 < 5 THEN 'steps[0]' END,
                  CASE WHEN n % 20 < 5 THEN (CASE WHEN n % 2 = 0 THEN 'A' ELSE 'B' END) END,
                  CASE n % 3 WHEN 0 THEN 'email' WHEN 1 THEN 'sms' ELSE 'push' END,
                  'email:c' || (n % 200000){cast} || '@example.com', 'c' || (n % 200000){cast} || '@example.com',
                  {t("n * 2")}, n % 64,
                  CASE WHEN n % 10 < 9 THEN {t("n * 2 + 60")} END,
                  CASE WHEN n % 10 < 4 THEN {t("n * 2 + 600")} END,
                  CASE WHEN n % 10 < 3 THEN {t("n * 2 + 600")} END,
                  CASE WHEN n % 10 < 4 THEN {t("n * 2 + 600")} END,
                  CASE WHEN n % 10 < 3 THEN {t("n * 2 + 600")} END,
                  CASE WHEN n % 10 = 0 THEN {t("n * 2 + 900")} END,
                  CASE WHEN n % 10 = 0 THEN {t("n * 2 + 900")} END,
                  CASE WHEN n % 200 = 0 THEN {t("n * 2 + 999")} END,
                  CASE WHEN n % 500 = 7 THEN {t("n * 2 + 99")} END,
                  CASE WHEN n % 1000 = 3 THEN {t("n * 2 + 99")} END,
                  CASE WHEN n % 10 = 0 THEN {t("n * 2 + 3600")} END,
                  {t("n * 2 + 900")}
                FROM {source}"""
            ),
            {"count": count},
        )
        conn.execute(
            text(
                f"""{series} INSERT INTO attributions (order_key, order_id, customer_key, ordered_at, amount,
                amount_micros, currency, message_id, run_id, flow_id, step, split, arm, channel, touch, touched_at)
                SELECT 'shopify:' || n{cast}, n{cast}, 'email:c' || (n * 10 % 200000){cast} || '@example.com',
                  {t("n * 20 + 3600")}, '19.99', 19990000 + (n % 100) * 10000,
                  CASE WHEN n % 4 = 0 THEN 'USD' ELSE 'EUR' END,
                  'm' || (n * 10){cast}, 'r' || (n * 5){cast}, 'flow-' || (n * 10 % 20){cast},
                  'step-' || (n * 10 % 3){cast},
                  CASE WHEN n * 10 % 20 < 5 THEN 'steps[0]' END, CASE WHEN n * 10 % 20 < 5 THEN 'A' END,
                  CASE n * 10 % 3 WHEN 0 THEN 'email' WHEN 1 THEN 'sms' ELSE 'push' END, 'opened', {t("n * 20 + 600")}
                FROM {source}"""
            ),
            {"count": orders},
        )
        conn.execute(
            text(
                f"""{series} INSERT INTO engagements (event_id, provider, kind, message_id, recipient, occurred_at,
                machine, send_key) SELECT 'pm:' || n{cast}, 'postmark', 'clicked', 'unknown-' || n{cast},
                'x@example.com', {t("n")}, 0, NULL FROM {source}"""
            ),
            {"count": 1000},
        )
        # The counters the runtime keeps as these rows change (flowrun.attribution.tie), built here
        # at once from the rows themselves.
        day = "substr(sent_at, 1, 10)" if dialect == "sqlite" else "to_char(sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        conn.execute(
            text(
                f"""INSERT INTO figures (flow_id, step, split, arm, channel, day, currency, recipients, delivered,
                opened, opened_human, clicked, unsubscribed, bounced, complained, converted, orders, revenue_micros,
                arm_runs, arm_converted)
                SELECT flow_id, step, coalesce(split, ''), coalesce(arm, ''), channel, {day}, '', count(*),
                  count(delivered_at), count(opened_at), count(human_opened_at), count(clicked_at),
                  count(unsubscribed_at), count(bounced_at), count(complained_at), count(converted_at), 0, 0, 0, 0
                FROM messages GROUP BY 1, 2, 3, 4, 5, 6"""
            )
        )
        conn.execute(
            text(
                f"""INSERT INTO figures (flow_id, step, split, arm, channel, day, currency, recipients, delivered,
                opened, opened_human, clicked, unsubscribed, bounced, complained, converted, orders, revenue_micros,
                arm_runs, arm_converted)
                SELECT flow_id, '', split, coalesce(arm, ''), '', {day}, '', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                  count(*), count(converted_at)
                FROM messages WHERE split IS NOT NULL GROUP BY 1, 3, 4, 6"""
            )
        )
        ordered = day.replace("sent_at", "ordered_at")
        conn.execute(
            text(
                f"""INSERT INTO figures (flow_id, step, split, arm, channel, day, currency, recipients, delivered,
                opened, opened_human, clicked, unsubscribed, bounced, complained, converted, orders, revenue_micros,
                arm_runs, arm_converted)
                SELECT flow_id, step, coalesce(split, ''), coalesce(arm, ''), channel, {ordered}, currency,
                  0, 0, 0, 0, 0, 0, 0, 0, 0, count(*), sum(amount_micros), 0, 0
                FROM attributions GROUP BY 1, 2, 3, 4, 5, 6, 7"""
            )
        )
        if dialect == "postgresql":
            conn.execute(text("ANALYZE messages; ANALYZE attributions; ANALYZE engagements; ANALYZE figures"))
    engine.dispose()


def measure(url: str, label: str, count: int, orders: int) -> None:
    started = time.perf_counter()
    build(url, count, orders)
    report(f"{label}: build {count:,} messages + {orders:,} orders in SQL", time.perf_counter() - started, "s")
    engine = make_engine(url)
    with engine.connect() as conn:
        found = from_sql(conn)
        assert sum(f.counts["recipients"] for _, f in found.flows) == count
        assert sum(f.orders for _, f in found.flows) == orders
        baseline = best_of(lambda: conn.execute(text("SELECT count(*) FROM messages")).scalar())
        grouped = best_of(lambda: from_sql(conn))
        cpu_start = time.process_time()
        from_sql(conn)
        grouped_cpu = time.process_time() - cpu_start
        since = best_of(lambda: from_sql(conn, flow="flow-3"))
        rows = conn.execute(text("SELECT count(*) FROM figures")).scalar()
        started = time.perf_counter()
        conn.execute(
            text(
                "SELECT flow_id, step, split, arm, channel, count(*), count(opened_at) FROM messages"
                " GROUP BY 1, 2, 3, 4, 5"
            )
        ).all()
        recount = time.perf_counter() - started
    engine.dispose()
    report(f"{label}: baseline COUNT(*) over messages", baseline, "s")
    report(
        f"{label}: (a GROUP BY over the messages instead, once)", recount, "s", f"x{recount / baseline:.1f} baseline"
    )
    report(f"{label}: counter rows the report reads", float(rows or 0), "rows")
    report(f"{label}: report figures in-process (all flows)", grouped, "s", f"x{grouped / baseline:.1f} baseline")
    report(f"{label}: report figures in-process (all flows, CPU)", grouped_cpu, "s")
    report(f"{label}: report figures in-process (--flow flow-3)", since, "s", f"x{since / baseline:.1f} baseline")
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder) / "flowrun.yaml"
        project.write_text(f"database: {url}\n")
        command = [str(Path(sys.executable).parent / "flowrun"), "report", "-c", str(project), "--format", "json"]
        runs_wall, runs_cpu = _command([command[0], "runs", "-c", str(project), "--limit", "1"])
        json_wall, json_cpu = _command(command)
        text_wall, text_cpu = _command(command[:-2])
    report(f"{label}: baseline `flowrun runs --limit 1` (process, wall)", runs_wall, "s")
    report(f"{label}: baseline `flowrun runs --limit 1` (process, CPU)", runs_cpu, "s")
    report(f"{label}: `flowrun report --format json` (process, wall)", json_wall, "s", "goal < 2 s")
    report(f"{label}: `flowrun report --format json` (process, CPU)", json_cpu, "s")
    report(f"{label}: `flowrun report` rich tables (process, wall)", text_wall, "s", "goal < 2 s")
    report(f"{label}: `flowrun report` rich tables (process, CPU)", text_cpu, "s")


def _command(command: list[str], repeat: int = 3) -> tuple[float, float]:
    """The fastest of `repeat` runs: wall time, and the CPU time (user + system) the process used
    (on a shared machine the second says what the command costs, the first what a user waits)."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=os.environ)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--postgres", default=os.environ.get("FLOWRUN_TEST_POSTGRES_URL"))
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as folder:
            measure(f"sqlite:///{folder}/report.db", "sqlite", args.messages, args.orders)
    if args.postgres:
        measure(args.postgres, "postgresql", args.messages, args.orders)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
