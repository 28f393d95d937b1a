"""1, 2 and 3 `flowrun serve` instances on one PostgreSQL database, printed (not asserted).

The end-to-end load of serve_e2e.py (4 KB order → condition → POST to a local sink, 32
connections), spread round-robin over the instances' ports, then the drain. Each size gets a
database of its own and a baseline phase next to it (the sink's bare endpoint). Printed: webhooks
accepted/s, actions/s sustained (load + drain), CPU per delivered action of each instance and of
the PostgreSQL server, and what the server's sessions were waiting on while active (sampled
from pg_stat_activity every 0.25 s: CPU, Lock, LWLock, IO, Client...), which says what limits it.

BENCH_DATABASE=postgresql://… (default: $FLOWRUN_TEST_POSTGRES_URL), BENCH_PGDATA=<data dir>
to count the server's CPU (its postmaster.pid), BENCH_INSTANCES=1,2,3, BENCH_SECONDS (10).
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import report
from loadgen import flow, free_port, load_average, parts, project, start_serve, start_sink, stop
from serve_e2e import Round, backlog_reader, baseline, flowrun_round, print_round, reset
from sqlalchemy import func, select, text

from flowrun.state.database import make_engine
from flowrun.state.schema import partitions

SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
SIZES = [int(n) for n in os.environ.get("BENCH_INSTANCES", "1,2,3").split(",")]


def server_pids() -> dict[str, int]:
    """The PostgreSQL server's processes (postmaster and its children), when BENCH_PGDATA names it."""
    data = os.environ.get("BENCH_PGDATA") or os.environ.get("FLOWRUN_PGDATA")
    if not data or not (Path(data) / "postmaster.pid").exists():
        return {}
    master = int((Path(data) / "postmaster.pid").read_text().split()[0])
    found = {"postgres": master}
    for entry in Path("/proc").iterdir():  # every child is called postgres: by pid
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == master:
                found[f"postgres-{entry.name}"] = int(entry.name)
    return found


class Waits:
    """What active sessions wait on, sampled from pg_stat_activity."""

    def __init__(self, url: str) -> None:
        self.db = make_engine(url)
        self.counts: collections.Counter[str] = collections.Counter()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        query = text(
            "SELECT coalesce(wait_event_type, 'CPU') || ':' || coalesce(wait_event, '-'), count(*)"
            " FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()"
            " AND datname = current_database() GROUP BY 1"
        )
        while self.running:
            with self.db.connect() as conn:
                for what, n in conn.execute(query):
                    self.counts[what] += n
            time.sleep(0.25)

    def stop(self) -> str:
        self.running = False
        self.thread.join()
        self.db.dispose()
        total = sum(self.counts.values()) or 1
        return ", ".join(f"{what} {n / total:.0%}" for what, n in self.counts.most_common(6))


STATS = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted", "tup_updated", "tup_deleted")


def db_stats(url: str) -> dict[str, int]:
    """The server's counters for this database (transactions, rows read and written)."""
    db = make_engine(url)
    with db.connect() as conn:
        row = conn.execute(
            text(f"SELECT {', '.join(STATS)} FROM pg_stat_database WHERE datname = current_database()")
        ).one()
    db.dispose()
    return dict(zip(STATS, (int(v) for v in row), strict=True))


def owners(url: str) -> int:
    db = make_engine(url)
    with db.connect() as conn:
        n = conn.execute(select(func.count(func.distinct(partitions.c.owner)))).scalar()
    db.dispose()
    return int(n or 0)


def size(
    n: int, url: str, folder: Path, sink_port: int, sink_pid: int, first: int
) -> tuple[Round, str, dict[str, float]]:
    reset(url)
    ports = [free_port() for _ in range(n)]
    serves = []
    try:
        for port in ports:
            serves.append(start_serve(project(folder, url, port, flow(sink_port)), port))
        deadline = time.monotonic() + 120
        while owners(url) < n and time.monotonic() < deadline:  # the partitions spread over the engines
            time.sleep(0.2)
        pids: dict[str, int] = {}
        for k, serve in enumerate(serves):
            pids.update({f"{'abc'[k]}.{name}": pid for name, pid in parts(serve.pid).items()})
        server = server_pids()
        pids.update(server)
        base, base_cpu = baseline(sink_port, sink_pid, SECONDS)
        waits = Waits(url)
        time.sleep(0.6)  # pg_stat_database is updated by the backends at most every 0.5 s
        before = db_stats(url)
        result = flowrun_round(ports, {**pids, "sink": sink_pid}, sink_port, backlog_reader(url), first, SECONDS)
        time.sleep(0.6)
        after = db_stats(url)
        waited = waits.stop()
        per = {k: (after[k] - before[k]) / max(result.delivered, 1) for k in STATS}
        waited += "\n  per delivered action: " + ", ".join(f"{k} {v:.1f}" for k, v in per.items())
        result.baseline, result.baseline_cpu_us = base, base_cpu
    finally:
        for serve in serves:
            stop(serve)
    per_instance: dict[str, float] = collections.defaultdict(float)
    for name, spent in result.cpu_s.items():
        if name.startswith("postgres"):
            per_instance["postgres server"] += spent
        elif "." in name:
            per_instance[f"instance {name.split('.')[0]}"] += spent
    return result, waited, dict(per_instance)


def main() -> None:
    url = os.environ.get("BENCH_DATABASE") or os.environ.get("FLOWRUN_TEST_POSTGRES_URL")
    if not url:
        sys.exit("set BENCH_DATABASE or FLOWRUN_TEST_POSTGRES_URL to a PostgreSQL database this benchmark may empty")
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sink_port = free_port()
        sink = start_sink(folder, sink_port)
        try:
            for k, n in enumerate(SIZES):
                r, waited, per_instance = size(n, url, folder, sink_port, sink.pid, 10**7 * (k + 1))
                print(f"==== {n} instance(s) on PostgreSQL")
                print_round(k + 1, r, SECONDS)
                for name, spent in sorted(per_instance.items()):
                    report(f"  CPU per delivered action: {name}", spent / max(r.delivered, 1) * 1e6, "us")
                print(f"  server sessions, while active, were: {waited}")
                sys.stdout.flush()
                summary.append((n, r))
        finally:
            stop(sink)
    print(f"== PostgreSQL instances, {SECONDS:g} s of load each ({load_average()})")
    for n, r in summary:
        sustained = r.delivered / (SECONDS + r.drain_s)
        report(f"{n} instance(s): sustained actions/s", sustained, "act/s", f"{sustained / r.baseline:.3f} x baseline")
    first = summary[0][1]
    one = first.delivered / (SECONDS + first.drain_s) / first.baseline
    for n, r in summary[1:]:
        ratio = r.delivered / (SECONDS + r.drain_s) / r.baseline / one
        report(f"{n} instance(s) / 1 instance, against each one's baseline", ratio, "x")


if __name__ == "__main__":
    main()
