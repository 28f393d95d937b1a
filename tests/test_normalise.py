"""Normalisation checked against the stores' own published samples (../shared/fixtures)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from flowrun.events.catalogue import lookup_type
from flowrun.events.normalise import normalise, parse_json, topic_types
from tests.conftest import ROOT


def load(path: Path) -> object:
    return parse_json(path.read_text())


def test_shopify_orders_from_the_published_list(fixtures: Path) -> None:
    orders = load(fixtures / "shopify/rest/orders_list.json")["orders"]
    [event] = normalise(orders[0], source="shopify", topic="orders/create")
    assert event.type == "order.created"
    order, customer = event.data["order"], event.data["customer"]
    assert order["total_price"] == Decimal("598.94") and order["currency"] == "USD"
    assert order["number"] == "1001" and order["name"] == "#1001"
    assert customer["email"] == "bob.norman@hostmail.com"
    assert customer["id"] == str(orders[0]["customer"]["id"])
    assert event.customer_key == "email:bob.norman@hostmail.com"
    assert event.raw is orders[0]


def test_shopify_abandoned_checkout_2025_07(fixtures: Path) -> None:
    body = load(fixtures / "shopify/rest/abandoned_checkouts_list.2025-07.json")["checkouts"][0]
    [event] = normalise(body, source="shopify", topic="checkouts/create")
    checkout = event.data["checkout"]
    assert checkout["total_price"] == Decimal(body["total_price"])
    assert checkout["recovery_url"] == body["abandoned_checkout_url"]
    assert [i["sku"] for i in checkout["line_items"]] == [i["sku"] for i in body["line_items"]]
    assert all(isinstance(i["price"], Decimal) for i in checkout["line_items"])


@pytest.mark.parametrize(
    ("file", "topic", "types"),
    [
        ("order.created.json", "order.created", ["order.created", "order.paid"]),
        ("order.updated.json", "order.updated", ["order.fulfilled"]),
        ("customer.created.json", "customer.created", ["customer.created"]),
        ("product.updated.json", "product.updated", ["product.updated"]),
    ],
)
def test_woocommerce_payloads(fixtures: Path, file: str, topic: str, types: list[str]) -> None:
    body = load(fixtures / "woocommerce/payloads" / file)
    events = normalise(body, source="woocommerce", topic=topic)
    assert [e.type for e in events] == types
    assert set(types) <= (topic_types("woocommerce", topic) or set())
    if "order" in events[0].data:
        assert events[0].data["order"]["total_price"] == Decimal(body["total"])
        assert events[0].data["customer"]["email"] == body["billing"]["email"]


def test_woocommerce_status_events_are_keyed_so_repeats_dedupe(fixtures: Path) -> None:
    body = load(fixtures / "woocommerce/payloads/order.updated.json")
    first = normalise(body, source="woocommerce", topic="order.updated")
    again = normalise({**body, "date_modified_gmt": "2030-01-01T00:00:00"}, source="woocommerce", topic="order.updated")
    assert [e.id for e in first] == [e.id for e in again]


def test_ids_above_2_pow_53_keep_every_digit() -> None:
    text = (ROOT / "examples/events/shopify/orders/create.json").read_text()
    [event] = normalise(parse_json(text), source="shopify", topic="orders/create")
    assert event.data["order"]["id"] == "5764883652903181234"
    assert int(event.data["order"]["id"]) > 2**53
    assert event.data["customer"]["id"] == "7362947358123456789"


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "examples/events").rglob("*.json")),
    ids=lambda p: str(p.relative_to(ROOT / "examples/events")),
)
def test_every_example_normalises_to_its_schema(path: Path) -> None:
    from jsonschema import Draft202012Validator

    from flowrun.jsonout import plain

    relative = path.relative_to(ROOT / "examples/events")
    store = relative.parts[0]
    topic = "/".join(relative.with_suffix("").parts[1:]) if store == "shopify" else relative.stem
    source = store if store in ("shopify", "woocommerce") else None
    for event in normalise(load(path), source=source, topic=topic if source else None):
        if source:  # what the worker assumes before reading a body
            assert event.type in (topic_types(source, topic) or set())
        schema = lookup_type(event.type).data_schema()
        errors = list(Draft202012Validator(schema).iter_errors(plain(dict(event.data))))
        assert not errors, [e.message for e in errors]
        for part in lookup_type(event.type).parts:
            assert part in event.data


def test_canonical_fields_every_flow_can_rely_on() -> None:
    body = json.loads((ROOT / "examples/events/woocommerce/order.created.json").read_text())
    [created, _paid] = normalise(body, source="woocommerce", topic="order.created")
    for field in ("id", "email", "first_name", "phone", "orders_count", "total_spent"):
        assert field in created.data["customer"]
    for field in ("id", "number", "total_price", "currency", "line_items"):
        assert field in created.data["order"]
    assert set(created.data["order"]["line_items"][0]) >= {"sku", "title", "quantity", "price"}


@pytest.mark.parametrize("status", ["pending", "on-hold", "processing", "completed", "cancelled", "refunded"])
def test_woocommerce_order_topics_declare_every_type_a_status_gives(fixtures: Path, status: str) -> None:
    body = {**load(fixtures / "woocommerce/payloads/order.updated.json"), "status": status}  # type: ignore[dict-item]
    for topic in ("order.created", "order.updated"):
        types = {e.type for e in normalise(body, source="woocommerce", topic=topic)}
        assert types <= (topic_types("woocommerce", topic) or set())


def test_topic_types_is_none_where_only_the_body_tells() -> None:
    assert topic_types("custom", None) is None
    assert topic_types("shopify", "carts/create") is None  # unknown: read, then rejected
    assert topic_types("shopify", "fulfillments/update") == {"shipment.delivered", "shipment.updated"}


SCENARIOS = ROOT / "examples/scenarios"


def _scenario_topic(path: Path) -> tuple[str, str]:
    """examples/scenarios/<source>/<topic...>/<label>.json: a store body in one situation."""
    relative = path.relative_to(SCENARIOS)
    return relative.parts[0], "/".join(relative.parts[1:-1])


@pytest.mark.parametrize(
    "path", sorted(SCENARIOS.rglob("*.json")), ids=lambda p: str(p.relative_to(ROOT / "examples/scenarios"))
)
def test_every_scenario_normalises_to_its_schema(path: Path) -> None:
    from jsonschema import Draft202012Validator

    from flowrun.jsonout import plain

    source, topic = _scenario_topic(path)
    for event in normalise(load(path), source=source, topic=topic):
        assert event.type in (topic_types(source, topic) or set())
        errors = list(Draft202012Validator(lookup_type(event.type).data_schema()).iter_errors(plain(dict(event.data))))
        assert not errors, [e.message for e in errors]
        assert "_flowrun" not in event.raw


def test_shopify_product_create_from_the_sdk_sample(fixtures: Path) -> None:
    body = load(fixtures / "shopify/webhooks-extra/product.rest-2025-07.create_response.json")["product"]
    [event] = normalise(body, source="shopify", topic="products/create")
    product = event.data["product"]
    assert event.type == "product.created" and event.id == f"shopify:products/create:{body['id']}"
    assert (product["title"], product["type"], product["vendor"]) == (body["title"], "Snowboard", "Burton")
    assert (product["tags"], product["images"], product["new_images"], product["categories"]) == ([], [], [], [])
    assert product["handle"] == body["handle"] and product["status"] == "draft"
    assert product["created_at"] == "2025-04-02T16:36:28Z"


def test_shopify_product_images_are_canonical_and_a_create_makes_them_all_new() -> None:
    [event] = normalise(
        load(ROOT / "examples/events/shopify/products/create.json"), source="shopify", topic="products/create"
    )
    product = event.data["product"]
    assert [i["position"] for i in product["images"]] == [1, 2]
    assert product["images"][0]["alt"] == "Alpaca mittens in oatmeal" and product["images"][1]["alt"] is None
    assert product["images"][0]["src"].startswith("https://cdn.shopify.com/") and product["images"][0]["width"] == 2048
    assert product["new_images"] == product["images"]
    assert product["tags"] == ["winter", "alpaca", "new-in"] and product["type"] == "Gloves"
    [update] = normalise(
        load(ROOT / "examples/events/shopify/products/update.json"), source="shopify", topic="products/update"
    )
    assert "new_images" not in update.data["product"]  # an update alone cannot tell: product.images_added does


def test_shopify_refund_from_the_sdk_sample(fixtures: Path) -> None:
    body = load(fixtures / "shopify/webhooks-extra/refund.rest-2025-07.create_response.json")["refund"]
    [event] = normalise(body, source="shopify", topic="refunds/create")
    refund = event.data["refund"]
    assert refund["amount"] == Decimal("41.94") and refund["currency"] == "USD" and refund["restock"] is False
    [line] = refund["line_items"]
    assert (line["sku"], line["quantity"], line["title"]) == ("IPOD2008RED", 1, "IPod Nano - 8gb")
    assert event.data["order"]["id"] == str(body["order_id"]) and event.customer_key is None  # until looked up


def test_woocommerce_product_categories_tags_and_images_from_the_docs_sample(fixtures: Path) -> None:
    body = load(fixtures / "woocommerce/payloads/product.updated.json")
    [event, *_] = normalise(body, source="woocommerce", topic="product.updated")
    product = event.data["product"]
    assert product["categories"] == ["Clothing", "T-shirts"] and product["type"] is None
    assert [i["id"] for i in product["images"]] == ["792", "793"]
    assert product["images"][0]["created_at"] == "2017-03-23T20:01:13Z" and product["images"][1]["position"] == 2


def test_woocommerce_product_created() -> None:
    events = normalise(
        load(ROOT / "examples/events/woocommerce/product.created.json"), source="woocommerce", topic="product.created"
    )
    assert [e.type for e in events] == ["product.created", "inventory.changed"]
    product = events[0].data["product"]
    assert product["categories"] == ["Brewing gear", "Kettles"] and product["tags"] == ["new"]
    assert [i["src"] for i in product["new_images"]] == [i["src"] for i in product["images"]] != []


def test_backorders_on_shopify_lines_from_the_variant_and_a_line_property() -> None:
    body = load(SCENARIOS / "shopify/orders/create/backorder.json")
    [event] = normalise(body, source="shopify", topic="orders/create")
    beanie, scarf = event.data["order"]["line_items"]
    assert (beanie["backordered"], beanie["expected_date"]) == (False, None)
    assert (scarf["backordered"], scarf["backordered_quantity"], scarf["expected_date"]) == (True, 1, "2026-02-10")
    assert scarf["properties"] == {"Expected date": "2026-02-10", "_source": "preorder-widget"}
    assert event.data["order"]["backordered"] is True
    [plain] = normalise(
        load(ROOT / "examples/events/shopify/orders/create.json"), source="shopify", topic="orders/create"
    )
    assert [i["backordered"] for i in plain.data["order"]["line_items"]] == [None, None]  # not looked up: unknown
    assert plain.data["order"]["backordered"] is None


def test_backorders_on_woocommerce_lines_from_the_backordered_item_meta() -> None:
    events = normalise(
        load(SCENARIOS / "woocommerce/order.created/backorder.json"), source="woocommerce", topic="order.created"
    )
    pour, filters = events[0].data["order"]["line_items"]
    assert (pour["backordered"], pour["backordered_quantity"], pour["expected_date"]) == (True, 1, "2026-01-20")
    assert "_reduced_stock" not in pour["properties"] and pour["properties"]["Backordered"] == "1"
    assert (filters["backordered"], filters["backordered_quantity"]) == (False, None)
    assert events[0].data["order"]["backordered"] is True


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"_Expected_Date": "2026-03-01T00:00:00Z"}, (None, None, "2026-03-01")),
        ({"Backorder date": "2026-03-01", "backorder": "yes"}, (True, None, "2026-03-01")),
        ({"Backordered": "0"}, (False, None, None)),
        ({"Backordered": "3"}, (True, 3, None)),
        ({"Expected date": "next week"}, (None, None, None)),
        ({"Expected date": "2026-02-30"}, (None, None, None)),
        ({"Expected date": ["2026-02-01"]}, (None, None, None)),
        ({"Gift note": "x" * 10_000}, (None, None, None)),
    ],
)
def test_backorder_properties_by_name(properties: dict[str, object], expected: tuple[object, ...]) -> None:
    from flowrun.events.values import backorder_properties

    assert backorder_properties(properties) == expected


def test_hostile_line_properties_do_not_break_normalisation() -> None:
    body = load(ROOT / "examples/events/shopify/orders/create.json")
    body["line_items"][0]["properties"] = [None, "x", {"name": None, "value": None}, {"value": 1}]  # type: ignore[index]
    body["line_items"][1]["properties"] = {"not": "a list"}  # type: ignore[index]
    [event] = normalise(body, source="shopify", topic="orders/create")
    assert [i["properties"] for i in event.data["order"]["line_items"]] == [{}, {}]


def test_the_customers_country_comes_from_the_address() -> None:
    [shopify] = normalise(
        load(ROOT / "examples/events/shopify/orders/create.json"), source="shopify", topic="orders/create"
    )
    [woo, _] = normalise(
        load(ROOT / "examples/events/woocommerce/order.created.json"), source="woocommerce", topic="order.created"
    )
    assert shopify.data["customer"]["country"] == "US"
    assert (
        woo.data["customer"]["country"]
        == load(ROOT / "examples/events/woocommerce/order.created.json")["billing"]["country"]
    )  # type: ignore[index]
