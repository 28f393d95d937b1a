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
