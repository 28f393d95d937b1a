"""Calling a provider's HTTP API the same way everywhere: its error message surfaced, 429,
408 and 5xx retried (honouring Retry-After), other 4xx failing at once, timeouts retried."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from flowrun.actions.base import DeliveryContext, PermanentError, RateLimitedError, RetryableError, retry_after_seconds
from flowrun.actions.transport_errors import describe


async def call(
    ctx: DeliveryContext,
    method: str,
    url: str,
    *,
    provider: str,
    explain: Callable[[Any], str | None] | None = None,
    ok: Callable[[httpx.Response], bool] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    try:
        response: httpx.Response = await ctx.http.request(method, url, timeout=ctx.timeout_s, **kwargs)
    except httpx.HTTPError as exc:
        raise RetryableError(f"{provider}: {describe(exc, ctx.timeout_s)}") from None
    if ok(response) if ok else response.is_success:
        return response
    detail = None
    if explain is not None:
        try:
            detail = explain(response.json())
        except (ValueError, KeyError, TypeError, AttributeError):
            detail = None
    raise refusal(response, f"{provider} HTTP {response.status_code}: {detail or response.text[:300]}")


def refusal(response: httpx.Response, message: str) -> Exception:
    """What a provider's error answer means for the attempt: 429 with Retry-After comes back then
    (no attempt spent); 408, 425, 429 and 5xx are retried; any other 4xx fails at once."""
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    if response.status_code == 429 and retry_after is not None:
        return RateLimitedError(message, retry_after)
    if response.status_code in (408, 425, 429) or response.status_code >= 500:
        return RetryableError(message, retry_after)
    return PermanentError(message)
