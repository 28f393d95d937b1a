"""Store actions against the fake Shopify and WooCommerce admin APIs: what the store holds
afterwards, that a retry does not write twice, and how the stores' errors surface."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from flowrun.actions import REGISTRY
from flowrun.actions.base import DeliveryContext, PermanentError, RetryableError
from flowrun.config import Secret
from flowrun.serve.dispatcher.deliver import http_client
from tests.fakestores import FakeShopify, FakeWooCommerce

KEY = "r_0123456789abcdef0123/steps[1]"


def deliver(action: str, params: dict[str, Any], sources: dict[str, Any], key: str = KEY) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        http = http_client(4)
        try:
            ctx = DeliveryContext(http, {}, logging.getLogger("test"), 5.0, sources=sources)
            return await REGISTRY[action].deliver(params, key, ctx)
        finally:
            await http.aclose()

    return asyncio.run(go())


@pytest.fixture
def woo() -> Any:
    fake = FakeWooCommerce("ck_1", "cs_1", [{"id": 727, "date_modified_gmt": "2026-11-01T10:00:00"}])
    keys = {"consumer_key": Secret("ck_1", "K"), "consumer_secret": Secret("cs_1", "S")}
    yield fake, {"woocommerce": {"url": fake.url, **keys}}
    fake.close()


@pytest.fixture
def shopify() -> Any:
    order = {"id": 450789469, "updated_at": "2026-11-01T10:00:00Z", "note": "Gift wrap, please"}
    level = {"inventory_item_id": 808950810, "location_id": 655441491, "available": 3, "updated_at": "2026-11-01"}
    fake = FakeShopify("shpat_1", [order], levels=[level])
    yield fake, {"shopify": {"shop": "x.myshopify.com", "api_url": fake.api, "api_token": Secret("shpat_1", "T")}}
    fake.close()


def test_woocommerce_order_note_is_added_once_even_when_retried(woo: Any) -> None:
    fake, sources = woo
    params = {"order_id": "727", "note": "Flagged for review by flowrun", "customer_visible": False}
    first = deliver("order_note", params, sources)
    again = deliver("order_note", params, sources)
    with pytest.raises(PermanentError, match="WooCommerce HTTP 404: woocommerce_rest_order_invalid_id: Invalid order"):
        deliver("order_note", {**params, "order_id": "9"}, sources)
    assert first == again == {"order_id": "727", "note_id": "281"}
    assert fake.notes[727] == [{"id": 281, "note": "Flagged for review by flowrun", "customer_note": False}]


def test_woocommerce_coupon_is_created_once_from_the_key(woo: Any) -> None:
    fake, sources = woo
    params = {"percent": 10, "usage_limit": 1, "customer_email": "ada@example.com", "expires_at": "2026-11-30T10:00:00"}
    first = deliver("discount", params, sources)
    again = deliver("discount", params, sources)
    assert first == again and first["code"].startswith("FLOW-")
    [coupon] = fake.coupons
    assert coupon["code"] == first["code"].lower() and str(coupon["id"]) == first["id"]
    assert (coupon["discount_type"], coupon["amount"], coupon["usage_limit"]) == ("percent", "10", 1)
    assert coupon["email_restrictions"] == ["ada@example.com"]
    assert coupon["date_expires_gmt"] == "2026-11-30T10:00:00"


def test_woocommerce_update_stock_sets_and_adjusts_by_sku(woo: Any) -> None:
    fake, sources = woo
    fake.products = [{"id": 93, "sku": "BEANIE-RED", "parent_id": 0, "stock_quantity": 2, "manage_stock": False}]
    assert deliver("update_stock", {"sku": "BEANIE-RED", "set": 40}, sources) == {"available": 40, "id": "93"}
    assert deliver("update_stock", {"sku": "BEANIE-RED", "adjust": -5}, sources) == {"available": 35, "id": "93"}
    assert fake.products[0]["manage_stock"] is True
    with pytest.raises(PermanentError, match="no product with SKU 'NOPE'"):
        deliver("update_stock", {"sku": "NOPE", "set": 1}, sources)
    puts = [r for r in fake.requests if r.get("method") == "PUT"]
    assert [r["path"] for r in puts] == ["/wp-json/wc/v3/products/93"] * 2


def test_woocommerce_customer_tags_live_in_meta_data(woo: Any) -> None:
    fake, sources = woo
    fake.customers[25] = {"id": 25, "email": "ada@example.com", "meta_data": [{"id": 1, "key": "other", "value": "x"}]}
    deliver("tag_customer", {"customer_id": "25", "add": ["vip", "newsletter"]}, sources)
    result = deliver("tag_customer", {"customer_id": "25", "add": ["vip"], "remove": ["newsletter"]}, sources)
    assert result == {"tags": ["vip"]}
    meta = {m["key"]: m["value"] for m in fake.customers[25]["meta_data"]}
    assert meta == {"other": "x", "flowrun_tags": "vip"}


def test_woocommerce_bad_credentials_fail_at_once_with_its_message(woo: Any) -> None:
    _, sources = woo
    sources["woocommerce"]["consumer_secret"] = Secret("wrong", "S")
    with pytest.raises(PermanentError, match="HTTP 401: woocommerce_rest_cannot_view: Sorry, you cannot list"):
        deliver("order_note", {"order_id": "727", "note": "x"}, sources)


def test_shopify_order_note_is_appended_once(shopify: Any) -> None:
    fake, sources = shopify
    deliver("order_note", {"order_id": "450789469", "note": "VIP: ship first"}, sources)
    deliver("order_note", {"order_id": "450789469", "note": "VIP: ship first"}, sources)
    assert fake.orders[0]["note"] == "Gift wrap, please\nVIP: ship first"
    puts = [r for r in fake.requests if r.get("method") == "PUT"]
    assert len(puts) == 1 and puts[0]["headers"]["X-Shopify-Access-Token"] == "shpat_1"


def test_shopify_update_stock_uses_inventory_levels(shopify: Any) -> None:
    fake, sources = shopify
    where = {"inventory_item_id": "808950810", "location_id": "655441491"}
    assert deliver("update_stock", {**where, "set": 12}, sources) == {"available": 12, "id": "808950810"}
    assert deliver("update_stock", {**where, "adjust": 3}, sources)["available"] == 15
    with pytest.raises(PermanentError, match="cannot look up a SKU"):
        deliver("update_stock", {"sku": "X", "set": 1}, sources)
    fake.failures = [(429, {"Retry-After": "2.0"})]
    with pytest.raises(RetryableError) as limited:
        deliver("update_stock", {**where, "set": 1}, sources)
    assert limited.value.retry_after == 2.0 and fake.lists["inventory_levels"][0]["available"] == 15


def test_store_action_defaults_come_from_the_event() -> None:
    note = REGISTRY["order_note"].finish_params({"note": " hi "}, {"order": {"id": 5}})
    stock = REGISTRY["update_stock"].finish_params(
        {"set": "7"}, {"inventory": {"sku": "A", "inventory_item_id": 1, "location_id": 2}}
    )
    assert note == {"note": "hi", "order_id": "5"}
    assert stock == {"set": 7, "sku": "A", "inventory_item_id": "1", "location_id": "2"}
