"""`flowrun backfill --source shopify|woocommerce`: seed profiles and the order history from
the store's order list, paged as the pollers page (Shopify's `Link` page_info cursor,
WooCommerce's X-WP-TotalPages), in the stores' own order times, without starting any flow.

Segment membership is settled for every customer seeded (and its due checks stored, so time
moves them on from here), but no segment.entered is emitted: a backfill is history, not news.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from flowrun.errors import UsageError
from flowrun.events import Event
from flowrun.events.normalise import normalise
from flowrun.events.values import timestamp
from flowrun.profile.record import Profile, backfilled, order_row
from flowrun.runtime.flows import FlowSet
from flowrun.runtime.profiles import Memory
from flowrun.runtime.settings import Settings
from flowrun.serve.pollers import Sleep, _shopify_pages, fetch
from flowrun.state.database import reading
from flowrun.state.uow import SqlUnitOfWork, commit

TOPICS = {"shopify": "orders/create", "woocommerce": "order.created"}


@dataclass
class Seeded:
    orders: int = 0  # new rows in the history
    known: int = 0  # already there (a second backfill, or serve saw them first)
    skipped: int = 0  # bodies that are not an order with an id and a total
    customers: int = 0
    pages: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.orders / self.seconds if self.seconds else 0.0


async def shopify_orders(
    http: httpx.AsyncClient, api_url: str, token: str, since: datetime | None, sleep: Sleep
) -> AsyncIterator[list[dict[str, Any]]]:
    params: dict[str, Any] = {"status": "any", "limit": 250, "order": "created_at asc"}
    if since is not None:
        params["updated_at_min"] = since.isoformat()
    async for page in _shopify_pages(http, f"{api_url.rstrip('/')}/orders.json", token, params, "orders", sleep):
        yield page


async def woocommerce_orders(
    http: httpx.AsyncClient, base_url: str, key: str, secret: str, since: datetime | None, sleep: Sleep
) -> AsyncIterator[list[dict[str, Any]]]:
    url = f"{base_url.rstrip('/')}/wp-json/wc/v3/orders"
    page, pages = 1, 1
    while page <= pages:
        params: dict[str, Any] = {"per_page": 100, "page": page, "orderby": "date", "order": "asc"}
        if since is not None:
            params.update(modified_after=since.strftime("%Y-%m-%dT%H:%M:%S"), dates_are_gmt="true")
        response = await fetch(http, url, sleep, params=params, auth=(key, secret))
        pages = int(response.headers.get("x-wp-totalpages", "1") or 1)
        body = response.json()
        yield [o for o in body if isinstance(o, dict)] if isinstance(body, list) else []
        page += 1


class Seeder:
    """Writes one page at a time, each in one transaction."""

    def __init__(self, db: Engine, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.db, self.clock = db, clock
        self.memory = Memory(settings, FlowSet())
        self.memory.active = True
        self.seeded = Seeded()
        self._seen: set[str] = set()

    def page(self, source: str, orders: Iterable[dict[str, Any]]) -> None:
        now = self.clock()
        with reading(self.db) as reader, reader.begin():
            uow = SqlUnitOfWork(reader, now=now)
            touched: dict[str, Profile] = {}
            events = [_event(source, body, now) for body in orders]
            rows = [order_row(e, _order_time(e, now)) if e else None for e in events]
            uow.orders.prefetch(r.order_id for r in rows if r is not None)
            uow.profiles.prefetch(e.customer_key for e in events if e is not None and e.customer_key)
            for event, row in zip(events, rows, strict=True):
                if event is None or row is None:
                    self.seeded.skipped += 1
                    continue
                if not uow.orders.add(row):
                    self.seeded.known += 1
                    continue
                self.seeded.orders += 1
                who = event.customer_key
                if who:
                    base = touched.get(who) or uow.profiles.get(who) or Profile(who)
                    touched[who] = backfilled(base, event, row)
            for profile in touched.values():
                self.memory.settle(uow, profile, now)  # membership and due checks; no events
            self._seen.update(touched)
        commit(self.db, uow)
        self.seeded.pages += 1
        self.seeded.customers = len(self._seen)


def _event(source: str, body: dict[str, Any], now: datetime) -> Event | None:
    try:
        events = normalise(json.loads(json.dumps(body)), source=source, topic=TOPICS[source], received_at=now)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return next((e for e in events if e.type == "order.created"), None)


def _order_time(event: Event, now: datetime) -> datetime:
    created = (event.data.get("order") or {}).get("created_at")
    found = created if isinstance(created, datetime) else timestamp(created) if created else None
    return min(found, now) if found is not None else now  # a future date from a broken clock: now


async def backfill(
    db: Engine, settings: Settings, sources: dict[str, Any], source: str, since: datetime | None, sleep: Sleep
) -> Seeded:
    seeder = Seeder(db, settings, lambda: datetime.now().astimezone())
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=30) as http:
        async for page in _pages(http, sources, source, since, sleep):
            seeder.page(source, page)
    seeder.seeded.seconds = time.perf_counter() - started
    return seeder.seeded


def _pages(
    http: httpx.AsyncClient, sources: dict[str, Any], source: str, since: datetime | None, sleep: Sleep
) -> AsyncIterator[list[dict[str, Any]]]:
    if source == "shopify":
        shop = sources.get("shopify") or {}
        if shop.get("api_token") is None or not (shop.get("api_url") or shop.get("shop")):
            raise UsageError("backfilling Shopify needs sources.shopify.api_token and shop (or api_url)")
        api = shop.get("api_url") or f"https://{shop['shop']}/admin/api/{shop.get('api_version', '2025-07')}"
        return shopify_orders(http, api, shop["api_token"].reveal(), since, sleep)
    if source == "woocommerce":
        woo = sources.get("woocommerce") or {}
        if woo.get("consumer_key") is None or woo.get("consumer_secret") is None or not woo.get("url"):
            raise UsageError("backfilling WooCommerce needs sources.woocommerce.url, consumer_key and consumer_secret")
        return woocommerce_orders(
            http, woo["url"], woo["consumer_key"].reveal(), woo["consumer_secret"].reveal(), since, sleep
        )
    raise UsageError(f"--source {source!r}: give shopify or woocommerce")
