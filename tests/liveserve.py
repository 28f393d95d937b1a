"""A real `flowrun serve` process for the hardening tests: any project file, SQLite or
PostgreSQL, time from a clock file the test moves, signed requests to its port."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.servekit import shopify_headers, stored_deliveries

FLOWRUN = str(Path(sys.executable).parent / "flowrun")
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SECRETS = {"TEST_SHOPIFY_SECRET": "shpss_test", "TEST_CUSTOM_SECRET": "custom_secret"}
SOURCES = """sources:
  shopify:
    webhook_secret: {env: TEST_SHOPIFY_SECRET}
  custom:
    secret: {env: TEST_CUSTOM_SECRET}
    encoding: hex
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServe:
    def __init__(self, tmp_path: Path, database: str, flows: dict[str, str], extra: str = "", limits: str = "") -> None:
        self.dir = tmp_path
        (tmp_path / "flows").mkdir(exist_ok=True)
        for name, text in flows.items():
            (tmp_path / "flows" / name).write_text(text)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database = database
        (tmp_path / "flowrun.yaml").write_text(
            f"database: {database}\nlisten: {{host: 127.0.0.1, port: {self.port}}}\nflows: flows\n"
            f"{SOURCES}limits: {{shutdown_grace: 5s{', ' + limits if limits else ''}}}\n{extra}"
        )
        self.clock_file = tmp_path / "clock"
        self.set_time(T0)
        self.log = tmp_path / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def set_time(self, at: datetime) -> None:
        partial = self.clock_file.with_suffix(".new")
        partial.write_text(at.isoformat())
        partial.replace(self.clock_file)

    def start(self, wrapper: list[str] | None = None, env: dict[str, str] | None = None) -> LiveServe:
        env = {**os.environ, **SECRETS, **(env or {}), "FLOWRUN_TEST_CLOCK_FILE": str(self.clock_file)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*(wrapper or []), FLOWRUN, "serve", "-c", str(self.dir / "flowrun.yaml")],
                env=env,
                stdout=log,
                stderr=log,
            )
        self.wait_for(lambda: self.get("/healthz") == 200, "the service to answer /healthz")
        return self

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FLOWRUN, *args, "-c", str(self.dir / "flowrun.yaml")], capture_output=True, text=True, timeout=60
        )

    def get(self, path: str) -> int | None:
        try:
            return httpx.get(self.url + path, timeout=5).status_code
        except httpx.HTTPError:
            return None

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=30).text

    def health(self) -> tuple[int, dict[str, Any]]:
        response = httpx.get(self.url + "/healthz", timeout=30)
        return response.status_code, dict(response.json())

    def count(self, query: Any) -> int:
        from sqlalchemy import func, select

        from flowrun.state.database import make_engine

        engine = make_engine(self.database)
        try:
            with engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar() or 0)
        finally:
            engine.dispose()

    def stored(self) -> int:
        return stored_deliveries(self.database)

    def rows(self, query: Any) -> list[dict[str, Any]]:
        from flowrun.state.database import make_engine

        engine = make_engine(self.database)
        try:
            with engine.connect() as conn:
                return [dict(r) for r in conn.execute(query).mappings()]
        finally:
            engine.dispose()

    def post_shopify(self, body: bytes, delivery: str, topic: str = "orders/create", **headers: str) -> httpx.Response:
        return httpx.post(
            f"{self.url}/webhooks/shopify",
            content=body,
            headers={**shopify_headers(body, topic, delivery), **headers},
            timeout=30,
        )

    def post_custom(self, payload: Any, raw: bytes | None = None) -> httpx.Response:
        body = raw if raw is not None else json.dumps(payload).encode()
        signature = hmac.new(b"custom_secret", body, hashlib.sha256).hexdigest()
        return httpx.post(
            f"{self.url}/webhooks/custom", content=body, headers={"X-Flowrun-Signature": signature}, timeout=30
        )

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Wait for the other process to do its work (never for a flow's delay)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.tail()}")
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=30)


def order(n: int, email: str | None = None) -> bytes:
    email = email or f"c{n}@example.com"
    return json.dumps(
        {
            "id": n,
            "email": email,
            "total_price": "10.00",
            "currency": "USD",
            "created_at": "2026-01-05T09:00:00Z",
            "customer": {"id": n, "email": email},
        }
    ).encode()
