"""`flowrun serve` end to end, printed (not asserted): a 4 KB Shopify orders/create webhook →
a flow with a condition → an HTTP POST to a local sink, over 32 keep-alive connections.

Each round is a baseline phase (the same load against the sink's bare Starlette endpoint: what
this machine's loopback HTTP costs right now) and then a flowrun phase: the load for
BENCH_SECONDS, then the drain until every accepted webhook's action reached the sink. Rounds
interleave (BENCH_ROUNDS, default 3) because this machine's speed drifts from minute to minute,
and a ratio to the baseline measured next to it drifts less.

Printed per round: webhooks accepted/s, actions delivered/s during the load and sustained
(load + drain), webhook p50/p99, the backlog (accepted - delivered; inbox rows pending; outbox
rows unsent) each second, and CPU per delivered action of each of serve's processes.

Targets (issue 15): sustained ≥ 1,500 actions/s (old design: 295; Node-RED 902; n8n 29),
webhook p99 < 100 ms, a backlog that does not grow; old CPU: ~950 µs per webhook end to end.
BENCH_DATABASE=postgresql://… runs one instance on PostgreSQL instead of SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import report
from loadgen import (
    CONCURRENCY,
    Load,
    cpu,
    flow,
    free_port,
    load_average,
    parts,
    pct,
    project,
    sink_counts,
    start_serve,
    start_sink,
    stop,
)
from sqlalchemy import func, select, text

from flowrun.state.database import make_engine, reading
from flowrun.state.schema import inbox, outbox

SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DRAIN_LIMIT = float(os.environ.get("BENCH_DRAIN_LIMIT", "300"))


@dataclass
class Round:
    baseline: float = 0.0  # requests/s the sink's bare endpoint took
    baseline_cpu_us: float = 0.0  # sink CPU per request
    accepted: int = 0
    refused: int = 0
    during: int = 0  # actions at the sink when the load ended
    delivered: int = 0
    drain_s: float = float("nan")
    latencies: list[float] = field(default_factory=list)
    backlog: list[tuple[float, int, int, int]] = field(default_factory=list)  # t, accepted-delivered, inbox, outbox
    cpu_s: dict[str, float] = field(default_factory=dict)
    loadavg: str = ""


def backlog_reader(url: str) -> Callable[[], tuple[int, int]]:
    db = make_engine(url)
    pending = select(func.count()).select_from(inbox).where(inbox.c.status == "pending")
    unsent = select(func.count()).select_from(outbox).where(outbox.c.status.in_(["pending", "ready", "sending"]))

    def read() -> tuple[int, int]:
        with reading(db) as conn:
            return int(conn.execute(pending).scalar() or 0), int(conn.execute(unsent).scalar() or 0)

    return read


def baseline(sink_port: int, sink_pid: int, seconds: float) -> tuple[float, float]:
    load = Load([sink_port], first=0)
    before = cpu({"sink": sink_pid})["sink"]
    asyncio.run(load.run(seconds))
    spent = cpu({"sink": sink_pid})["sink"] - before
    return load.accepted / seconds, spent / max(load.accepted, 1) * 1e6


def flowrun_round(
    ports: list[int],
    pids: dict[str, int],
    sink_port: int,
    backlog: Callable[[], tuple[int, int]],
    first: int,
    seconds: float,
) -> Round:
    """The load against flowrun, then the drain; `pids` names every process whose CPU counts."""
    result = Round(loadavg=load_average())
    load = Load(ports, first=first)
    start_count = sink_counts(sink_port)["sink"]
    before = cpu(pids)
    own = time.process_time()
    t0 = time.perf_counter()

    async def sample(stop: asyncio.Event) -> None:
        while not stop.is_set():
            delivered = (await asyncio.to_thread(sink_counts, sink_port))["sink"] - start_count
            inbox_n, outbox_n = await asyncio.to_thread(backlog)
            result.backlog.append((time.perf_counter() - t0, load.accepted - delivered, inbox_n, outbox_n))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def phase() -> None:
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(stop))
        await load.run(seconds)
        result.during = sink_counts(sink_port)["sink"] - start_count
        while time.perf_counter() - t0 < seconds + DRAIN_LIMIT:
            result.delivered = (await asyncio.to_thread(sink_counts, sink_port))["sink"] - start_count
            if result.delivered >= load.accepted:
                result.drain_s = time.perf_counter() - t0 - seconds
                break
            await asyncio.sleep(0.1)
        stop.set()
        await sampler

    asyncio.run(phase())
    after = cpu(pids)
    result.cpu_s = {name: after[name] - before[name] for name in pids}
    result.cpu_s["load generator"] = time.process_time() - own
    result.accepted, result.refused, result.latencies = load.accepted, load.refused, load.latencies
    return result


def print_round(n: int, r: Round, seconds: float) -> None:
    total = seconds + r.drain_s
    print(f"-- round {n}  ({r.loadavg}; baseline {r.baseline:,.0f} req/s)")
    report("  webhooks accepted/s", r.accepted / seconds, "req/s", f"{r.refused} refused")
    report("  actions delivered/s during the load", r.during / seconds, "act/s")
    report("  actions delivered/s sustained (load + drain)", r.delivered / total, "act/s", f"drain {r.drain_s:.1f} s")
    report("  webhook p50 / p99", pct(r.latencies, 50), "ms", f"p99 {pct(r.latencies, 99):.1f} ms")
    marks = [b for b in r.backlog if b[0] <= seconds + 0.5]
    trace = "  ".join(f"{t:.0f}s:{d}/{i}/{o}" for t, d, i, o in marks)
    print(f"  backlog during the load (s: accepted-delivered/inbox pending/outbox unsent): {trace}")
    if len(marks) >= 4:
        half = marks[len(marks) // 2 :]
        slope = (half[-1][1] - half[0][1]) / max(half[-1][0] - half[0][0], 1e-9)
        report("  backlog growth over the load's second half", slope, "act/s", "(0 = keeping up)")
    per = {name: s / max(r.delivered, 1) * 1e6 for name, s in r.cpu_s.items() if not name.startswith("postgres-")}
    line = ", ".join(f"{name} {us:.0f}" for name, us in per.items() if name != "postgres")
    print(f"  CPU per delivered action, µs: {line}")
    serve = sum(us for name, us in per.items() if name not in ("sink", "load generator", "postgres"))
    report("  CPU per delivered action, all of serve", serve, "us", "(old design: ~950 µs per webhook)")


def summary(rounds: list[Round], seconds: float, label: str) -> None:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    sustained = [r.delivered / (seconds + r.drain_s) for r in rounds]
    accepted = [r.accepted / seconds for r in rounds]
    during = [r.during / seconds for r in rounds]
    base = [r.baseline for r in rounds]
    lat = [x for r in rounds for x in r.latencies]
    each = lambda vs: " / ".join(f"{v:,.0f}" for v in vs)  # noqa: E731
    print(f"== {label}: medians of {len(rounds)} rounds")
    report("baseline: the sink's bare Starlette endpoint", med(base), "req/s", each(base))
    report("webhooks accepted/s", med(accepted), "req/s", each(accepted))
    report("actions delivered/s during the load", med(during), "act/s", each(during))
    target = f"{each(sustained)}; target ≥ 1,500"
    report("actions delivered/s sustained (load + drain)", med(sustained), "act/s", target)
    ratio = [s / b for s, b in zip(sustained, base, strict=True)]
    report("ratio sustained actions / baseline requests", med(ratio), "x", ", ".join(f"{v:.2f}" for v in ratio))
    ratio = [a / b for a, b in zip(accepted, base, strict=True)]
    report("ratio accepted webhooks / baseline requests", med(ratio), "x", ", ".join(f"{v:.2f}" for v in ratio))
    report("webhook p50 / p99, all rounds", pct(lat, 50), "ms", f"p99 {pct(lat, 99):.1f} ms (target < 100)")
    names = [n for n in rounds[0].cpu_s]
    for name in names:
        us = [r.cpu_s[name] / max(r.delivered, 1) * 1e6 for r in rounds]
        report(f"  CPU per delivered action: {name}", med(us), "us", each(us))
    serve = [
        sum(s for n, s in r.cpu_s.items() if n not in ("sink", "load generator")) / max(r.delivered, 1) * 1e6
        for r in rounds
    ]
    report("  CPU per delivered action: all of serve", med(serve), "us", each(serve))
    report("  baseline: sink CPU per bare request", med([r.baseline_cpu_us for r in rounds]), "us")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = os.environ.get("BENCH_DATABASE") or f"sqlite:///{folder / 'state.db'}"
        if url.startswith("postgresql"):
            reset(url)
        sink_port, port = free_port(), free_port()
        sink = start_sink(folder, sink_port)
        serve = start_serve(project(folder, url, port, flow(sink_port)), port)
        try:
            pids = {**parts(serve.pid), "sink": sink.pid}
            read = backlog_reader(url)
            print(f"{CONCURRENCY} connections, {SECONDS:g} s of load a round, 4 KB orders, {url.split(':')[0]}")
            rounds = []
            for n in range(ROUNDS):
                base, base_cpu = baseline(sink_port, sink.pid, SECONDS)
                r = flowrun_round([port], pids, sink_port, read, 10**7 * (n + 1), SECONDS)
                r.baseline, r.baseline_cpu_us = base, base_cpu
                print_round(n + 1, r, SECONDS)
                rounds.append(r)
                sys.stdout.flush()
        finally:
            stop(serve)
            stop(sink)
        summary(rounds, SECONDS, "serve end to end")


def reset(url: str) -> None:
    """A PostgreSQL database emptied (the benchmark's own: every table of flowrun dropped)."""
    db = make_engine(url)
    with db.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    db.dispose()


if __name__ == "__main__":
    main()
