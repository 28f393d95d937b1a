"""Shopify webhook bodies (Admin REST resource shapes) to canonical events."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from flowrun.errors import UnknownTopicError
from flowrun.events import Event, customer_key
from flowrun.events.catalogue import complete_event_data
from flowrun.events.values import (
    any_backordered,
    backorder_properties,
    enriched,
    ident,
    integer,
    iso,
    money,
    tags,
    text,
    timestamp,
    untouched,
)

Body = Mapping[str, Any]


def customer(body: Body) -> dict[str, Any]:
    c = body.get("customer") or {}
    address = body.get("billing_address") or body.get("shipping_address") or c.get("default_address") or {}
    country = address.get("country_code") or (c.get("default_address") or {}).get("country_code")
    consent = (c.get("email_marketing_consent") or {}).get("state")
    accepts = c.get("accepts_marketing")
    if accepts is None and consent is not None:
        accepts = consent == "subscribed"
    if accepts is None and "buyer_accepts_marketing" in body:
        accepts = bool(body["buyer_accepts_marketing"])
    return {
        "id": ident(c.get("id")),
        "email": text(c.get("email") or body.get("email") or body.get("contact_email")),
        "first_name": text(c.get("first_name") or address.get("first_name")),
        "last_name": text(c.get("last_name") or address.get("last_name")),
        "phone": text(c.get("phone") or body.get("phone") or address.get("phone")),
        "orders_count": integer(c.get("orders_count")),
        "total_spent": money(c.get("total_spent")),
        "accepts_marketing": accepts,
        "tags": tags(c.get("tags")),
        "timezone": None,
        "country": text(country),
        "created_at": iso(c.get("created_at")),
    }


def _backorder(item: Body, properties: dict[str, Any], variants: Mapping[str, Any]) -> dict[str, Any]:
    """A variant sold with `inventory_policy: continue` whose stock went below zero is
    backordered (the variant as looked up, see events.enrich); a line property may say so too."""
    flag, quantity, expected = backorder_properties(properties)
    variant = variants.get(str(item.get("variant_id"))) or {}
    stock = integer(variant.get("inventory_quantity"))
    if variant and flag is None:
        flag = variant.get("inventory_policy") == "continue" and stock is not None and stock < 0
        if flag and quantity is None and stock is not None:
            quantity = min(-stock, integer(item.get("quantity")) or -stock)
    return {"backordered": flag, "backordered_quantity": quantity, "expected_date": expected}


def line_items(items: Any, variants: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    out = []
    for item in items or []:
        given = item.get("properties")
        properties = {
            p["name"]: p.get("value")
            for p in (given if isinstance(given, list) else [])
            if isinstance(p, Mapping) and isinstance(p.get("name"), str) and p["name"]
        }
        out.append(
            {
                "sku": text(item.get("sku")),
                "title": text(item.get("title") or item.get("name")),
                "quantity": integer(item.get("quantity")),
                "price": money(item.get("price")),
                "product_id": ident(item.get("product_id")),
                "variant_id": ident(item.get("variant_id")),
                **_backorder(item, properties, variants or {}),
                "properties": properties,
            }
        )
    return out


def order(body: Body) -> dict[str, Any]:
    items = line_items(body.get("line_items"), enriched(body).get("variants"))
    return {
        "id": ident(body.get("id")),
        "number": text(body.get("order_number") or body.get("number")),
        "name": text(body.get("name")),
        "total_price": money(body.get("total_price")),
        "subtotal_price": money(body.get("subtotal_price")),
        "currency": text(body.get("currency")),
        "financial_status": text(body.get("financial_status")),
        "fulfillment_status": text(body.get("fulfillment_status")),
        "line_items": items,
        "backordered": any_backordered(items),
        "discount_codes": [str(d.get("code")) for d in body.get("discount_codes") or [] if d.get("code")],
        "landing_site": text(body.get("landing_site")),
        "referring_site": text(body.get("referring_site")),
        "source_name": text(body.get("source_name")),
        "tags": tags(body.get("tags")),
        "note": text(body.get("note")),
        "status_url": text(body.get("order_status_url")),
        "created_at": iso(body.get("created_at")),
    }


def checkout(body: Body) -> dict[str, Any]:
    return {
        "id": ident(body.get("id")),
        "token": text(body.get("token")),
        "total_price": money(body.get("total_price")),
        "currency": text(body.get("currency") or body.get("presentment_currency")),
        "recovery_url": text(body.get("abandoned_checkout_url")),
        "line_items": line_items(body.get("line_items")),
        "created_at": iso(body.get("created_at")),
        "updated_at": iso(body.get("updated_at")),
        "completed_at": iso(body.get("completed_at")),
    }


def image(item: Body) -> dict[str, Any]:
    return {
        "id": ident(item.get("id")),
        "src": text(item.get("src")),
        "alt": text(item.get("alt")),
        "position": integer(item.get("position")),
        "width": integer(item.get("width")),
        "height": integer(item.get("height")),
        "created_at": iso(item.get("created_at")),
    }


def product(body: Body) -> dict[str, Any]:
    variants = body.get("variants") or [{}]
    first = variants[0] or {}
    images = [image(i) for i in body.get("images") or [] if isinstance(i, Mapping)]
    return {
        "id": ident(body.get("id")),
        "title": text(body.get("title")),
        "sku": text(first.get("sku")),
        "price": money(first.get("price")),
        "status": text(body.get("status")),
        "inventory_quantity": integer(first.get("inventory_quantity")),
        "url": None,
        "handle": text(body.get("handle")),
        "type": text(body.get("product_type")),
        "vendor": text(body.get("vendor")),
        "tags": tags(body.get("tags")),
        "categories": [str(c) for c in enriched(body).get("collections") or []],
        "images": sorted(images, key=lambda i: i["position"] or 0),
        "created_at": iso(body.get("created_at")),
        "updated_at": iso(body.get("updated_at")),
    }


def _product_created(body: Body) -> dict[str, Any]:
    made = product(body)
    return {"product": {**made, "new_images": list(made["images"])}}


def shipment(body: Body) -> dict[str, Any]:
    return {
        "id": ident(body.get("id")),
        "order_id": ident(body.get("order_id")),
        "status": text(body.get("shipment_status") or body.get("status")),
        "tracking_number": text(body.get("tracking_number")),
        "tracking_url": text(body.get("tracking_url")),
        "carrier": text(body.get("tracking_company")),
    }


def _order_event(body: Body) -> dict[str, Any]:
    return {"customer": customer(body), "order": order(body)}


def _fulfillment(body: Body) -> dict[str, Any]:
    destination = body.get("destination") or {}
    person = {"email": body.get("email"), "customer": {}, "billing_address": destination}
    return {"customer": customer(person), "order": {"id": ident(body.get("order_id"))}, "shipment": shipment(body)}


def _refund(body: Body) -> dict[str, Any]:
    """A refund names its order but not the customer: both come from the order as looked up
    (events.enrich), so a refund reaches the goal of the customer's runs."""
    transactions = [  # a failed or pending attempt gave nothing back
        t
        for t in body.get("transactions") or []
        if t.get("kind", "refund") == "refund" and t.get("status", "success") in ("success", None)
    ]
    amount = sum((money(t.get("amount")) or Decimal(0) for t in transactions), Decimal(0))
    currency = next((t.get("currency") for t in transactions if t.get("currency")), None)
    looked_up = enriched(body).get("order") or {}
    items = line_items(
        [{**(r.get("line_item") or {}), "quantity": r.get("quantity")} for r in body.get("refund_line_items") or []]
    )
    return {
        "customer": customer(looked_up),
        "order": {**(order(looked_up) if looked_up else {}), "id": ident(body.get("order_id"))},
        "refund": {
            "id": ident(body.get("id")),
            "order_id": ident(body.get("order_id")),
            "amount": amount,
            "currency": text(currency or looked_up.get("currency")),
            "note": text(body.get("note")),
            "restock": body.get("restock") if isinstance(body.get("restock"), bool) else None,
            "line_items": items,
        },
    }


