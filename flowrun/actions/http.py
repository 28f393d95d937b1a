"""http: a generic HTTP request; the response is kept with `as:`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import (
    TEMPLATED,
    ActionType,
    DeliveryContext,
    RetryableError,
    obj,
    result,
)
from flowrun.actions.provider import refusal
from flowrun.durations import parse_duration


class Http(ActionType):
    name = "http"
    summary = "call any HTTP endpoint; the response status, headers and JSON body are kept with `as:`"
    params_schema = obj(
        ["url"],
        method={"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"], "default": "POST"},
        url=TEMPLATED,
        headers={"type": "object", "additionalProperties": {"type": "string"}},
        query={"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
        json={"description": "a JSON body (any shape; strings may be templates)"},
        form={"type": "object", "additionalProperties": {"type": "string"}},
        timeout={"type": "string", "pattern": r"^(?:[0-9]+[smhdw])+$"},
        expect_status={"type": "array", "items": {"type": "integer"}},
    )
    result_schema = result(
        status={"type": "integer"},
        headers={"type": "object", "additionalProperties": True},
        json={"description": "the JSON response body", "additionalProperties": True},
        text={"type": "string"},
    )

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        params.setdefault("method", "POST" if ("json" in params or "form" in params) else "GET")
        return params

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"status": 200, "headers": {}, "json": {}, "text": ""}

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        import httpx

        headers = {"Idempotency-Key": key, **(params.get("headers") or {})}
        timeout = parse_duration(params["timeout"]).total_seconds() if "timeout" in params else ctx.timeout_s
        try:
            response = await ctx.http.request(
                params.get("method", "POST"),
                params["url"],
                headers=headers,
                params=params.get("query"),
                json=params.get("json"),
                data=params.get("form"),
                timeout=timeout,
            )
        except httpx.TimeoutException as exc:
            raise RetryableError(f"timed out after {timeout:g} s: {exc!r}") from None
        except httpx.HTTPError as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc or 'connection closed by the peer'}") from None
        expected = params.get("expect_status")
        ok = response.status_code in expected if expected else response.is_success
        if not ok:
            raise refusal(response, f"HTTP {response.status_code}: {response.text[:300]}")
        try:
            body = response.json()
        except ValueError:
            body = None
        return {
            "status": response.status_code,
            "headers": dict(response.headers),
            "json": body,
            "text": response.text[:10000],
        }
