"""Pending waits in `flowrun serve`, printed (not asserted).

1. 100,000 runs parked on a `wait`, 10,000 of them due at the same instant T: serve starts on a
   test clock just before T, the clock is moved to T, and the lateness of the 10,000 is read
   (wall clock from the move until 50 % / 99 % / all of them have fired).
2. 1,000,000 pending waits: serve's start-up to a healthy /healthz, and each process's resident
   memory after start (and after the due ones fired, in case 1).

The state is built through the current SQL adapters (the runtime's engine makes one real run
per shape, `flowrun.state.runs.run_row` its row; the rest are that row with their own ids,
customer, times and partition), in bulk inserts. Baseline in the same run: reading the 10,000
due rows in one SELECT.

Targets (issue 15): p99 lateness < 1 s (old design: 7.6 s); start-up with 1,000,000 pending
< 10 s, resident memory < 300 MB per process. BENCH_PENDING / BENCH_DUE / BENCH_MILLION=0 change
the sizes or skip case 2.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from common import report
from loadgen import FLOWRUN, cpu, free_port, load_average, parts, profile, rss_mib
from sqlalchemy import func, insert, select

from flowrun.dryrun.session import load_all_flows
from flowrun.engine import engine as pure
from flowrun.events import Event
from flowrun.runtime.records import partition_of
from flowrun.state.database import make_engine, reading
from flowrun.state.migrations import migrate
from flowrun.state.runs import run_row
from flowrun.state.schema import entries, runs

PENDING = int(os.environ.get("BENCH_PENDING", "100000"))
DUE_AT_ONCE = int(os.environ.get("BENCH_DUE", "10000"))
MILLION = int(os.environ.get("BENCH_MILLION", "1000000"))
T = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
FLOW = "flow: later\non: custom.signup\nsteps:\n  - wait: 1h\n  - log: {message: 'woke {{ customer.email }}'}\n"
CHUNK = 20_000


def template(folder: Path, started: datetime) -> dict[str, Any]:
    [flow] = load_all_flows([folder / "flows"])
    event = Event(
        "custom.signup",
        "custom",
        "e0",
        started,
        {"customer": {"email": "c0@example.com"}},
        customer_key="c0@example.com",
    )
    run = pure.start(flow, pure.new_run(flow, event, "r0", started, None), started).run
    return run_row(run)


def build(folder: Path, pending: int, due: int) -> str:
    """`pending` waiting runs in a new database, the first `due` of them waking at T."""
    (folder / "flows").mkdir(exist_ok=True)
    (folder / "flows/f.yaml").write_text(FLOW)
    url = f"sqlite:///{folder / 'state.db'}"
    db = make_engine(url)
    migrate(db)
    base = template(folder, T - timedelta(hours=1))
    rows: list[dict[str, Any]] = []
    entered: list[dict[str, Any]] = []
    with db.begin() as conn:
        for n in range(pending):
            started = T - timedelta(hours=1) if n < due else T - timedelta(minutes=30) + timedelta(seconds=n)
            customer = f"c{n}@example.com"
            rows.append(
                {
                    **base,
                    "id": f"r{n:08d}",
                    "customer_key": customer,
                    "started_at": started,
                    "updated_at": started,
                    "wake_at": started + timedelta(hours=1),
                    "trigger_event": base["trigger_event"]
                    .replace('"id":"e0"', f'"id":"e{n}"')
                    .replace("c0@example.com", customer),
                    "part": partition_of(customer),
                }
            )
            entered.append({"flow_id": "later", "customer_key": customer, "run_id": f"r{n:08d}", "started_at": started})
            if len(rows) == CHUNK or n == pending - 1:
                conn.execute(insert(runs), rows)
                conn.execute(insert(entries), entered)
                rows.clear()
                entered.clear()
    db.dispose()
    return url


def serve(folder: Path, url: str, clock: Path) -> tuple[subprocess.Popen[bytes], int, float]:
    port = free_port()
    (folder / "flowrun.yaml").write_text(f"database: {url}\nlisten: {{host: 127.0.0.1, port: {port}}}\nflows: flows\n")
    launched = time.perf_counter()
    process = subprocess.Popen(
        [FLOWRUN, "serve", "-c", str(folder / "flowrun.yaml")],
        env={**os.environ, "FLOWRUN_TEST_CLOCK_FILE": str(clock)},
        stderr=None if os.environ.get("BENCH_LOGS") else subprocess.DEVNULL,
    )
    profile(process.pid)
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError("serve exited")
        time.sleep(0.02)
    return process, port, time.perf_counter() - launched


def memory(pid: int) -> str:
    return ", ".join(f"{name} {rss_mib(p):.0f}" for name, p in parts(pid).items())


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(60)


def timers() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        url = build(folder, PENDING, DUE_AT_ONCE)
        print(f"built {PENDING:,} waiting runs in {time.perf_counter() - started:.1f} s ({load_average()})")
        size = sum(f.stat().st_size for f in folder.glob("state.db*"))
        db = make_engine(url)
        started = time.perf_counter()
        with reading(db) as conn:
            due_rows = conn.execute(select(runs.c.id, runs.c.state).where(runs.c.wake_at <= T)).all()
        read_due = time.perf_counter() - started
        assert len(due_rows) == DUE_AT_ONCE
        clock = folder / "clock"
        clock.write_text((T - timedelta(seconds=1)).isoformat())
        process, _, startup = serve(folder, url, clock)
        left_query = select(func.count()).select_from(runs).where(runs.c.status == "waiting", runs.c.wake_at <= T)
        try:
            after_start = memory(process.pid)
            named = parts(process.pid)
            before = cpu(named)
            clock.write_text(T.isoformat())
            t0 = time.perf_counter()
            marks: dict[float, float] = {}
            while True:
                with reading(db) as conn:
                    left = int(conn.execute(left_query).scalar() or 0)
                fired = DUE_AT_ONCE - left
                for share in (0.5, 0.99, 1.0):
                    if share not in marks and fired >= share * DUE_AT_ONCE:
                        marks[share] = time.perf_counter() - t0
                if left == 0 or time.perf_counter() - t0 > 600:
                    break
                time.sleep(0.02)
            spent = {name: s - before[name] for name, s in cpu(named).items()}
            after_fired = memory(process.pid)
            loadavg = load_average()
        finally:
            stop(process)
            db.dispose()
    print(f"== {DUE_AT_ONCE:,} timers due at once among {PENDING:,} pending ({loadavg})")
    report(f"database size with {PENDING:,} waits", size / 2**20, "MiB")
    report("serve start-up to healthy /healthz", startup, "s")
    print(f"  resident memory after start, MiB: {after_start}")
    print(f"  resident memory after the due ones fired, MiB: {after_fired}")
    report("baseline: one SELECT of the due rows", read_due, "s")
    report("due at once: 50 % fired after", marks.get(0.5, float("nan")), "s")
    p99 = marks.get(0.99, float("nan"))
    report("due at once: 99 % fired after (p99 lateness)", p99, "s", "target < 1 s (old design: 7.6 s)")
    report("due at once: all fired after", marks.get(1.0, float("nan")), "s")
    report("ratio p99 lateness / baseline SELECT", p99 / read_due, "x")
    per = ", ".join(f"{name} {s / DUE_AT_ONCE * 1e6:.0f}" for name, s in spent.items() if s > 0)
    print(f"  CPU per fired timer until all fired, µs: {per} (the woken runs' log actions included)")
    engine = spent.get("engine", 0.0)
    report("  engine CPU for all of them (the lateness on an idle core)", engine, "s")


def million() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        url = build(folder, MILLION, 0)
        print(f"built {MILLION:,} waiting runs in {time.perf_counter() - started:.1f} s ({load_average()})")
        size = sum(f.stat().st_size for f in folder.glob("state.db*"))
        clock = folder / "clock"
        clock.write_text((T - timedelta(seconds=1)).isoformat())
        process, _, startup = serve(folder, url, clock)
        try:
            time.sleep(2)  # the parts' first rounds
            after = memory(process.pid)
            loadavg = load_average()
        finally:
            stop(process)
    print(f"== {MILLION:,} pending waits ({loadavg})")
    report(f"database size with {MILLION:,} waits", size / 2**20, "MiB")
    report("serve start-up to healthy /healthz", startup, "s", "target < 10 s")
    print(f"  resident memory 2 s after start, MiB: {after} (target < 300 each)")


if __name__ == "__main__":
    timers()
    if MILLION:
        million()
