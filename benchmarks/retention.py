"""Retention under load, printed (not asserted): a real `flowrun serve` on SQLite takes signed
Shopify orders over HTTP, a flow with a condition POSTs each to a local sink; retention keeps
runs 48 h (the floor), inbox bodies and ignored deliveries 1 h, and the leader prunes every 2 s
on the test clock ($FLOWRUN_TEST_CLOCK_FILE), which each round moves 50 h on.

Per round: BENCH_RUNS / BENCH_ROUNDS orders (default 100,000 / 4) as fast as serve takes them,
drained to the sink; a probe load of PROBE_SECONDS without a prune (open loop, at BENCH_PROBE_SHARE
of the rate round 1 sustained); then the clock moves past the windows and the same probe runs
while the leader prunes the round. Printed: database size before and after each prune,
bytes per kept run, the size across rounds, webhook p99 during a prune against p99 without one
(target within 20 %), and bytes per run stored as main stored them (text JSON) against now
(compressed run state and trigger), measured on the same rows.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import sqlite3
import subprocess
import tempfile
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from common import ROOT, report
from serve_ingest import free_port, pct, start_app, wait_up

RUNS = int(os.environ.get("BENCH_RUNS", "100000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
BATCH = int(os.environ.get("BENCH_BATCH", "500"))  # rows per prune transaction (retention.batch)
PROBE_SECONDS = float(os.environ.get("BENCH_PROBE_SECONDS", "15"))
SNAPSHOT = os.environ.get("BENCH_SNAPSHOT")  # a file: the database before the first prune, to profile one offline
# the probes come at this share of the rate serve sustained in round 1 (orders in, actions
# out at the sink), in an open loop: the question is what a prune does to a webhook's wait,
# not how throughput is shared at saturation
PROBE_SHARE = float(os.environ.get("BENCH_PROBE_SHARE", "0.5"))
PROBE_RATE = float(os.environ.get("BENCH_PROBE_RATE", "0"))  # requests/s instead: runs compared like for like
CONCURRENCY = 32
SECRET = "bench-secret"
ORDER = json.loads((ROOT / "examples/events/shopify/orders/create.json").read_bytes())
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SINK_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
count = 0
async def hook(request):
    global count
    await request.body()
    count += 1
    return JSONResponse({"ok": True})
async def seen(request):
    return JSONResponse({"count": count})
app = Starlette(routes=[Route("/sink", hook, methods=["POST"]), Route("/count", seen)])
"""


class Load:
    """Signed Shopify orders/create webhooks on keep-alive connections, each a new order."""

    def __init__(self, port: int) -> None:
        self.port, self.next = port, 0

    async def play(
        self, count: int | None, seconds: float | None, connections: int, rate: float | None = None
    ) -> list[tuple[float, float]]:
        """(wall time sent, latency) of each request: `count` requests, or for `seconds`; as fast
        as the connections go, or at `rate` a second (open loop: a request's latency counts from
        when it was due, so a stall delays the ones behind it too)."""
        out: list[tuple[float, float]] = []
        began = time.perf_counter()
        stop = began + seconds if seconds else None
        last = self.next + count if count is not None else None
        first = self.next

        async def connection() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            while (last is None or self.next < last) and (stop is None or time.perf_counter() < stop):
                n, self.next = self.next, self.next + 1
                due = began + (n - first) / rate if rate else time.perf_counter()
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                body = json.dumps({**ORDER, "id": 10**12 + n, "order_number": 10**6 + n}).encode()
                sig = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
                head = (
                    f"POST /webhooks/shopify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"X-Shopify-Topic: orders/create\r\nX-Shopify-Hmac-Sha256: {sig}\r\n"
                    f"X-Shopify-Webhook-Id: bench-{n}\r\nContent-Length: {len(body)}\r\n\r\n"
                )
                wall, start = time.time(), min(due, time.perf_counter())
                writer.write(head.encode() + body)
                await writer.drain()
                headers = await reader.readuntil(b"\r\n\r\n")
                lines = headers.split(b"\r\n")
                length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
                await reader.readexactly(length)
                if not headers.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(headers.decode(errors="replace"))
                out.append((wall, time.perf_counter() - start))
            writer.close()

        await asyncio.gather(*(connection() for _ in range(connections)))
        return out


