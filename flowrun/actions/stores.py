"""The stores' admin APIs as the store actions use them: Shopify Admin REST
(X-Shopify-Access-Token) and WooCommerce REST v3 (basic auth with the consumer key).
Credentials come from `sources:` in flowrun.yaml; an action's `store:` setting picks one
when both are configured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from flowrun.actions.base import ActionType, DeliveryContext, PermanentError, revealed
from flowrun.actions.provider import call

STORE_SETTING = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"store": {"enum": ["shopify", "woocommerce"], "description": "default: the one with API access"}},
}


def store_of(ctx: DeliveryContext) -> str:
    chosen = ctx.setting("store")
    if chosen:
        return str(chosen)
    if (ctx.sources.get("shopify") or {}).get("api_token") is not None:
        return "shopify"
    if (ctx.sources.get("woocommerce") or {}).get("consumer_key") is not None:
        return "woocommerce"
    raise PermanentError("no store API configured: add sources.shopify.api_token or sources.woocommerce.consumer_key")


def store_rate_key(ctx: DeliveryContext) -> tuple[str, str] | None:
    """A store's API bucket (Shopify limits each app per shop): the store actions' `rate_key`."""
    try:
        store = store_of(ctx)
    except PermanentError:
        return None
    settings = ctx.sources.get(store) or {}
    return (store, str(settings.get("shop") or settings.get("url") or ""))


class StoreAction(ActionType):
    """An action through the store's Admin API: it draws from the store's rate-limit bucket."""

    def rate_key(self, params: Mapping[str, Any], ctx: DeliveryContext) -> tuple[str, str] | None:
        return store_rate_key(ctx)


class Shopify:
    def __init__(self, ctx: DeliveryContext) -> None:
        shop = ctx.sources.get("shopify") or {}
        if shop.get("api_token") is None:
            raise PermanentError("sources.shopify.api_token is not configured")
        self.ctx = ctx
        self.api = str(
            shop.get("api_url") or f"https://{shop['shop']}/admin/api/{shop.get('api_version', '2025-07')}"
        ).rstrip("/")
        self.headers = {"X-Shopify-Access-Token": revealed(shop["api_token"]), "Accept": "application/json"}

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await call(
            self.ctx,
            method,
            f"{self.api}/{path}",
            provider="Shopify",
            explain=lambda b: str(b.get("errors") or b),
            headers=self.headers,
            **kwargs,
        )


class WooCommerce:
    def __init__(self, ctx: DeliveryContext) -> None:
        woo = ctx.sources.get("woocommerce") or {}
        if woo.get("consumer_key") is None or not woo.get("url"):
            raise PermanentError("sources.woocommerce needs url, consumer_key and consumer_secret")
        self.ctx = ctx
        self.api = f"{str(woo['url']).rstrip('/')}/wp-json/wc/v3"
        self.auth = (revealed(woo["consumer_key"]), revealed(woo["consumer_secret"]))

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await call(
            self.ctx,
            method,
            f"{self.api}/{path}",
            provider="WooCommerce",
            explain=lambda b: f"{b['code']}: {b['message']}",
            auth=self.auth,
            **kwargs,
        )


def store_unconfigured(sources: Any) -> str | None:
    if (sources.get("shopify") or {}).get("api_token") is not None:
        return None
    if (sources.get("woocommerce") or {}).get("consumer_key") is not None:
        return None
    return "a store API: sources.shopify.api_token or sources.woocommerce.consumer_key"