def _inventory(body: Body) -> dict[str, Any]:
    # Shopify's inventory_levels/update body names no SKU: events.enrich looks the item up
    # (the poller puts it on the body as `sku`).
    item = enriched(body).get("inventory_item") or {}
    return {
        "inventory": {
            "sku": text(item.get("sku") or body.get("sku")),
            "available": integer(body.get("available")),
            "inventory_item_id": ident(body.get("inventory_item_id")),
            "location_id": ident(body.get("location_id")),
            "threshold": None,
            "product_title": text(body.get("product_title")),
        },
        "product": {},
    }


def _fulfillment_update_type(body: Body) -> str:
    return "shipment.delivered" if body.get("shipment_status") == "delivered" else "shipment.updated"


TOPICS: dict[str, tuple[str | Callable[[Body], str], Callable[[Body], dict[str, Any]]]] = {
    "orders/create": ("order.created", _order_event),
    "orders/updated": ("order.updated", _order_event),
    "orders/paid": ("order.paid", _order_event),
    "orders/fulfilled": ("order.fulfilled", _order_event),
    "orders/cancelled": ("order.cancelled", _order_event),
    "checkouts/create": ("checkout.created", lambda b: {"customer": customer(b), "checkout": checkout(b)}),
    "checkouts/update": ("checkout.updated", lambda b: {"customer": customer(b), "checkout": checkout(b)}),
    "customers/create": ("customer.created", lambda b: {"customer": customer({"customer": b})}),
    "customers/update": ("customer.updated", lambda b: {"customer": customer({"customer": b})}),
    "products/create": ("product.created", _product_created),
    "products/update": ("product.updated", lambda b: {"product": product(b)}),
    "inventory_levels/update": ("inventory.changed", _inventory),
    "fulfillments/create": ("shipment.created", _fulfillment),
    "fulfillments/update": (_fulfillment_update_type, _fulfillment),
    "refunds/create": ("refund.created", _refund),
}


