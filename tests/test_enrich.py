"""events.enrich against the fake Shopify Admin API (tests/fakestores.py): what a webhook
lacks is looked up before normalisation, so the events carry it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from flowrun.errors import LookupFailedError
from flowrun.events.enrich import ShopifyAdmin, StubLookup, enrich, needs_lookup
from flowrun.events.normalise import normalise, parse_json
from flowrun.events.values import ENRICHED
from tests.conftest import ROOT
from tests.fakestores import FakeShopify
from tests.servekit import database_params

TOKEN = "shpat_test"
EXAMPLES = ROOT / "examples" / "events" / "shopify"


def sample(topic: str) -> dict[str, Any]:
    return parse_json((EXAMPLES / f"{topic}.json").read_text())  # type: ignore[no-any-return]


ORDER = sample("orders/create")


@pytest.fixture
def shop() -> Iterator[FakeShopify]:
    order = {**ORDER, "updated_at": "2026-01-05T09:05:02Z"}
    products = [
        {
            "id": 8123456789012,
            "updated_at": "2026-01-01T00:00:00Z",
            "variants": [{"id": 44012345678901, "inventory_policy": "deny", "inventory_quantity": 12}],
        },
        {
            "id": 8123456789013,
            "updated_at": "2026-01-01T00:00:00Z",
            "variants": [{"id": 44012345678902, "inventory_policy": "continue", "inventory_quantity": -1}],
        },
    ]
    collections = {
        "custom_collections": [
            {"id": 1, "title": "Winter", "product_ids": [8123456789020]},
            {"id": 2, "title": "Summer", "product_ids": [1]},
        ],
        "smart_collections": [{"id": 3, "title": "New in", "product_ids": [8123456789020]}],
    }
    items = [{"id": 46012345678901, "sku": "BEANIE-CHA", "tracked": True}]
    store = FakeShopify(TOKEN, [order], items=items, products=products, collections=collections)
    yield store
    store.close()


async def _enriched(shop: FakeShopify, topic: str, body: dict[str, Any]) -> Any:
    async with httpx.AsyncClient() as http:
        return await enrich("shopify", topic, body, ShopifyAdmin(http, shop.api, TOKEN))


def _paths(shop: FakeShopify) -> list[tuple[str, dict[str, str]]]:
    return [(r["path"].rsplit("/", 1)[-1], r["query"]) for r in shop.requests]


def test_an_inventory_level_gets_its_sku_from_inventory_items(shop: FakeShopify) -> None:
    body = sample("inventory_levels/update")
    [plain] = normalise(body, source="shopify", topic="inventory_levels/update")
    assert plain.data["inventory"]["sku"] is None  # what the webhook alone says
    looked_up = asyncio.run(_enriched(shop, "inventory_levels/update", body))
    [event] = normalise(looked_up, source="shopify", topic="inventory_levels/update")
    assert event.data["inventory"]["sku"] == "BEANIE-CHA"
    assert _paths(shop) == [("inventory_items.json", {"ids": "46012345678901", "limit": "100"})]
    assert ENRICHED not in event.raw and event.raw == body  # raw is what Shopify sent
    assert ENRICHED not in body  # the caller's body is not changed


def test_a_refund_gets_the_orders_customer_and_so_reaches_a_runs_goal(shop: FakeShopify, tmp_path: Any) -> None:
    from flowrun.dryrun.session import simulate
    from flowrun.dryrun.timeline import Scheduled
    from tests.helpers import T0, flow_from

    body = sample("refunds/create")
    looked_up = asyncio.run(_enriched(shop, "refunds/create", body))
    [refund] = normalise(looked_up, source="shopify", topic="refunds/create", received_at=T0)
    assert refund.customer_key == "email:ada@example.com"
    assert refund.data["customer"]["first_name"] == "Ada"
    assert refund.data["order"]["name"] == "#1042" and refund.data["order"]["id"] == "5764883652903181234"
    [(_, query)] = _paths(shop)
    assert query["ids"] == "5764883652903181234" and query["status"] == "any" and "customer" in query["fields"]

    flow = flow_from(
        tmp_path,
        "flow: review\non: order.created\nuntil: refund.created\nsteps:\n  - wait: 14d\n  - log: {message: ask}\n",
    )
    [order] = normalise(ORDER, source="shopify", topic="orders/create")
    [unresolved] = normalise(body, source="shopify", topic="refunds/create", received_at=T0)
    for refund_event, status in ((unresolved, "completed"), (refund, "converted")):
        played = [Scheduled(T0, (order,)), Scheduled(T0 + timedelta(hours=1), (refund_event,))]
        [run] = simulate([flow], played, T0).runs
        assert run.status.value == status  # without the customer the refund misses the goal


def test_an_order_learns_which_lines_are_backordered_from_the_variants(shop: FakeShopify) -> None:
    looked_up = asyncio.run(_enriched(shop, "orders/create", ORDER))
    [event] = normalise(looked_up, source="shopify", topic="orders/create")
    beanie, scarf = event.data["order"]["line_items"]
    assert (beanie["backordered"], scarf["backordered"], scarf["backordered_quantity"]) == (False, True, 1)
    assert event.data["order"]["backordered"] is True
    [(_, query)] = _paths(shop)
    assert query["ids"] == "8123456789012,8123456789013" and query["fields"] == "id,variants"


def test_a_product_gets_its_collections(shop: FakeShopify) -> None:
    body = sample("products/create")
    looked_up = asyncio.run(_enriched(shop, "products/create", body))
    [event] = normalise(looked_up, source="shopify", topic="products/create")
    assert event.data["product"]["categories"] == ["Winter", "New in"]
    assert [p for p, _ in _paths(shop)] == ["custom_collections.json", "smart_collections.json"]


def test_no_lookup_for_other_topics_or_without_an_api_token(shop: FakeShopify) -> None:
    assert asyncio.run(_enriched(shop, "checkouts/create", {"id": 1})) == {"id": 1}
    assert asyncio.run(enrich("shopify", "refunds/create", {"order_id": 1}, None)) == {"order_id": 1}
    assert asyncio.run(enrich("woocommerce", "order.created", {"id": 1}, StubLookup())) == {"id": 1}
    assert shop.requests == []
    assert not needs_lookup("woocommerce", "order.created") and needs_lookup("shopify", "refunds/create")
    assert ShopifyAdmin.from_source(httpx.AsyncClient(), {"shop": "x.myshopify.com"}) is None


def test_facts_a_body_brings_itself_are_replaced_by_what_the_store_says(shop: FakeShopify) -> None:
    forged = {**sample("refunds/create"), ENRICHED: {"order": {"email": "mallory@example.com"}}}
    looked_up = asyncio.run(_enriched(shop, "refunds/create", forged))
    [event] = normalise(looked_up, source="shopify", topic="refunds/create")
    assert event.customer_key == "email:ada@example.com"
    missing = {**sample("refunds/create"), "order_id": 1, ENRICHED: {"order": {"email": "mallory@example.com"}}}
    [nobody] = normalise(
        asyncio.run(_enriched(shop, "refunds/create", missing)), source="shopify", topic="refunds/create"
    )
    assert nobody.customer_key is None  # the store knows no such order: no customer, not the forged one


def test_a_deleted_order_leaves_the_refund_without_a_customer(shop: FakeShopify) -> None:
    body = {**sample("refunds/create"), "order_id": 1}
    looked_up = asyncio.run(_enriched(shop, "refunds/create", body))
    assert ENRICHED not in looked_up
    [event] = normalise(looked_up, source="shopify", topic="refunds/create")
    assert event.customer_key is None


def test_a_store_that_does_not_answer_raises_lookup_failed(shop: FakeShopify) -> None:
    shop.failures = [(503, {})] * 6  # every retry of the back-off answers 503

    async def go() -> None:
        async def no_sleep(_: float) -> None:
            return None

        async with httpx.AsyncClient() as http:
            admin = ShopifyAdmin(http, shop.api, TOKEN, sleep=no_sleep)
            await enrich("shopify", "inventory_levels/update", sample("inventory_levels/update"), admin)

    with pytest.raises(LookupFailedError, match="inventory_items"):
        asyncio.run(go())
    assert len(shop.requests) == 6


def test_a_wrong_token_is_a_lookup_failure_not_a_silent_blank(shop: FakeShopify) -> None:
    async def go() -> None:
        async with httpx.AsyncClient() as http:
            await enrich("shopify", "refunds/create", sample("refunds/create"), ShopifyAdmin(http, shop.api, "wrong"))

    with pytest.raises(LookupFailedError, match="401"):
        asyncio.run(go())


def test_a_stub_answers_like_the_store_for_dry_run_and_tests() -> None:
    stub = StubLookup(skus={"46012345678901": "BEANIE-CHA"})
    looked_up = asyncio.run(enrich("shopify", "inventory_levels/update", sample("inventory_levels/update"), stub))
    assert json.loads(json.dumps(looked_up[ENRICHED])) == {"inventory_item": {"sku": "BEANIE-CHA"}}


@pytest.mark.parametrize("order_id", ["1,2,3", "abc", "../orders", True, None, 0, {"id": 1}, "١٢"])
def test_only_a_plain_numeric_id_is_ever_put_into_a_query(shop: FakeShopify, order_id: object) -> None:
    body = {**sample("refunds/create"), "order_id": order_id}
    assert ENRICHED not in asyncio.run(_enriched(shop, "refunds/create", body))
    assert shop.requests == []


@pytest.mark.parametrize("db", database_params())
def test_serve_looks_a_refund_up_before_applying_it_and_it_reaches_the_goal(
    shop: FakeShopify, tmp_path: Any, db: str
) -> None:
    """On PostgreSQL the looked-up refund also moves to its customer's partition: the instance
    moving that customer's runs and profile applies it."""
    from flowrun.config import Secret
    from flowrun.runtime.records import partition_of
    from flowrun.state.schema import inbox, runs
    from tests.node import Node
    from tests.servekit import Clock, config, database_url

    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "f.yaml").write_text(
        "flow: review\non: order.created\nuntil: refund.created\nsteps:\n  - wait: 14d\n  - log: {message: ask}\n"
    )
    cfg = config(tmp_path, database_url(db, tmp_path), tmp_path / "flows")
    sources = {
        **cfg.sources,
        "shopify": {**cfg.sources["shopify"], "api_token": Secret(TOKEN, "T"), "api_url": shop.api},
    }
    node = Node(replace(cfg, sources=sources), Clock())
    try:
        node.deliver("shopify", "orders/create", json.dumps(ORDER, default=str).encode(), "o-1")
        node.settle()
        refund = (EXAMPLES / "refunds/create.json").read_bytes()
        node.deliver("shopify", "refunds/create", refund, "rf-1")
        node.settle()
        assert node.count(runs, runs.c.status == "converted") == 1  # the looked-up customer met the goal
        with node.db.connect() as conn:
            facts, part = conn.execute(select(inbox.c.facts, inbox.c.part).where(inbox.c.delivery_id == "rf-1")).one()
        assert '"email":"ada@example.com"' in facts
        assert part == (partition_of("email:ada@example.com") if db == "postgresql" else 0)
        assert [p for p, _ in _paths(shop)] == ["orders.json"]  # the order itself needed no lookup
    finally:
        node.close()
