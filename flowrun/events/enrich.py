"""What a store's webhook lacks and a flow needs, looked up in the store's API.

The normaliser is a pure function of the body, so the lookups happen before it: serve
calls `enrich` on a delivery's parsed body (outside any write transaction), then
`normalise`. The answers are put beside the store's fields under `_flowrun`, and the
normaliser reads them there; `event.raw` still shows the body as the store sent it.

Shopify, Admin REST (`X-Shopify-Access-Token`), one or two list calls per delivery:

- `inventory_levels/update` lacks the SKU: `inventory_items.json?ids=`;
- `refunds/create` lacks the customer (and the order's number): `orders.json?ids=&status=any`;
- `orders/create`, `orders/paid` do not say whether a line is backordered: `products.json?ids=`
  (the variants' `inventory_policy` and `inventory_quantity`);
- `products/create`, `products/update` lack collections: `custom_collections.json?product_id=`
  and `smart_collections.json?product_id=`.

List endpoints answer an empty list for a deleted resource, so "not found" is a normal
answer (the field stays null); a store that does not answer after the back-off of
`serve.pollers.fetch` raises `LookupFailedError`, and the delivery can be tried later.
Dry-run and tests use a `StubLookup`, or samples that carry `_flowrun` already.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from flowrun.errors import LookupFailedError
from flowrun.events.values import ENRICHED, untouched

Sleep = Callable[[float], Awaitable[None]]

# The order fields a refund needs: who the customer is, and what a message may name.
ORDER_FIELDS = "id,name,order_number,email,phone,contact_email,customer,billing_address,currency,total_price"


class ShopifyLookup(Protocol):
    async def inventory_skus(self, item_ids: Sequence[str]) -> dict[str, str | None]: ...
    async def order(self, order_id: str) -> Mapping[str, Any] | None: ...
    async def variants(self, product_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]: ...
    async def collections(self, product_id: str) -> list[str]: ...


class ShopifyAdmin:
    """The lookups against a shop's Admin REST API."""

    def __init__(self, http: httpx.AsyncClient, api_url: str, token: str, sleep: Sleep = asyncio.sleep) -> None:
        self.http, self.api, self.sleep = http, api_url.rstrip("/"), sleep
        self.headers = {"X-Shopify-Access-Token": token, "Accept": "application/json"}

    @classmethod
    def from_source(cls, http: httpx.AsyncClient, shop: Mapping[str, Any]) -> ShopifyAdmin | None:
        """From `sources.shopify` in flowrun.yaml; None without an API token (nothing to ask)."""
        token = shop.get("api_token")
        if token is None:
            return None
        api = shop.get("api_url") or f"https://{shop['shop']}/admin/api/{shop.get('api_version', '2025-07')}"
        return cls(http, str(api), token.reveal() if hasattr(token, "reveal") else str(token))

    async def _list(self, resource: str, key: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        from flowrun.serve.pollers import PollError, fetch

        try:
            response = await fetch(
                self.http, f"{self.api}/{resource}.json", self.sleep, headers=self.headers, params=params
            )
            found = response.json().get(key)
        except (PollError, ValueError) as exc:
            raise LookupFailedError(f"Shopify {resource}: {exc}") from None
        return [item for item in found or [] if isinstance(item, dict)]

    async def inventory_skus(self, item_ids: Sequence[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for start in range(0, len(item_ids), 100):  # the endpoint takes at most 100 ids
            chunk = ",".join(item_ids[start : start + 100])
            for item in await self._list("inventory_items", "inventory_items", {"ids": chunk, "limit": 100}):
                found[str(item.get("id"))] = item.get("sku") or None
        return found

    async def order(self, order_id: str) -> Mapping[str, Any] | None:
        params = {"ids": order_id, "status": "any", "fields": ORDER_FIELDS}
        orders = await self._list("orders", "orders", params)
        return next((o for o in orders if str(o.get("id")) == order_id), None)

    async def variants(self, product_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        found: dict[str, Mapping[str, Any]] = {}
        for start in range(0, len(product_ids), 250):
            params = {"ids": ",".join(product_ids[start : start + 250]), "fields": "id,variants", "limit": 250}
            for product in await self._list("products", "products", params):
                for variant in product.get("variants") or []:
                    found[str(variant.get("id"))] = {
                        "inventory_policy": variant.get("inventory_policy"),
                        "inventory_quantity": variant.get("inventory_quantity"),
                    }
        return found

    async def collections(self, product_id: str) -> list[str]:
        titles: list[str] = []
        for resource in ("custom_collections", "smart_collections"):
            params = {"product_id": product_id, "fields": "id,title", "limit": 250}
            titles.extend(str(c["title"]) for c in await self._list(resource, resource, params) if c.get("title"))
        return titles


@dataclass
class StubLookup:
    """Answers from memory, for dry-run and tests (a missing key: the store has no such thing)."""

    skus: dict[str, str | None] = field(default_factory=dict)
    orders: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    variant_stock: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    product_collections: dict[str, list[str]] = field(default_factory=dict)

    async def inventory_skus(self, item_ids: Sequence[str]) -> dict[str, str | None]:
        return {i: self.skus[i] for i in item_ids if i in self.skus}

    async def order(self, order_id: str) -> Mapping[str, Any] | None:
        return self.orders.get(order_id)

    async def variants(self, product_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        return dict(self.variant_stock)

    async def collections(self, product_id: str) -> list[str]:
        return list(self.product_collections.get(product_id, []))


def _id(value: Any) -> str | None:
    """A Shopify id as the API takes it (digits), or None: a query never carries anything else."""
    text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    return text if text.isascii() and text.isdigit() and text.strip("0") else None


def _ids(values: Any) -> list[str]:
    return sorted({i for i in (_id(v) for v in values) if i is not None})


LOOKUPS: dict[str, str] = {
    "inventory_levels/update": "inventory_item",
    "refunds/create": "order",
    "orders/create": "variants",
    "orders/paid": "variants",
    "products/create": "collections",
    "products/update": "collections",
}


def with_facts(body: Any, facts: Mapping[str, Any]) -> Any:
    """The parsed body the normaliser reads: the store's fields, and what the lookup found."""
    found = {k: v for k, v in facts.items() if k != "failed"}
    return {**body, ENRICHED: found} if isinstance(body, dict) and found else body


def needs_lookup(source: str, topic: str | None) -> bool:
    """Whether `enrich` would call the store for a delivery of this topic."""
    return source == "shopify" and topic in LOOKUPS


async def enrich(source: str, topic: str | None, body: Any, lookup: ShopifyLookup | None) -> Any:
    """The body with the looked-up facts under `_flowrun` (a new dict: `body` is not
    changed). A `_flowrun` key the body brought itself is dropped. Other sources, a body
    that is not an object, topics that lack nothing, and every Shopify body when there is
    no lookup (no API token) get nothing added. Raises LookupFailedError."""
    if source != "shopify" or not isinstance(body, dict):
        return body
    body = untouched(body)  # facts come from the store's API only, never from a body itself
    if lookup is None or not needs_lookup(source, topic):
        return body
    kind = LOOKUPS[str(topic)]
    facts: dict[str, Any] = {}
    if kind == "inventory_item":
        item = _id(body.get("inventory_item_id"))
        if item:
            facts["inventory_item"] = {"sku": (await lookup.inventory_skus([item])).get(item)}
    elif kind == "order":
        order_id = _id(body.get("order_id"))
        found = await lookup.order(order_id) if order_id else None
        if found is not None:
            facts["order"] = dict(found)
    elif kind == "variants":
        products = _ids(item.get("product_id") for item in body.get("line_items") or [] if isinstance(item, dict))
        if products:
            facts["variants"] = {k: dict(v) for k, v in (await lookup.variants(products)).items()}
    elif product_id := _id(body.get("id")):
        facts["collections"] = await lookup.collections(product_id)
    return {**body, ENRICHED: facts} if facts else body
