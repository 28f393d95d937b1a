"""Pollers for stores whose webhooks are missing or unreliable.

Each poll fetches what changed since the stored cursor minus an overlap window, and hands
the bodies to the inbox exactly as webhooks arrive (source, topic, raw body, a delivery
id). Overlap plus inbox dedupe plus resource-keyed event ids mean nothing is missed or
doubled across restarts. A poller's first run starts its cursor at that moment: history
is not replayed. Sleeping is injected, so tests never wait.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from flowrun.actions.base import retry_after_seconds
from flowrun.events.values import timestamp

log = logging.getLogger("flowrun.poll")
Sleep = Callable[[float], Awaitable[None]]
OVERLAP = timedelta(minutes=10)
MAX_TRIES = 6
POLLERS = ("poll:shopify:orders", "poll:shopify:checkouts", "poll:shopify:inventory", "poll:woocommerce:orders")


class PollError(Exception):
    pass


@dataclass(frozen=True)
class Polled:
    source: str
    topic: str
    body: bytes
    delivery_id: str
    changed_at: datetime


def page_links(response: httpx.Response) -> dict[str, str]:
    """{rel: url} of a `Link` header, as httpx parses it (`response.links`). httpx keeps what
    follows a link's closing quote in its rel (Shopify's own published case ends in junk:
    `rel="next", This invalid info header will be ignored`), so a rel is read up to that quote."""
    found: dict[str, str] = {}
    for link in response.links.values():
        for rel in link.get("rel", "").split('"')[0].split():
            if "url" in link:
                found.setdefault(rel, link["url"])
    return found


def parse_link(header: str | None) -> dict[str, str]:
    """`Link: <url>; rel="next", <url>; rel="previous"` to {rel: url}; junk is ignored."""
    return page_links(httpx.Response(200, headers={"link": header or ""}))


def call_limit(header: str | None) -> tuple[int, int] | None:
    """`X-Shopify-Shop-Api-Call-Limit: 32/40` to (32, 40)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", header or "")
    return (int(match[1]), int(match[2])) if match else None


async def fetch(http: httpx.AsyncClient, url: str, sleep: Sleep, **kwargs: Any) -> httpx.Response:
    """GET with the stores' documented back-pressure: 429 + Retry-After, and 5xx backoff."""
    for attempt in range(1, MAX_TRIES + 1):
        try:
            response = await http.get(url, **kwargs)
        except httpx.TransportError as exc:
            if attempt == MAX_TRIES:
                raise PollError(f"GET {url}: {exc!r}") from None
            await sleep(min(60.0, 2.0**attempt))
            continue
        if response.status_code == 429 or response.status_code >= 500:
            if attempt == MAX_TRIES:
                raise PollError(f"GET {url}: HTTP {response.status_code} after {attempt} tries")
            wait = retry_after_seconds(response.headers.get("retry-after"))
            await sleep(wait if wait is not None else min(60.0, 2.0**attempt))
            continue
        if response.status_code >= 400:
            raise PollError(f"GET {url}: HTTP {response.status_code}: {response.text[:200]}")
        return response
    raise PollError(f"GET {url}: gave up")


def _shopify_topics(order: dict[str, Any], since: datetime) -> list[str]:
    created = timestamp(order.get("created_at"))
    topics = ["orders/create" if created is not None and created >= since else "orders/updated"]
    if order.get("financial_status") == "paid":
        topics.append("orders/paid")
    if order.get("fulfillment_status") == "fulfilled":
        topics.append("orders/fulfilled")
    if order.get("cancelled_at"):
        topics.append("orders/cancelled")
    return topics


