"""100,000 pending waits in `flowrun serve`, printed (not asserted).

Builds a state database holding 100,000 runs parked on a `wait`, 10,000 of them due at the
same instant T, then starts `flowrun serve` on it with a test clock set just before T and
reports: database size, start-up time to a healthy /healthz, resident memory, and how long
after the clock reaches T the 10,000 due timers have fired (p50/p99/last, wall clock).

Target (issue 3): p99 lateness under 1 s when 10,000 timers fall due at once.
Baseline in the same run: the time the database needs just to read those 10,000 due rows.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from common import ROOT, family, report
from flowrun.state.tables import make_engine, migrate, reading, runs
from serve_ingest import free_port
from sqlalchemy import func, insert, select

from flowrun.dryrun.session import load_all_flows
from flowrun.engine import engine as pure
from flowrun.events import Event
from flowrun.state import codec

PENDING = int(os.environ.get("BENCH_PENDING", "100000"))
DUE_AT_ONCE = int(os.environ.get("BENCH_DUE", "10000"))
T = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
FLOW = "flow: later\non: custom.signup\nsteps:\n  - wait: 1h\n  - log: {message: 'woke {{ customer.email }}'}\n"


def build(folder: Path) -> str:
    (folder / "flows").mkdir()
    (folder / "flows/f.yaml").write_text(FLOW)
    [flow] = load_all_flows([folder / "flows"])
    url = f"sqlite:///{folder / 'state.db'}"
    db = make_engine(url)
    migrate(db)
    rows = []
    for n in range(PENDING):
        started = T - timedelta(hours=1) if n < DUE_AT_ONCE else T - timedelta(minutes=30) + timedelta(seconds=n)
        event = Event(
            "custom.signup",
            "custom",
            f"e{n}",
            started,
            {"customer": {"email": f"c{n}@example.com"}},
            customer_key=f"email:c{n}@example.com",
        )
        run = pure.start(flow, pure.new_run(flow, event, f"r{n:07d}", started, None), started).run
        rows.append(
            {
                "id": run.id,
                "flow_id": run.flow_id,
                "flow_version": run.flow_version,
                "status": run.status.value,
                "customer_key": run.customer_key,
                "concurrency_key": None,
                "started_at": run.started_at,
                "updated_at": run.updated_at,
                "wake_at": run.wake_at,
                "awaiting": None,
                "state": codec.run_to_json(run),
                "trigger_event": codec.trigger_to_json(run.trigger),
            }
        )
        if len(rows) == 10_000 or n == PENDING - 1:
            with db.begin() as conn:
                conn.execute(insert(runs), rows)
            rows.clear()
    db.dispose()
    return url


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        url = build(folder)
        print(f"built {PENDING:,} waiting runs in {time.perf_counter() - started:.1f} s")
        size = sum(f.stat().st_size for f in folder.glob("state.db*"))

        db = make_engine(url)
        started = time.perf_counter()
        with reading(db) as conn:
            due_rows = conn.execute(select(runs.c.id, runs.c.state).where(runs.c.wake_at <= T)).all()
        read_due = time.perf_counter() - started
        assert len(due_rows) == DUE_AT_ONCE

        clock = folder / "clock"
        clock.write_text((T - timedelta(seconds=1)).isoformat())
        port = free_port()
        (folder / "flowrun.yaml").write_text(
            f"database: {url}\nlisten: {{host: 127.0.0.1, port: {port}}}\nflows: flows\n"
        )
        env = {**os.environ, "FLOWRUN_TEST_CLOCK_FILE": str(clock)}
        launched = time.perf_counter()
        process = subprocess.Popen(
            [str(ROOT / ".venv/bin/flowrun"), "serve", "-c", str(folder / "flowrun.yaml")],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.02)
            startup = time.perf_counter() - launched
            rss = _rss_mib(process.pid)

            def waiting() -> int:
                with reading(db) as conn:
                    count = conn.execute(
                        select(func.count()).select_from(runs).where(runs.c.status == "waiting", runs.c.wake_at <= T)
                    ).scalar()
                return int(count or 0)

            clock.write_text(T.isoformat())
            t0 = time.perf_counter()
            marks: dict[float, float] = {}
            while True:
                left = waiting()
                fired = DUE_AT_ONCE - left
                for share in (0.5, 0.99, 1.0):
                    if share not in marks and fired >= share * DUE_AT_ONCE:
                        marks[share] = time.perf_counter() - t0
                if left == 0 or time.perf_counter() - t0 > 600:
                    break
                time.sleep(0.05)
            rss_after = _rss_mib(process.pid)
        finally:
            process.terminate()
            process.wait()
            db.dispose()

    report("database size with 100k waits", size / 2**20, "MiB", f"({PENDING:,} runs)")
    report("serve start-up to healthy /healthz", startup, "s")
    report("serve resident memory after start (both processes)", rss, "MiB")
    report("serve resident memory after the 10k fired (both)", rss_after, "MiB")
    report("baseline: SELECT the 10k due rows", read_due, "s")
    report("10k due at once: p50 fired after", marks.get(0.5, float("nan")), "s")
    report("10k due at once: p99 fired after", marks.get(0.99, float("nan")), "s", "target < 1 s")
    report("10k due at once: all fired after", marks.get(1.0, float("nan")), "s")


def _rss_mib(pid: int) -> float:
    """Resident memory of serve: its engine process plus its children (the webhook port and
    multiprocessing's resource tracker)."""
    total = 0
    for proc in family(pid):
        for line in Path(f"/proc/{proc}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


if __name__ == "__main__":
    main()
