"""WooCommerce webhook bodies (REST API v3 resource shapes) to canonical events."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flowrun.errors import UnknownTopicError
from flowrun.events import Event, customer_key
from flowrun.events.catalogue import complete_event_data
from flowrun.events.values import any_backordered, backorder_properties, ident, integer, iso, money, text, timestamp

Body = Mapping[str, Any]

# An order.updated delivery means "something changed"; its status says what.
STATUS_EVENTS = {
    "processing": "order.paid",
    "completed": "order.fulfilled",
    "cancelled": "order.cancelled",
    "refunded": "refund.created",
}
TOPICS = (
    "order.created",
    "order.updated",
    "customer.created",
    "customer.updated",
    "product.created",
    "product.updated",
)


def _gmt(body: Body, key: str) -> str | None:
    value = body.get(f"{key}_gmt")
    return iso(value + "Z") if isinstance(value, str) and value and value[-1] != "Z" else iso(value or body.get(key))


def customer_from_order(body: Body) -> dict[str, Any]:
    billing = body.get("billing") or {}
    return {
        "id": ident(body.get("customer_id")),
        "email": text(billing.get("email")),
        "first_name": text(billing.get("first_name")),
        "last_name": text(billing.get("last_name")),
        "phone": text(billing.get("phone")),
        "orders_count": None,
        "total_spent": None,
        "accepts_marketing": None,
        "tags": [],
        "timezone": None,
        "country": text(billing.get("country") or (body.get("shipping") or {}).get("country")),
        "created_at": None,
    }


def customer(body: Body) -> dict[str, Any]:
    billing = body.get("billing") or {}
    return {
        "id": ident(body.get("id")),
        "email": text(body.get("email") or billing.get("email")),
        "first_name": text(body.get("first_name") or billing.get("first_name")),
        "last_name": text(body.get("last_name") or billing.get("last_name")),
        "phone": text(billing.get("phone")),
        "orders_count": integer(body.get("orders_count")),
        "total_spent": money(body.get("total_spent")),
        "accepts_marketing": None,
        "tags": [],
        "timezone": None,
        "country": text(billing.get("country") or (body.get("shipping") or {}).get("country")),
        "created_at": _gmt(body, "date_created"),
    }


def line_item(item: Body) -> dict[str, Any]:
    """WooCommerce records a backorder on the line as item meta `Backordered` (the quantity
    not in stock when the order was placed); other meta become the line's properties."""
    meta = item.get("meta_data")
    properties = {
        m["key"]: m.get("value")
        for m in (meta if isinstance(meta, list) else [])
        if isinstance(m, Mapping) and isinstance(m.get("key"), str) and m["key"] and not m["key"].startswith("_")
    }
    flag, quantity, expected = backorder_properties(properties)
    return {
        "sku": text(item.get("sku")),
        "title": text(item.get("name")),
        "quantity": integer(item.get("quantity")),
        "price": money(item.get("price")),
        "product_id": ident(item.get("product_id")),
        "variant_id": ident(item.get("variation_id")),
        "backordered": bool(flag),
        "backordered_quantity": quantity,
        "expected_date": expected,
        "properties": properties,
    }


def order(body: Body) -> dict[str, Any]:
    items = [line_item(item) for item in body.get("line_items") or []]
    total = money(body.get("total"))
    shipping, tax = money(body.get("shipping_total")) or 0, money(body.get("total_tax")) or 0
    return {
        "id": ident(body.get("id")),
        "number": text(body.get("number")),
        "name": f"#{body.get('number')}" if body.get("number") else None,
        "total_price": total,
        "subtotal_price": total - shipping - tax if total is not None else None,
        "currency": text(body.get("currency")),
        "financial_status": "paid" if body.get("date_paid") else "pending",
        "fulfillment_status": "fulfilled" if body.get("status") == "completed" else None,
        "line_items": items,
        "backordered": any_backordered(items),
        "discount_codes": [str(c.get("code")) for c in body.get("coupon_lines") or [] if c.get("code")],
        "landing_site": None,
        "referring_site": None,
        "source_name": text(body.get("created_via")),
        "tags": [],
        "note": text(body.get("customer_note")),
        "status_url": None,
        "created_at": _gmt(body, "date_created"),
    }