async def _shopify_pages(
    http: httpx.AsyncClient, url: str, token: str, params: dict[str, Any], key: str, sleep: Sleep
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every page of a Shopify REST list: `Link` page_info URLs, pausing near the call limit."""
    headers = {"X-Shopify-Access-Token": token, "Accept": "application/json"}
    next_url: str | None = url
    query: dict[str, Any] | None = params
    while next_url:
        response = await fetch(http, next_url, sleep, headers=headers, params=query)
        yield list(response.json().get(key, []))
        usage = call_limit(response.headers.get("x-shopify-shop-api-call-limit"))
        if usage and usage[0] >= usage[1] - 2:
            await sleep(1.0)  # the leaky bucket drains two calls a second
        next_url, query = page_links(response).get("next"), None  # page_info URLs are complete


async def poll_shopify_orders(
    http: httpx.AsyncClient, api_url: str, token: str, since: datetime, sleep: Sleep
) -> list[Polled]:
    """Orders updated since `since`, every page, as orders/create|updated (+paid/fulfilled/cancelled)."""
    params = {"status": "any", "updated_at_min": since.isoformat(), "limit": 250, "order": "updated_at asc"}
    found: list[Polled] = []
    async for page in _shopify_pages(http, f"{api_url.rstrip('/')}/orders.json", token, params, "orders", sleep):
        for order in page:
            body = json.dumps(order).encode()
            changed = timestamp(order.get("updated_at")) or since
            for topic in _shopify_topics(order, since):
                found.append(
                    Polled("shopify", topic, body, f"poll:{topic}:{order['id']}:{order.get('updated_at')}", changed)
                )
    return found


async def poll_shopify_checkouts(
    http: httpx.AsyncClient, api_url: str, token: str, since: datetime, sleep: Sleep
) -> list[Polled]:
    """Abandoned (not completed) checkouts updated since `since`, as checkouts/update: the
    worker then derives checkout.abandoned after the idle time, as for a webhook."""
    params = {"updated_at_min": since.isoformat(), "limit": 250}
    found: list[Polled] = []
    url = f"{api_url.rstrip('/')}/checkouts.json"
    async for page in _shopify_pages(http, url, token, params, "checkouts", sleep):
        for checkout in page:
            stamp = checkout.get("updated_at")
            changed = timestamp(stamp) or since
            delivery = f"poll:checkouts/update:{checkout['id']}:{stamp}"
            found.append(Polled("shopify", "checkouts/update", json.dumps(checkout).encode(), delivery, changed))
    return found


async def poll_shopify_inventory(
    http: httpx.AsyncClient, api_url: str, token: str, locations: list[int], since: datetime, sleep: Sleep
) -> list[Polled]:
    """Inventory levels updated since `since` at these locations, as inventory_levels/update.
    A level names only its inventory_item_id; the SKU comes from inventory_items.json (100
    ids a call), so low-stock flows and purchase orders can name the product."""
    base = api_url.rstrip("/")
    params = {"location_ids": ",".join(str(i) for i in locations), "updated_at_min": since.isoformat(), "limit": 250}
    levels: list[dict[str, Any]] = []
    async for page in _shopify_pages(http, f"{base}/inventory_levels.json", token, params, "inventory_levels", sleep):
        levels.extend(page)
    ids = sorted({level["inventory_item_id"] for level in levels})
    skus: dict[Any, Any] = {}
    for start in range(0, len(ids), 100):
        chunk = {"ids": ",".join(str(i) for i in ids[start : start + 100]), "limit": 100}
        async for items in _shopify_pages(http, f"{base}/inventory_items.json", token, chunk, "inventory_items", sleep):
            skus.update((item["id"], item.get("sku")) for item in items)
    found: list[Polled] = []
    for level in levels:
        body = {**level, "sku": skus.get(level["inventory_item_id"])}
        stamp = level.get("updated_at")
        delivery = f"poll:inventory_levels/update:{level['inventory_item_id']}:{level.get('location_id')}:{stamp}"
        found.append(
            Polled("shopify", "inventory_levels/update", json.dumps(body).encode(), delivery, timestamp(stamp) or since)
        )
    return found


async def poll_woocommerce_orders(
    http: httpx.AsyncClient, base_url: str, key: str, secret: str, since: datetime, sleep: Sleep
) -> list[Polled]:
    """Orders modified since `since` through REST v3, page by page (X-WP-TotalPages)."""
    url = f"{base_url.rstrip('/')}/wp-json/wc/v3/orders"
    found: list[Polled] = []
    page, pages = 1, 1
    while page <= pages:
        params = {
            "modified_after": since.strftime("%Y-%m-%dT%H:%M:%S"),
            "dates_are_gmt": "true",
            "per_page": 100,
            "page": page,
            "orderby": "modified",
            "order": "asc",
        }
        response = await fetch(http, url, sleep, params=params, auth=(key, secret))
        pages = int(response.headers.get("x-wp-totalpages", "1") or 1)
        for order in response.json():
            created = timestamp((order.get("date_created_gmt") or "") + "Z")
            topic = "order.created" if created is not None and created >= since else "order.updated"
            modified = order.get("date_modified_gmt") or order.get("date_modified")
            found.append(
                Polled(
                    "woocommerce",
                    topic,
                    json.dumps(order).encode(),
                    f"poll:{topic}:{order['id']}:{modified}:{order.get('status')}",
                    timestamp(f"{modified}Z") or since,
                )
            )
        page += 1
    return found


def next_cursor(previous: datetime, polled: list[Polled]) -> datetime:
    return max([previous, *(p.changed_at for p in polled)])
