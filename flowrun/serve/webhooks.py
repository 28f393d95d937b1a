"""The webhook port: Shopify, WooCommerce and generic signed JSON; /healthz and /metrics.

Every rejection is a 4xx with a reason and a log line; nothing is acknowledged before it
is committed to the inbox. Normalisation happens later, in the worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from flowrun.config import Config
from flowrun.durations import parse_duration
from flowrun.events import shopify, woocommerce
from flowrun.serve.metrics import Metrics
from flowrun.serve.signatures import valid_base64, valid_generic

log = logging.getLogger("flowrun.webhooks")
Store = Callable[[dict[str, Any]], Awaitable[bool]]


class Reject(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        self.status, self.reason, self.detail = status, reason, detail


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Reject(413, "too_large", f"body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Reject(413, "too_large", f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Reject(400, "not_json", f"body is not JSON: {exc}") from None


def _secret(settings: dict[str, Any], key: str) -> str | None:
    value = settings.get(key)
    return value.reveal() if value is not None else None


def shopify_row(settings: dict[str, Any], request: Request, body: bytes) -> dict[str, Any]:
    secrets = [s for s in (_secret(settings, "webhook_secret"), _secret(settings, "previous_webhook_secret")) if s]
    if not secrets:
        raise Reject(404, "unconfigured", "shopify has no webhook_secret in the configuration")
    header = request.headers.get("x-shopify-hmac-sha256")
    if not header:
        raise Reject(401, "missing_signature", "no X-Shopify-Hmac-Sha256 header")
    if not valid_base64(body, header, secrets):
        raise Reject(401, "bad_signature", "X-Shopify-Hmac-Sha256 does not match the body")
    topic = request.headers.get("x-shopify-topic", "")
    if topic not in shopify.TOPICS:
        raise Reject(400, "unknown_topic", f"topic {topic!r} is not one flowrun normalises")
    _json(body)
    delivery = request.headers.get("x-shopify-webhook-id") or request.headers.get("x-shopify-event-id")
    return {
        "source": "shopify",
        "topic": topic,
        "body": body,
        "delivery_id": delivery or "sha256:" + hashlib.sha256(body).hexdigest(),
        "triggered_at": request.headers.get("x-shopify-triggered-at"),
    }


def woocommerce_row(settings: dict[str, Any], request: Request, body: bytes) -> dict[str, Any] | None:
    header = request.headers.get("x-wc-webhook-signature")
    if header is None and "webhook_id" in parse_qs(body.decode("latin-1")):
        return None  # the creation ping: answered 200, nothing stored
    secret = _secret(settings, "webhook_secret")
    if not secret:
        raise Reject(404, "unconfigured", "woocommerce has no webhook_secret in the configuration")
    if not header:
        raise Reject(401, "missing_signature", "no X-WC-Webhook-Signature header")
    if not valid_base64(body, header, [secret]):
        raise Reject(401, "bad_signature", "X-WC-Webhook-Signature does not match the body")
    topic = request.headers.get("x-wc-webhook-topic", "")
    if topic not in woocommerce.TOPICS:
        raise Reject(400, "unknown_topic", f"topic {topic!r} is not one flowrun normalises")
    _json(body)
    delivery = request.headers.get("x-wc-webhook-delivery-id")
    return {
        "source": "woocommerce",
        "topic": topic,
        "body": body,
        "delivery_id": delivery or "sha256:" + hashlib.sha256(body).hexdigest(),
        "triggered_at": None,
    }


def custom_row(settings: dict[str, Any], request: Request, body: bytes, now: datetime) -> dict[str, Any]:
    secret = _secret(settings, "secret")
    if not secret:
        raise Reject(404, "unconfigured", "custom has no secret in the configuration")
    header = request.headers.get(settings.get("signature_header", "X-Flowrun-Signature"))
    tolerance = parse_duration(settings["tolerance"]) if "tolerance" in settings else None
    timestamp = request.headers.get(settings.get("timestamp_header", "X-Flowrun-Timestamp"))
    ok, why = valid_generic(body, header, secret, settings.get("encoding", "hex"), timestamp, tolerance, now)
    if not ok:
        raise Reject(401, "bad_signature" if header else "missing_signature", why)
    data = _json(body)
    if not isinstance(data, dict) or not isinstance(data.get("type"), str) or not isinstance(data.get("data"), dict):
        raise Reject(400, "not_an_event", 'expected {"type": "custom.<name>", "data": {...}}')
    delivery = request.headers.get("x-flowrun-delivery") or data.get("id")
    return {
        "source": "custom",
        "topic": data["type"],
        "body": body,
        "delivery_id": str(delivery) if delivery else "sha256:" + hashlib.sha256(body).hexdigest(),
        "triggered_at": timestamp,
    }


def build_app(
    config: Config,
    store: Store,
    metrics: Metrics,
    health: Callable[[], Awaitable[bool]],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Starlette:
    async def webhook(request: Request) -> Response:
        source = request.path_params["source"]
        settings = config.sources.get(source)
        try:
            if settings is None:
                raise Reject(404, "unknown_source", f"no source {source!r} is configured")
            body = await read_body(request, config.max_body_bytes)
            row: dict[str, Any] | None
            if source == "shopify":
                row = shopify_row(settings, request, body)
            elif source == "woocommerce":
                row = woocommerce_row(settings, request, body)
            else:
                row = custom_row(settings, request, body, now())
            if row is None:
                metrics.count("flowrun_webhook_pings_total", source=source)
                return PlainTextResponse("ok")
        except Reject as exc:
            metrics.count("flowrun_events_rejected_total", source=source, reason=exc.reason)
            log.warning(
                "rejected %s webhook from %s: %s (%s)",
                source,
                request.client.host if request.client else "?",
                exc.reason,
                exc.detail,
            )
            return JSONResponse({"error": exc.reason, "detail": exc.detail}, status_code=exc.status)
        row["received_at"] = now()
        try:
            new = await store(row)
        except RuntimeError as exc:
            log.error("could not store a %s webhook: %s", source, exc)
            return JSONResponse({"error": "unavailable", "detail": str(exc)}, status_code=503)
        metrics.count("flowrun_events_accepted_total" if new else "flowrun_events_duplicate_total", source=source)
        return JSONResponse({"status": "accepted" if new else "duplicate", "delivery_id": row["delivery_id"]})

    async def healthz(_: Request) -> Response:
        ok = await health()
        return JSONResponse({"status": "ok" if ok else "database unavailable"}, status_code=200 if ok else 503)

    async def metrics_endpoint(_: Request) -> Response:
        return PlainTextResponse(await metrics.render(), media_type="text/plain; version=0.0.4")

    return Starlette(
        routes=[
            Route("/webhooks/{source}", webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ]
    )
