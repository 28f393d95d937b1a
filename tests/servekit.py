"""Test helpers for serve: databases (SQLite always, PostgreSQL when there is one),
configs, signed requests, a controllable clock, and a real HTTP sink on 127.0.0.1."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowrun.config import Config, Secret
from flowrun.state.database import make_engine
from flowrun.state.migrations import migrate
from flowrun.state.schema import metadata, schema_version

POSTGRES_URL = os.environ.get("FLOWRUN_TEST_POSTGRES_URL")


def database_params() -> list[Any]:
    marks = []
    if not POSTGRES_URL:
        reason = "PostgreSQL tests need FLOWRUN_TEST_POSTGRES_URL (.ci/run starts a server and sets it)"
        if os.environ.get("CI"):
            raise RuntimeError(f"CI must run the PostgreSQL tests: {reason}")
        warnings.warn(f"SKIPPING PostgreSQL: {reason}", stacklevel=1)
        marks = [pytest.mark.skip(reason=reason)]
    return [pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql", marks=marks)]


def database_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    assert POSTGRES_URL
    engine = make_engine(POSTGRES_URL)
    with engine.begin() as conn:  # a clean schema for every test
        metadata.drop_all(conn)
        schema_version.drop(conn, checkfirst=True)
    engine.dispose()
    return POSTGRES_URL


def config(tmp_path: Path, url: str, flows: Path, **overrides: Any) -> Config:
    sources = {
        "shopify": {"webhook_secret": Secret("shpss_test", "S"), "previous_webhook_secret": Secret("shpss_old", "O")},
        "woocommerce": {"webhook_secret": Secret("wc_secret", "W")},
        "custom": {
            "secret": Secret("custom_secret", "C"),
            "encoding": "hex",
            "timestamp_header": "X-Flowrun-Timestamp",
            "tolerance": "5m",
        },
    }
    values: dict[str, Any] = {
        "file": tmp_path / "flowrun.yaml",
        "database": url,
        "flows": flows,
        "sources": sources,
        "channels": {"http": {"allow_hosts": ["127.0.0.1"]}},  # the peers of the tests
    }
    values.update(overrides)
    return Config(**values)


def stored_deliveries(url: str) -> int:
    """Deliveries stored: in the inbox, or acknowledged and still in the port's spool (SQLite).
    The spool is read first: a row moved meanwhile is then in both reads, and counted once."""
    import sqlite3

    from sqlalchemy import select

    from flowrun.state.database import sqlite_path
    from flowrun.state.schema import inbox
    from flowrun.state.spool import spool_path

    found: set[tuple[str, str]] = set()
    path = sqlite_path(url)
    if path is not None and spool_path(path).is_file():
        with contextlib.closing(sqlite3.connect(f"{spool_path(path).as_uri()}?mode=ro", uri=True)) as spool:
            found.update(spool.execute("SELECT source, delivery_id FROM spool"))
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            found.update((s, d) for s, d in conn.execute(select(inbox.c.source, inbox.c.delivery_id)))
    finally:
        engine.dispose()
    return len(found)


def shopify_headers(body: bytes, topic: str, delivery: str, secret: str = "shpss_test") -> dict[str, str]:
    signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": signature,
        "X-Shopify-Webhook-Id": delivery,
        "Content-Type": "application/json",
    }


def woo_headers(body: bytes, topic: str, delivery: str) -> dict[str, str]:
    signature = base64.b64encode(hmac.new(b"wc_secret", body, hashlib.sha256).digest()).decode()
    return {
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Signature": signature,
        "X-WC-Webhook-Delivery-ID": delivery,
        "Content-Type": "application/json",
    }


class Clock:
    def __init__(self, start: datetime = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class Sink:
    """A real HTTP server on 127.0.0.1 that records requests and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict[str, str]]] = []
        self.after_answer: Any = None  # called with the number of requests answered so far
        self._answered = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                sink.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": httpx.Headers(list(self.headers.items())),
                        "body": body,
                    }
                )
                status, headers = sink.script.pop(0) if sink.script else (200, {})
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                payload = json.dumps({"ok": status < 400}).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
                with sink._lock:
                    sink._answered += 1
                    count = sink._answered
                if sink.after_answer is not None:
                    sink.after_answer(count)

            do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 512  # the default 5 resets connections under a burst
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Sink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def migrated(url: str) -> Iterator[Any]:
    engine = make_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()
