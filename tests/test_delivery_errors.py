"""A failed delivery says what happened: a refused connection is not a 30-second timeout
(SMTP, Postmark's API, any provider call through httpx's aiohttp transport)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

from flowrun.actions import REGISTRY
from flowrun.actions.base import DeliveryContext, RetryableError
from flowrun.config import Secret
from flowrun.serve.dispatcher.deliver import http_client

PARAMS = {"to": "ada@example.com", "subject": "Hello", "text": "Plain words", "category": "transactional"}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once this socket closes


def deliver(settings: dict[str, Any], timeout_s: float = 30.0) -> None:
    async def go() -> None:
        http = http_client(2)
        try:
            ctx = DeliveryContext(http, settings, logging.getLogger("test"), timeout_s)
            await REGISTRY["email"].deliver(PARAMS, "r_1/steps[0]", ctx)
        finally:
            await http.aclose()

    asyncio.run(go())


def test_postmark_refused_is_a_refusal_not_a_timeout() -> None:
    settings = {
        "from": "shop@example.com",
        "postmark": {"server_token": Secret("t", "T"), "api_url": f"http://127.0.0.1:{closed_port()}"},
    }
    with pytest.raises(RetryableError) as failed:
        deliver(settings)
    message = str(failed.value)
    assert "could not connect" in message and "Connection refused" in message, message
    assert "timed out" not in message


def test_smtp_refused_and_silent_servers_are_told_apart() -> None:
    port = closed_port()
    with pytest.raises(RetryableError, match=f"SMTP 127.0.0.1:{port}: could not connect: connection refused"):
        deliver({"from": "shop@example.com", "smtp": {"host": "127.0.0.1", "port": port, "security": "none"}})
    with socket.socket() as silent:  # accepts connections (the backlog) and never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        smtp = {"host": "127.0.0.1", "port": silent.getsockname()[1], "security": "none"}
        with pytest.raises(RetryableError, match="no answer within 1 s"):
            deliver({"from": "shop@example.com", "smtp": smtp}, timeout_s=1.0)
