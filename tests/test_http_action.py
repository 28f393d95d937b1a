"""The http action against real peers on 127.0.0.1: the network policy (after DNS, on
redirects), secret headers, and errors said as they happened."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from flowrun.actions.base import DeliveryContext, PermanentError, RetryableError
from flowrun.actions.http import Http
from flowrun.config import Secret
from flowrun.netpolicy import GuardedClients, NetPolicy
from flowrun.state.schema import outbox, runs
from tests.liveserve import LiveServe, order
from tests.servekit import Sink


class Peer:
    """An HTTP server on a loopback address; answers from `answer(path) -> (status, headers, body)`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[dict[str, Any]] = []
        self.answer = lambda path: (200, {}, b'{"ok": true}')
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                length = int(self.headers.get("content-length", 0))
                peer.requests.append(
                    {
                        "path": self.path,
                        "headers": httpx.Headers(list(self.headers.items())),
                        "body": self.rfile.read(length),
                    }
                )
                status, headers, body = peer.answer(self.path)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def peers() -> Iterator[tuple[Peer, Peer]]:
    first, second = Peer("127.0.0.1"), Peer("127.0.0.2")
    yield first, second
    first.close()
    second.close()


def deliver(params: dict[str, Any], settings: dict[str, Any] | None = None) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        ctx = DeliveryContext(None, settings or {}, logging.getLogger("test"), 10.0)
        return await Http().deliver(params, "r_1/step", ctx)

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:{port}/x", "loopback"),
        ("http://localhost:{port}/x", "loopback"),  # refused after resolution
        ("http://[::ffff:127.0.0.1]:{port}/x", "loopback"),  # IPv4-mapped
        ("http://0.0.0.0:{port}/x", "unspecified"),
        ("http://127.1:{port}/x", "canonical"),  # legacy short forms are no way around it
        ("http://169.254.169.254/latest/meta-data", "link-local"),  # the cloud metadata service
        ("http://10.1.2.3/x", "private"),
        ("http://[fd00::1]/x", "private"),
        ("http://[64:ff9b::7f00:1]/x", "loopback"),  # NAT64 of 127.0.0.1
    ],
)
def test_the_shops_own_network_is_refused(peers: tuple[Peer, Peer], url: str, kind: str) -> None:
    first, _ = peers
    port = first.url.rsplit(":", 1)[1]
    with pytest.raises(PermanentError, match=f"refused: .*{kind}"):
        deliver({"url": url.format(port=port), "method": "GET"})
    assert first.requests == []


def test_an_allowed_host_is_reached_and_a_redirect_out_of_the_allowance_is_refused(peers: tuple[Peer, Peer]) -> None:
    first, second = peers
    allowed = {"allow_hosts": ["127.0.0.1"]}
    assert deliver({"url": first.url + "/ok", "method": "GET"}, allowed)["status"] == 200
    first.answer = lambda path: (302, {"Location": second.url + "/inside"}, b"")
    with pytest.raises(PermanentError, match=r"refused: 127\.0\.0\.2 is a loopback address"):
        deliver({"url": first.url + "/hop", "method": "GET"}, allowed)
    assert second.requests == []


def test_a_secret_header_is_sent_but_not_across_origins_and_never_echoed(peers: tuple[Peer, Peer]) -> None:
    first, second = peers
    settings = {"allow_hosts": ["127.0.0.0/8"], "secrets": {"API": Secret("tok-s3cr3t-value", "API")}}
    params = {"url": first.url + "/a", "method": "GET", "headers": {"X-Api-Key": {"secret": "API"}, "X-Plain": "p"}}
    first.answer = lambda path: (302, {"Location": "/b"}, b"") if path == "/a" else (200, {}, b"echo tok-s3cr3t-value")
    same = deliver(params, settings)
    assert [r["headers"].get("X-Api-Key") for r in first.requests] == ["tok-s3cr3t-value", "tok-s3cr3t-value"]
    assert same["text"] == "echo ****"
    first.answer = lambda path: (307, {"Location": second.url + "/c"}, b"")
    deliver(params, settings)
    [hop] = second.requests
    assert "X-Api-Key" not in hop["headers"] and hop["headers"]["X-Plain"] == "p"
    assert hop["headers"]["Idempotency-Key"] == "r_1/step"
    with pytest.raises(PermanentError, match="secret 'NOPE' is not declared"):
        deliver({**params, "headers": {"X-Api-Key": {"secret": "NOPE"}}}, settings)
    first.answer = lambda path: (401, {}, b"bad key tok-s3cr3t-value")
    with pytest.raises(PermanentError) as refused:
        deliver(params, settings)
    assert "tok-s3cr3t-value" not in str(refused.value) and "****" in str(refused.value)


