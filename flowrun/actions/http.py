"""http: a generic HTTP request; the response is kept with `as:`.

The request may go only where flowrun.netpolicy allows (public addresses, and the hosts or
networks in `channels.http.allow_hosts`), checked after DNS resolution and on every redirect
(up to five, flowrun.actions.http_exchange). A header may be `{secret: NAME}`: NAME is declared under
`channels.http.secrets` (an environment variable or a systemd credential), and only the
name is stored with the action, so the value never sits in a flow file, the outbox, a trace
or `flowrun show`. A redirect to another origin does not carry such headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from flowrun.actions.base import (
    TEMPLATED,
    ActionType,
    DeliveryContext,
    PermanentError,
    RetryableError,
    obj,
    result,
)
from flowrun.actions.http_exchange import exchange
from flowrun.actions.provider import refusal
from flowrun.actions.transport_errors import describe_aiohttp
from flowrun.config_schema import SECRET
from flowrun.durations import parse_duration
from flowrun.netpolicy import NetPolicy, Refused, guarded_session

SECRET_REF = {
    "type": "object",
    "required": ["secret"],
    "properties": {"secret": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_.-]*$"}},
    "additionalProperties": False,
    "description": "a secret declared under channels.http.secrets in the project file",
}


class Http(ActionType):
    name = "http"
    summary = "call any HTTP endpoint; the response status, headers and JSON body are kept with `as:`"
    params_schema = obj(
        ["url"],
        method={"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"], "default": "POST"},
        url=TEMPLATED,
        headers={
            "type": "object",
            "additionalProperties": {"anyOf": [{"type": "string"}, SECRET_REF]},
            "description": "values are text (templates allowed) or {secret: NAME}",
        },
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
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "allow_hosts": {
                "type": "array",
                "items": {"type": "string"},
                "description": "hosts, addresses or networks (10.0.0.0/8) the http action may reach although "
                "they are loopback, link-local or private",
            },
            "secrets": {
                "type": "object",
                "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_.-]*$"},
                "additionalProperties": SECRET,
                "description": "secrets flows may send in a header as {secret: NAME}",
            },
        },
    }

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        params.setdefault("method", "POST" if ("json" in params or "form" in params) else "GET")
        return params

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"status": 200, "headers": {}, "json": {}, "text": ""}

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        headers, secret_headers, secret_values = _headers(params.get("headers") or {}, ctx)
        timeout = parse_duration(params["timeout"]).total_seconds() if "timeout" in params else ctx.timeout_s
        policy = NetPolicy.allowing(ctx.settings.get("allow_hosts") or ())
        sent = {"Idempotency-Key": key, **headers}
        try:
            if ctx.clients is not None:
                response = await exchange(ctx.clients.get(policy), policy, params, sent, secret_headers, timeout)
            else:
                async with guarded_session(policy) as session:
                    response = await exchange(session, policy, params, sent, secret_headers, timeout)
        except Refused as exc:
            raise PermanentError(f"refused: {exc}") from None
        except (aiohttp.InvalidURL, ValueError) as exc:  # a URL or body no retry can mend
            raise PermanentError(_redact(f"cannot send: {exc}", secret_values)) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryableError(_redact(describe_aiohttp(exc, timeout), secret_values)) from None
        body_text = response.content.decode(response.encoding or "utf-8", errors="replace")
        expected = params.get("expect_status")
        ok = response.status_code in expected if expected else response.is_success
        if not ok:
            raise refusal(response, _redact(f"HTTP {response.status_code}: {body_text[:300]}", secret_values))
        try:
            body = response.json()
        except ValueError:
            body = None
        return {
            "status": response.status_code,
            "headers": {k: v for k, v in response.headers.items() if not _carries(v, secret_values)},
            "json": body,
            "text": _redact(body_text[:10000], secret_values),
        }


def _headers(given: Mapping[str, Any], ctx: DeliveryContext) -> tuple[dict[str, str], set[str], list[str]]:
    """The headers to send, the names of those holding secrets, and the secret values."""
    declared = ctx.settings.get("secrets") or {}
    headers, secret_headers, values = {}, set(), []
    for name, value in given.items():
        if isinstance(value, Mapping) and "secret" in value:
            secret = declared.get(str(value["secret"]))
            if secret is None or not secret.reveal():
                raise PermanentError(
                    f"header {name}: secret {value['secret']!r} is not declared under channels.http.secrets "
                    "in the project file (or its value is empty)"
                )
            headers[name] = secret.reveal()
            secret_headers.add(name.lower())
            values.append(secret.reveal())
        else:
            headers[name] = str(value)
    return headers, secret_headers, values


def _carries(text: str, secrets: list[str]) -> bool:
    return any(secret in text for secret in secrets)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "****")
    return text
