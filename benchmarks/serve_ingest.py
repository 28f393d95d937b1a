"""Serve throughput, printed (not asserted).

1. bare: a Starlette endpoint on uvicorn that answers 200 and does nothing (the issue's
   baseline), and a plain ASGI one (no framework: flowrun's webhook path has none either);
2. ingest: `flowrun serve` with durable ingest (signature, parse, group commit, 2xx) and no
   flow reading orders;
(end to end, a flow POSTing every order to a sink: serve_e2e.py).

Bare and ingest take turns, ROUNDS times, all three servers up throughout: this machine's
speed drifts by a fifth from minute to minute, and a ratio of neighbouring phases drifts less.

Target (issue 3): ingest >= 0.5 x bare. The same asyncio load generator drives every phase.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from common import ROOT, family, report
from loadgen import CONCURRENCY, SECRET, Load, pct

SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PYTHON = str(ROOT / ".venv/bin/python")

BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
async def hook(request):
    await request.body()
    return JSONResponse({"status": "accepted"})
app = Starlette(routes=[Route("/webhooks/shopify", hook, methods=["POST"])])
"""
RAW_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    body = b'{"status": "accepted"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str) -> None:
    for _ in range(200):
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def load(port: int, seconds: float) -> tuple[int, list[float]]:
    """Signed orders over keep-alive connections (loadgen.Load): accepted, latencies."""
    sent = Load([port])
    await sent.run(seconds)
    return sent.accepted, sent.latencies


def start_app(source: str, port: int, folder: Path, name: str) -> subprocess.Popen[bytes]:
    (folder / f"{name}.py").write_text(source)
    process = subprocess.Popen(
        [PYTHON, "-m", "uvicorn", f"{name}:app", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=folder,
    )
    wait_up(f"http://127.0.0.1:{port}/")
    return process


def start_flowrun(folder: Path, port: int, flows: str) -> subprocess.Popen[bytes]:
    (folder / "flows").mkdir(exist_ok=True)
    for f in (folder / "flows").glob("*.yaml"):
        f.unlink()
    if flows:
        (folder / "flows" / "f.yaml").write_text(flows)
    else:
        (folder / "flows" / "f.yaml").write_text("flow: idle\non: custom.never\nsteps:\n  - log: {message: x}\n")
    db = folder / f"state-{port}.db"
    (folder / "flowrun.yaml").write_text(
        f"database: sqlite:///{db}\nlisten: {{host: 127.0.0.1, port: {port}}}\nflows: flows\n"
        "sources:\n  shopify:\n    webhook_secret: {env: BENCH_SECRET}\nlimits: {dispatch_concurrency: 64}\n"
        "channels: {http: {allow_hosts: [127.0.0.1]}}\n"
    )
    env = {**os.environ, "BENCH_SECRET": SECRET}
    process = subprocess.Popen(
        [str(ROOT / ".venv/bin/flowrun"), "serve", "-c", str(folder / "flowrun.yaml")],
        env=env,
        stderr=None if os.environ.get("BENCH_LOGS") else subprocess.DEVNULL,
    )
    wait_up(f"http://127.0.0.1:{port}/healthz")
    return process


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (serve's webhook port)."""
    ticks = sum(int(fields[11]) + int(fields[12]) for fields in family(pid).values())
    return ticks / os.sysconf("SC_CLK_TCK")


def measured_load(port: int, seconds: float, *pids: int) -> tuple[int, list[float], list[float]]:
    """The load, plus CPU seconds spent during it: the load generator first, then each pid."""
    before = [cpu_seconds(pid) for pid in pids]
    own = time.process_time()
    done, latencies = asyncio.run(load(port, seconds))
    spent = [time.process_time() - own] + [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
    return done, latencies, spent


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ports = {name: free_port() for name in ("bare", "raw", "ingest")}
        servers = {
            "bare": start_app(BARE_APP, ports["bare"], folder, "bare"),
            "raw": start_app(RAW_APP, ports["raw"], folder, "raw"),
            "ingest": start_flowrun(folder, ports["ingest"], ""),
        }
        rounds: list[dict[str, tuple[int, list[float], list[float]]]] = []
        for _ in range(ROUNDS):
            rounds.append({name: measured_load(ports[name], SECONDS, servers[name].pid) for name in servers})
        for server in servers.values():
            server.terminate()
            server.wait()

    print(f"{CONCURRENCY} concurrent connections, {SECONDS:g} s per phase, 4 KB Shopify order body")
    rate = {name: [r[name][0] / SECONDS for r in rounds] for name in ("bare", "raw", "ingest")}
    labels = {"bare": "bare Starlette endpoint", "raw": "bare plain-ASGI endpoint", "ingest": "durable ingest"}
    for name, label in labels.items():
        each = " / ".join(f"{v:,.0f}" for v in rate[name])
        report(f"{label}: requests/s, median", statistics.median(rate[name]), "req/s", each)
    to_bare = [i / b for i, b in zip(rate["ingest"], rate["bare"], strict=True)]
    to_raw = [i / r for i, r in zip(rate["ingest"], rate["raw"], strict=True)]
    each = ", ".join(f"{v:.2f}" for v in to_bare)
    report("ratio ingest / bare Starlette, median", statistics.median(to_bare), "x", f"target >= 0.5; {each}")
    each = ", ".join(f"{v:.2f}" for v in to_raw)
    report("ratio ingest / bare plain ASGI, median", statistics.median(to_raw), "x", each)
    ingest_lat = [x for r in rounds for x in r["ingest"][1]]
    report("durable ingest: p50 / p99 latency", pct(ingest_lat, 50), "ms", f"p99 {pct(ingest_lat, 99):.1f} ms")
    print("CPU per request during the load (2 cores here, shared by every process):")
    for name in ("bare", "raw", "ingest"):
        done = sum(r[name][0] for r in rounds)
        gen, serving = (sum(r[name][2][k] for r in rounds) / done * 1e6 for k in (0, 1))
        report(f"  {name}: load generator / server", gen, "us", f"/ {serving:.0f} us")


if __name__ == "__main__":
    main()
