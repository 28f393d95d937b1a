"""What the serve benchmarks share: the webhook load generator, the sink, `flowrun serve`
started on a project folder, and CPU per process read from /proc (by the parts' names)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from common import ROOT

CONCURRENCY = int(os.environ.get("BENCH_CONNECTIONS", "32"))
SECRET = "bench-secret"
PYTHON = str(ROOT / ".venv/bin/python")
FLOWRUN = str(ROOT / ".venv/bin/flowrun")
_ORDER = json.loads((ROOT / "examples/events/shopify/orders/create.json").read_bytes())
_ORDER["note"] = "x" * max(0, 4096 - len(json.dumps(_ORDER)))  # the 4 KB order
ORDER = _ORDER

SINK_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
counts = {"sink": 0, "bare": 0}
async def sink(request):
    await request.body()
    counts["sink"] += 1
    return JSONResponse({"ok": True})
async def bare(request):
    await request.body()
    counts["bare"] += 1
    return JSONResponse({"status": "accepted"})
async def seen(request):
    return JSONResponse(counts)
app = Starlette(routes=[
    Route("/sink", sink, methods=["POST"]),
    Route("/webhooks/shopify", bare, methods=["POST"]),
    Route("/count", seen),
])
"""


def flow(sink_port: int) -> str:
    return (
        "flow: forward\non: order.created\nif: order.total_price > 0\nsteps:\n"
        f"  - http: {{url: 'http://127.0.0.1:{sink_port}/sink', json: {{order: '{{{{ order.id }}}}'}}}}\n"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def load_average() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Load:
    """Webhooks sent over CONCURRENCY keep-alive connections spread over `ports` (round-robin)."""

    ports: Sequence[int]
    first: int = 0  # order numbers start here (each request is a distinct order and customer)
    accepted: int = 0
    refused: int = 0
    latencies: list[float] = field(default_factory=list)

    def body(self, n: int) -> bytes:
        customer = {**ORDER["customer"], "email": f"c{n}@example.com", "id": 10**15 + n}
        order = {**ORDER, "id": 10**12 + n, "order_number": 10**6 + n, "email": f"c{n}@example.com"}
        return json.dumps({**order, "customer": customer}).encode()

    async def run(self, seconds: float) -> None:
        """Raw asyncio HTTP/1.1: httpx's async pool tops out near 200 req/s under 32 tasks here
        (encode/httpx#3215), which would measure the client."""
        deadline = time.perf_counter() + seconds
        counter = iter(range(self.first, 10**12))
        ports = [self.ports[c % len(self.ports)] for c in range(CONCURRENCY)]
        await asyncio.gather(*(self._connection(port, deadline, counter) for port in ports))

    async def _connection(self, port: int, deadline: float, counter: object) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            n = next(counter)  # type: ignore[call-overload]
            body = self.body(n)
            signature = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
            head = (
                f"POST /webhooks/shopify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"X-Shopify-Topic: orders/create\r\nX-Shopify-Hmac-Sha256: {signature}\r\n"
                f"X-Shopify-Webhook-Id: bench-{n}\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            start = time.perf_counter()
            writer.write(head.encode() + body)
            await writer.drain()
            status_and_headers = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in status_and_headers.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            self.latencies.append(time.perf_counter() - start)
            if status_and_headers.startswith(b"HTTP/1.1 200"):
                self.accepted += 1
            else:
                self.refused += 1
        writer.close()


def pct(values: list[float], p: int) -> float:
    """The p-th percentile in milliseconds."""
    return statistics.quantiles(values, n=100)[p - 1] * 1000 if len(values) > 100 else float("nan")


def start_sink(folder: Path, port: int) -> subprocess.Popen[bytes]:
    (folder / "sink.py").write_text(SINK_APP)
    process = subprocess.Popen(
        [PYTHON, "-m", "uvicorn", "sink:app", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=folder,
    )
    wait_up(f"http://127.0.0.1:{port}/count")
    return process


_CLIENT = httpx.Client(timeout=5)  # one client: a new one per call costs ~15 ms of CPU (its SSL context)


def sink_counts(port: int) -> dict[str, int]:
    return dict(_CLIENT.get(f"http://127.0.0.1:{port}/count").json())


def project(folder: Path, database: str, port: int, flows: str, concurrency: int = 64) -> Path:
    (folder / "flows").mkdir(parents=True, exist_ok=True)
    (folder / "flows" / "f.yaml").write_text(flows)
    config = folder / f"flowrun-{port}.yaml"
    config.write_text(
        f"database: {database}\nlisten: {{host: 127.0.0.1, port: {port}}}\nflows: flows\n"
        "sources:\n  shopify:\n    webhook_secret: {env: BENCH_SECRET}\n"
        f"limits: {{dispatch_concurrency: {concurrency}}}\n"
        "channels: {http: {allow_hosts: [127.0.0.1]}}\n"
    )
    return config


def start_serve(config: Path, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [FLOWRUN, "serve", "-c", str(config)],
        env={**os.environ, "BENCH_SECRET": SECRET, **(env or {})},
        stderr=None if os.environ.get("BENCH_LOGS") else subprocess.DEVNULL,
    )
    profile(process.pid)
    wait_up(f"http://127.0.0.1:{port}/healthz", 60)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def parts(pid: int) -> dict[str, int]:
    """serve's processes by name: the supervisor and its children (flowrun-port, -engine, -sender)."""
    found = {"supervisor": pid}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                try:
                    name = (entry / "comm").read_text().strip()
                except OSError:
                    continue
                found[name.removeprefix("flowrun-")] = int(entry.name)
    return found


def cpu(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each named process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in pids.items():
        fields = _stat(pid)
        out[name] = (int(fields[11]) + int(fields[12])) / tick if fields else 0.0
    return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def profile(pid: int) -> None:
    """BENCH_PYSPY=<folder>: py-spy records each part (its own CPU, --gil) until it exits."""
    folder = os.environ.get("BENCH_PYSPY")
    if not folder:
        return
    found: dict[str, int] = {}
    while not {"port", "engine", "sender"} <= found.keys():
        found = parts(pid)
        time.sleep(0.01)
    for name in ("port", "engine", "sender"):
        out = f"{folder}/{name}-{pid}.txt"
        subprocess.Popen(["py-spy", "record", "--gil", "-r", "200", "-f", "raw", "-o", out, "-p", str(found[name])])
