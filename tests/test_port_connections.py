"""Slow and idle clients against a real `flowrun serve`: a signed webhook still gets through."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.liveserve import LiveServe, order

FLOW = "flow: confirm\non: order.created\nsteps:\n  - log: {message: hi}\n"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[LiveServe]:
    service = LiveServe(
        tmp_path,
        f"sqlite:///{tmp_path / 'state.db'}",
        {"f.yaml": FLOW},
        limits="max_connections: 50, request_timeout: 2s",
    )
    service.start()
    yield service
    service.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset on close
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0)
    try:
        sock.recv(65536)  # b"" once closed; an answer sent before the close counts too
    except BlockingIOError:
        return False  # open, and nothing said
    except OSError:
        return True
    return True


def test_hundreds_of_idle_and_slowloris_connections_do_not_shut_out_a_signed_webhook(serve: LiveServe) -> None:
    idle = [_connect(serve.port) for _ in range(300)]
    slow = [_connect(serve.port) for _ in range(50)]
    for sock in slow:  # headers that never end
        sock.sendall(b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    try:
        for n in range(20):
            response = serve.post_shopify(order(n), f"d-{n}")
            assert response.status_code == 200, response.text
        assert serve.stored() == 20
        # the port holds at most max_connections: most of the 350 were closed to make room
        open_now = sum(not _closed_by_server(s) for s in idle + slow)
        assert open_now <= 50
        assert serve.get("/healthz") == 200
    finally:
        for sock in idle + slow:
            sock.close()
    text = serve.tail()
    assert "closed a connection (evicted_waiting)" in text  # the first refusal is logged
    metrics = serve.metrics()
    assert 'flowrun_connections_refused_total{reason="evicted_waiting"}' in metrics


def test_a_client_that_never_finishes_its_headers_is_closed_after_the_request_timeout(serve: LiveServe) -> None:
    sock = _connect(serve.port)
    sock.sendall(b"POST /webhooks/shopify HTTP/1.1\r\n")
    deadline = time.monotonic() + 30  # the server's 2 s deadline, with room for a loaded machine
    closed = False
    while time.monotonic() < deadline and not closed:
        try:
            sock.sendall(b"X")  # one byte at a time, as slowloris does
        except OSError:
            closed = True
            break
        sock.settimeout(0.2)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            pass
        except OSError:
            closed = True
    sock.close()
    assert closed
    assert 'flowrun_connections_refused_total{reason="request_timeout"}' in serve.metrics()
    assert serve.post_shopify(order(1), "after").status_code == 200


def test_headers_past_the_cap_are_answered_431(serve: LiveServe) -> None:
    sock = _connect(serve.port)
    try:
        sock.sendall(b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\n")
        for _ in range(100):
            try:
                sock.sendall(b"X-Pad: " + b"a" * 1000 + b"\r\n")
            except OSError:
                break
        sock.settimeout(10)
        answer = sock.recv(200)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 431")


def test_at_systemds_default_file_limit_1100_idle_connections_do_not_reset_webhooks(tmp_path: Path) -> None:
    """systemd starts services with a soft limit of 1,024 open files: the port raises it to
    the hard limit, and evicts the oldest idle connection past limits.max_connections (1000)."""
    import resource
    import shutil

    prlimit = shutil.which("prlimit")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if prlimit is None or hard < 4096:
        pytest.skip(f"needs prlimit (util-linux) and a hard open-file limit of 4096 or more (have {hard})")
    serve = LiveServe(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", {"f.yaml": FLOW})
    serve.start(wrapper=[prlimit, f"--nofile=1024:{hard}"])
    idle = [_connect(serve.port) for _ in range(1100)]
    try:
        for n in range(5):
            assert serve.post_shopify(order(n), f"d-{n}").status_code == 200
    finally:
        for sock in idle:
            sock.close()
        assert serve.stop() == 0