# The event types a topic can become, known before its body is read (see `topic_types`).
_VARIABLE_TYPES = {"fulfillments/update": frozenset({"shipment.delivered", "shipment.updated"})}


def topic_types(topic: str) -> frozenset[str] | None:
    """Every type the topic's events can have, or None for a topic this module does not know."""
    if topic not in TOPICS:
        return None
    type_or_fn = TOPICS[topic][0]
    return frozenset({type_or_fn}) if isinstance(type_or_fn, str) else _VARIABLE_TYPES[topic]


# Topics that happen once per resource: keyed on the resource alone, so the webhook and
# the poller seeing the same new order make one event (and one confirmation email).
ONCE = (
    "orders/create",
    "orders/paid",
    "orders/fulfilled",
    "orders/cancelled",
    "checkouts/create",
    "customers/create",
    "products/create",
    "fulfillments/create",
    "refunds/create",
)


def event_id(topic: str, resource: Any, changed: Any) -> str:
    return f"shopify:{topic}:{resource}" if topic in ONCE else f"shopify:{topic}:{resource}:{changed}"


def normalise(
    topic: str, body: Body, *, delivery_id: str | None = None, received_at: datetime | None = None
) -> list[Event]:
    if topic not in TOPICS:
        raise UnknownTopicError("shopify", topic, list(TOPICS))
    type_or_fn, build = TOPICS[topic]
    event_type = type_or_fn if isinstance(type_or_fn, str) else type_or_fn(body)
    data = complete_event_data(event_type, build(body))
    resource = body["id"] if body.get("id") is not None else body.get("inventory_item_id")
    changed = body.get("updated_at") or body.get("created_at") or ""
    occurred = timestamp(body.get("updated_at") or body.get("created_at")) or received_at
    if occurred is None:
        raise ValueError("the body has no created_at/updated_at and no delivery time was given")
    return [
        Event(
            type=event_type,
            source="shopify",
            id=event_id(topic, resource, changed),
            occurred_at=occurred,
            data=data,
            raw=untouched(body),
            topic=topic,
            customer_key=customer_key(data),
            meta={"delivery_id": delivery_id} if delivery_id else {},
        )
    ]