def image(item: Body, position: int) -> dict[str, Any]:
    return {
        "id": ident(item.get("id")),
        "src": text(item.get("src")),
        "alt": text(item.get("alt")),
        "position": position,
        "width": None,
        "height": None,
        "created_at": _gmt(item, "date_created"),
    }


def product(body: Body) -> dict[str, Any]:
    images = [image(i, n) for n, i in enumerate(body.get("images") or [], 1) if isinstance(i, Mapping)]
    return {
        "id": ident(body.get("id")),
        "title": text(body.get("name")),
        "sku": text(body.get("sku")),
        "price": money(body.get("price")),
        "status": text(body.get("status")),
        "inventory_quantity": integer(body.get("stock_quantity")),
        "url": text(body.get("permalink")),
        "handle": text(body.get("slug")),
        "type": None,  # WooCommerce's `type` is simple/variable/grouped, not the merchant's product type
        "vendor": None,
        "tags": [str(t["name"]) for t in body.get("tags") or [] if isinstance(t, Mapping) and t.get("name")],
        "categories": [
            str(c["name"]) for c in body.get("categories") or [] if isinstance(c, Mapping) and c.get("name")
        ],
        "images": images,
        "created_at": _gmt(body, "date_created"),
        "updated_at": _gmt(body, "date_modified"),
    }


def _types_and_data(topic: str, body: Body) -> list[tuple[str, dict[str, Any]]]:
    if topic in ("order.created", "order.updated"):
        data = {"customer": customer_from_order(body), "order": order(body)}
        status = str(body.get("status") or "")
        types = [topic] if topic == "order.created" else []
        if status in STATUS_EVENTS:
            types.append(STATUS_EVENTS[status])
        if not types:
            types = ["order.updated"]
        return [(t, data) for t in types]
    if topic in ("customer.created", "customer.updated"):
        return [(topic, {"customer": customer(body)})]
    if topic in ("product.created", "product.updated"):
        prod = product(body)
        made = {**prod, "new_images": list(prod["images"])} if topic == "product.created" else prod
        out = [(topic, {"product": made})]
        if body.get("manage_stock") and body.get("stock_quantity") is not None:
            inventory = {
                "sku": prod["sku"],
                "available": prod["inventory_quantity"],
                "inventory_item_id": prod["id"],
                "location_id": None,
                "threshold": None,
                "product_title": prod["title"],
            }
            out.append(("inventory.changed", {"inventory": inventory, "product": prod}))
        return out
    raise UnknownTopicError("woocommerce", topic, TOPICS)


def topic_types(topic: str) -> frozenset[str] | None:
    """Every type the topic's events can have (as `_types_and_data` decides), or None."""
    if topic in ("order.created", "order.updated"):
        return frozenset({topic, "order.updated", *STATUS_EVENTS.values()})
    if topic in ("customer.created", "customer.updated"):
        return frozenset({topic})
    if topic in ("product.created", "product.updated"):
        return frozenset({topic, "inventory.changed"})
    return None


def normalise(
    topic: str, body: Body, *, delivery_id: str | None = None, received_at: datetime | None = None
) -> list[Event]:
    occurred = timestamp(_gmt(body, "date_modified")) or timestamp(_gmt(body, "date_created")) or received_at
    if occurred is None:
        raise ValueError("the body has no date_created/date_modified and no delivery time was given")
    events = []
    for event_type, data in _types_and_data(topic, body):
        data = complete_event_data(event_type, data)
        # A status-derived type is keyed on the resource alone, so a second update with the
        # same status does not repeat order.paid; plain updates are keyed on their time.
        key = f"woocommerce:{event_type}:{body.get('id')}"
        if event_type in ("order.updated", "customer.updated", "product.updated", "inventory.changed"):
            key += f":{body.get('date_modified_gmt') or body.get('date_modified') or ''}"
        meta = {"delivery_id": delivery_id} if delivery_id else {}
        events.append(
            Event(
                type=event_type,
                source="woocommerce",
                id=key,
                occurred_at=occurred,
                data=data,
                raw=body,
                topic=topic,
                customer_key=customer_key(data),
                meta=meta,
            )
        )
    return events
