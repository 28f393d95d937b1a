"""One delivery attempt through an action module, its outcome in the runtime's terms."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import httpx

from flowrun.actions import REGISTRY
from flowrun.actions.base import DeliveryContext, PermanentError, RateLimitedError, RetryableError
from flowrun.netpolicy import GuardedClients
from flowrun.runtime.attempts import Delivered, Outcome, Permanent, RateLimited, Retryable
from flowrun.runtime.records import Send

log = logging.getLogger("flowrun.dispatch")
SLACK_S = 5.0  # beyond an action's own timeout, for a module that does not enforce it itself


def http_client(connections: int) -> httpx.AsyncClient:
    """The client actions and pollers share (call inside the running event loop). httpx's own
    async pool managed about 140 requests/s with 32 concurrent tasks on this machine, its
    aiohttp transport about 1,500 (encode/httpx#3215)."""
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    transport = AiohttpTransport(trust_env=False, limits=limits)
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False, limits=limits)


def context_for(
    send: Send, http: Any, channels: Mapping[str, Any], sources: Mapping[str, Any], clients: Any = None
) -> DeliveryContext:
    return DeliveryContext(http, channels.get(send.action, {}), log, send.timeout_s, sources, channels, clients)


async def attempt(
    send: Send,
    http: httpx.AsyncClient,
    channels: Mapping[str, Any],
    sources: Mapping[str, Any],
    clients: GuardedClients | None = None,
) -> Outcome:
    action = REGISTRY[send.action]
    ctx = context_for(send, http, channels, sources, clients)
    try:
        result = await asyncio.wait_for(action.deliver(send.params, send.key, ctx), timeout=send.timeout_s + SLACK_S)
    except PermanentError as exc:
        return Permanent(str(exc))
    except RateLimitedError as exc:
        return RateLimited(exc.retry_after or 0.0, str(exc))
    except RetryableError as exc:
        return Retryable(str(exc), exc.retry_after)
    except TimeoutError:
        return Retryable(f"no answer within {send.timeout_s + SLACK_S:g} s")
    except Exception as exc:  # a bug in a channel: parked with the error, serving goes on
        log.exception("action %s crashed", send.key)
        return Permanent(f"internal error: {exc!r}")
    return Delivered(result)