def db_bytes(db: Path) -> int:
    """The database file (its WAL is printed apart: it is reused, not shrunk, after a checkpoint)."""
    return db.stat().st_size


def wal_bytes(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute(sql).fetchall()


def last_prune(db: Path) -> dict[str, object] | None:
    """The last prune that removed rows: {at, rows, seconds, wall_started}."""
    rows = query(db, "SELECT value FROM cursors WHERE name = 'prune:last'")
    return json.loads(str(rows[0][0])).get("worked") if rows else None


def payload_per_run(db: Path) -> tuple[float, float]:
    """Bytes per run of what a run stores (inbox body, trigger, state, outbox params and result):
    as main wrote them (JSON text) and as now (state and trigger compressed)."""
    rows = query(
        db,
        "SELECT r.state_z, r.trigger_z, length(o.params) + coalesce(length(o.result), 0)"
        " FROM runs r JOIN outbox o ON o.run_id = r.id LIMIT 2000",
    )
    bodies = query(db, "SELECT avg(length(body)) FROM inbox WHERE length(body) > 0")[0][0] or 0.0
    text = sum(len(zlib.decompress(s)) + len(zlib.decompress(t)) + int(o) for s, t, o in rows) / len(rows)  # type: ignore[arg-type]
    packed = sum(len(s) + len(t) + int(o) for s, t, o in rows) / len(rows)  # type: ignore[arg-type]
    return float(bodies) + text, float(bodies) + packed


def drain(sink: int, total: int, timeout: float = 1800) -> None:
    deadline = time.perf_counter() + timeout
    while httpx.get(f"http://127.0.0.1:{sink}/count").json()["count"] < total:
        if time.perf_counter() > deadline:
            raise RuntimeError("actions did not drain")
        time.sleep(0.2)


def main() -> None:
    per_round = max(RUNS // ROUNDS, 1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sink_port, port = free_port(), free_port()
        sink = start_app(SINK_APP, sink_port, folder, "sink")
        clock = folder / "clock"
        now = START
        clock.write_text(now.isoformat())
        (folder / "flows").mkdir()
        (folder / "flows" / "f.yaml").write_text(
            f"flow: forward\non: order.created\nif: order.total_price > 0\nsteps:\n"
            f"  - http: {{url: 'http://127.0.0.1:{sink_port}/sink', json: {{order: '{{{{ order.id }}}}'}}}}\n"
        )
        db = folder / "state.db"
        (folder / "flowrun.yaml").write_text(
            f"database: sqlite:///{db}\nlisten: {{host: 127.0.0.1, port: {port}}}\nflows: flows\n"
            "sources:\n  shopify:\n    webhook_secret: {env: BENCH_SECRET}\nlimits: {dispatch_concurrency: 64}\n"
            "channels: {http: {allow_hosts: [127.0.0.1]}}\n"
            f"retention: {{runs: 48h, inbox: 1h, ignored: 1h, every: 2s, batch: {BATCH}}}\n"
        )
        env = {**os.environ, "BENCH_SECRET": SECRET, "FLOWRUN_TEST_CLOCK_FILE": str(clock)}
        serve = subprocess.Popen(
            [str(ROOT / ".venv/bin/flowrun"), "serve", "-c", str(folder / "flowrun.yaml")],
            env=env,
            stderr=None if os.environ.get("BENCH_LOGS") else subprocess.DEVNULL,
        )
        try:
            wait_up(f"http://127.0.0.1:{port}/healthz")
            load = Load(port)
            rows: list[tuple[int, int, int, int, float, int]] = []
            wal = 0
            quiet: list[float] = []
            during: list[float] = []
            payload = (0.0, 0.0)
            sustained = rate = 0.0
            started = time.perf_counter()
            for n in range(ROUNDS):
                took = time.perf_counter()
                asyncio.run(load.play(per_round, None, CONCURRENCY))
                drain(sink_port, load.next)
                if n == 0:  # webhook to the sink's answer: what serve sustains end to end
                    sustained = per_round / (time.perf_counter() - took)
                    rate = PROBE_RATE or sustained * PROBE_SHARE
                quiet += [lat for _, lat in asyncio.run(load.play(None, PROBE_SECONDS, CONCURRENCY, rate))]
                drain(sink_port, load.next)
                if n == 0:
                    payload = payload_per_run(db)
                    if SNAPSHOT:
                        with sqlite3.connect(db) as src, sqlite3.connect(SNAPSHOT) as dst:
                            src.backup(dst)
                before, before_runs = db_bytes(db), int(query(db, "SELECT count(*) FROM runs")[0][0])  # type: ignore[call-overload]
                now += timedelta(hours=50)
                clock.write_text(now.isoformat())
                probe: list[tuple[float, float]] = []
                for _ in range(int(600 / PROBE_SECONDS)):  # probes until the prune on the new clock is over
                    probe += asyncio.run(load.play(None, PROBE_SECONDS, CONCURRENCY, rate))
                    done = last_prune(db)
                    if done and done["at"] == {"$time": now.isoformat()}:
                        break
                assert done is not None
                begin, end = float(done["wall_started"]), float(done["wall_started"]) + float(done["seconds"])  # type: ignore[arg-type]
                during += [lat for at, lat in probe if begin <= at <= end]
                drain(sink_port, load.next)
                kept = int(query(db, "SELECT count(*) FROM runs")[0][0])  # type: ignore[call-overload]
                pruned = sum(int(v) for k, v in done["rows"].items() if k != "pages")  # type: ignore[union-attr]
                wal = max(wal, wal_bytes(db))
                rows.append((before_runs, before, db_bytes(db), kept, float(done["seconds"]), pruned))  # type: ignore[arg-type]
            elapsed = time.perf_counter() - started
        finally:
            serve.terminate()
            serve.wait(60)
            sink.terminate()
            sink.wait()

    print(f"{load.next:,} webhooks ({ROUNDS} rounds of {per_round:,} + probes) through flowrun serve, {elapsed:.0f} s;")
    print("retention runs 48h, inbox 1h; the test clock moves 50 h between rounds")
    print(
        f"probes: {rate:,.0f} webhooks/s, open loop ({rate / sustained:.0%} of {sustained:,.0f}/s sustained in round 1)"
    )
    for n, (runs_before, before, after, kept, seconds, pruned) in enumerate(rows, start=1):
        report(f"round {n}: database before prune ({runs_before:,} runs)", before / 1e6, "MB")
        report(f"round {n}: after prune ({kept:,} runs kept, {pruned:,} rows in {seconds:.1f} s)", after / 1e6, "MB")
        report(f"round {n}: bytes per kept run after prune", after / max(kept, 1), "B/run")
    report("largest WAL file seen (reused, not shrunk)", wal / 1e6, "MB")
    per_kept = [after / max(kept, 1) for _, _, after, kept, _, _ in rows]
    # what is kept is what arrived during the prune (the clock had moved on): the size follows it
    report("bytes per kept run, last round / first round", per_kept[-1] / per_kept[0], "x", "bounded: about 1")
    before_text, after_packed = payload
    report("payload per run, stored as main did (text JSON)", before_text, "B/run")
    report("payload per run, now (state and trigger compressed)", after_packed, "B/run")
    p99_quiet, p99_during = pct(quiet, 99), pct(during, 99)
    report("webhook p99 without a prune", p99_quiet, "ms", f"{len(quiet):,} requests")
    report("webhook p99 during a prune", p99_during, "ms", f"{len(during):,} requests")
    report("ratio p99 during / without", p99_during / p99_quiet, "x", "target <= 1.2")


if __name__ == "__main__":
    main()
