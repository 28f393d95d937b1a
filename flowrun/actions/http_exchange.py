"""One request of the `http` action on a guarded aiohttp session (flowrun.netpolicy), its
redirects followed here so that each hop is checked by the policy and a hop to another origin
carries no secret header (nor Authorization).

On aiohttp directly: httpx on its aiohttp transport cost ~410 µs of CPU per request here against
~130 µs for the same request on aiohttp alone (benchmarks/serve_e2e.py: the sender's CPU per
action). The answer is handed back as an `httpx.Response` built from what arrived, so statuses,
`Retry-After`, encodings and JSON read exactly as before.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
from yarl import URL

from flowrun.netpolicy import NetPolicy, Refused

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)


async def exchange(
    session: aiohttp.ClientSession,
    policy: NetPolicy,
    params: Mapping[str, Any],
    headers: dict[str, str],
    secret_headers: set[str],
    timeout: float,
) -> httpx.Response:
    method = str(params.get("method", "POST"))
    url = URL(str(params["url"]))
    if params.get("query"):
        url = url.update_query({k: _text(v) for k, v in params["query"].items()})
    body: bytes | None = None
    sent = dict(headers)
    if params.get("json") is not None:
        body = jsonlib.dumps(params["json"], ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        sent["Content-Type"] = "application/json"
    elif params.get("form") is not None:
        body = urlencode([(k, str(v)) for k, v in params["form"].items()]).encode()
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    limit = aiohttp.ClientTimeout(total=timeout)
    for _ in range(MAX_REDIRECTS + 1):
        _check_literal(policy, url)
        async with session.request(
            method, url, data=body, headers=sent, allow_redirects=False, timeout=limit, auto_decompress=True
        ) as answer:
            content = await answer.read()
            status, raw = answer.status, list(answer.raw_headers)
        location = answer.headers.get("Location")
        if status not in REDIRECTS or not location:
            return httpx.Response(status, headers=raw, content=content)
        following = url.join(URL(location))
        if (following.scheme, following.host, following.port) != (url.scheme, url.host, url.port):
            sent = {k: v for k, v in sent.items() if k.lower() not in secret_headers | {"authorization"}}
        if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
            method, body = "GET", None
            sent.pop("Content-Type", None)
        url = following
    return httpx.Response(status, headers=raw, content=content)


def _check_literal(policy: NetPolicy, url: URL) -> None:
    """IP-literal hosts (aiohttp connects to them without asking the guarded resolver)."""
    host = url.host or ""
    if ":" in host or host.replace(".", "").isdigit():
        why = policy.refusal(host, host)
        if why is not None:
            raise Refused(why)


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value)