def test_a_refused_connection_is_not_reported_as_a_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens once this socket closes
    with pytest.raises(RetryableError) as failed:
        deliver({"url": f"http://127.0.0.1:{closed}/x", "method": "GET"}, {"allow_hosts": ["127.0.0.1"]})
    assert "could not connect" in str(failed.value) and "Connection refused" in str(failed.value)
    assert "timed out" not in str(failed.value)


def test_policy_entries() -> None:
    policy = NetPolicy.allowing(["Internal.Example.", "10.0.0.0/8", "::1"])
    assert policy.refusal("internal.example", "192.168.1.5") is None  # a named host: whatever it resolves to
    assert policy.refusal("x", "10.9.9.9") is None
    assert policy.refusal("x", "::1") is None
    assert policy.refusal("x", "192.168.1.5") is not None
    assert policy.refusal("example.com", "93.184.215.14") is None


SECRET_FLOW = """
flow: notify
on: order.created
steps:
  - http:
      url: "SINK/hook"
      json: {order: "{{ order.id }}"}
      headers: {Authorization: {secret: API}}
"""


def test_a_secret_never_reaches_the_outbox_the_trace_or_flowrun_show(tmp_path: Path) -> None:
    with Sink() as sink:
        extra = "channels:\n  http:\n    allow_hosts: [127.0.0.1]\n    secrets: {API: {env: TEST_API_TOKEN}}\n"
        serve = LiveServe(
            tmp_path,
            f"sqlite:///{tmp_path / 'state.db'}",
            {"f.yaml": SECRET_FLOW.replace("SINK", sink.url)},
            extra=extra,
        )
        serve.start(env={"TEST_API_TOKEN": "Bearer live-t0ken-value"})
        try:
            assert serve.post_shopify(order(5), "d-5").status_code == 200
            serve.wait_for(lambda: len(sink.requests) == 1, "the request at the sink")
            assert sink.requests[0]["headers"]["Authorization"] == "Bearer live-t0ken-value"
            serve.wait_for(lambda: serve.count(select(outbox).where(outbox.c.applied_at.is_not(None))) == 1, "applied")
            [run] = serve.rows(select(runs))
            [action] = serve.rows(select(outbox))
            assert "live-t0ken" not in json.dumps(action["params"]) and "live-t0ken" not in run["state"]
            assert json.loads(action["params"])["headers"] == {"Authorization": {"secret": "API"}}
            shown = serve.cli("show", run["id"])
            assert shown.returncode == 0, shown.stderr
            assert "live-t0ken" not in shown.stdout
        finally:
            assert serve.stop() == 0
        assert "live-t0ken" not in serve.tail()


def test_the_dispatchers_kept_clients_reuse_connections_and_keep_the_policy() -> None:
    """The dispatcher keeps one guarded client per policy (GuardedClients): ten sends to one
    host travel on one kept-alive connection, a cookie one answer set never goes with the next
    send, and the policy still refuses what it refused."""
    connections: list[tuple[str, int]] = []
    paths: list[str] = []
    cookies: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as any provider's API

        def setup(self) -> None:
            super().setup()
            connections.append(self.client_address)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            paths.append(self.path)
            cookies.append(self.headers.get("Cookie"))
            self.send_response(200)
            self.send_header("Set-Cookie", "session=one-shops-session; Path=/")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    async def run() -> list[Any]:
        clients = GuardedClients()
        allowed = DeliveryContext(None, {"allow_hosts": ["127.0.0.1"]}, logging.getLogger("t"), 5.0, clients=clients)
        strict = DeliveryContext(None, {}, logging.getLogger("t"), 5.0, clients=clients)
        try:
            answers: list[Any] = [
                await Http().deliver({"url": f"{url}/{n}", "json": {}}, f"r/{n}", allowed) for n in range(10)
            ]
            try:
                await Http().deliver({"url": f"{url}/refused", "json": {}}, "r/x", strict)
            except PermanentError as exc:
                answers.append(exc)
            return answers
        finally:
            await clients.aclose()

    try:
        answers = asyncio.run(run())
    finally:
        server.shutdown()
        server.server_close()
    assert [a["status"] for a in answers[:10]] == [200] * 10
    assert paths == [f"/{n}" for n in range(10)]  # the refused one never reached the peer
    assert len(connections) == 1
    assert cookies == [None] * 10
    assert isinstance(answers[10], PermanentError) and "loopback" in str(answers[10])


def test_a_url_no_retry_can_mend_fails_at_once() -> None:
    with pytest.raises(PermanentError, match="cannot send"):
        deliver({"url": "http://127.0.0.1:99999/x", "method": "GET"}, {"allow_hosts": ["127.0.0.1"]})
