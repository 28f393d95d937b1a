"""The catalogue of canonical event types and the JSON Schema of each one's data.

This module is the source of truth; `schemas/events/*.json` is generated from it
(`flowrun schema --events DIR`) and a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Schema = dict[str, Any]

STR: Schema = {"type": ["string", "null"]}
INT: Schema = {"type": ["integer", "null"]}
MONEY: Schema = {"type": ["number", "null"], "description": "a number, in `currency`"}
BOOL: Schema = {"type": ["boolean", "null"]}
TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
ID: Schema = {"type": ["string", "null"], "description": "kept as a string: every digit of a 64-bit id"}


def obj(description: str, **props: Schema) -> Schema:
    return {"type": "object", "description": description, "properties": props, "additionalProperties": True}


def array_of(item: Schema) -> Schema:
    return {"type": "array", "items": item}


DATE: Schema = {"type": ["string", "null"], "format": "date"}
PROPERTIES_OF_LINE: Schema = {
    "type": "object",
    "description": "the line's own fields by name (Shopify line-item properties, WooCommerce item meta)",
    "additionalProperties": True,
}
LINE_ITEM = obj(
    "one line of an order or checkout",
    sku=STR,
    title=STR,
    quantity=INT,
    price=MONEY,
    product_id=ID,
    variant_id=ID,
    backordered={**BOOL, "description": "sold beyond stock (null: the store did not say)"},
    backordered_quantity=INT,
    expected_date={**DATE, "description": "when a backordered item is expected (a line property), YYYY-MM-DD"},
    properties=PROPERTIES_OF_LINE,
)
CUSTOMER = obj(
    "the customer the event is about",
    id=ID,
    email=STR,
    first_name=STR,
    last_name=STR,
    phone=STR,
    orders_count=INT,
    total_spent=MONEY,
    accepts_marketing=BOOL,
    tags=array_of({"type": "string"}),
    timezone=STR,
    country={**STR, "description": "ISO 3166-1 alpha-2, from the customer's address"},
    created_at=TIME,
)
ORDER = obj(
    "the order",
    id=ID,
    number=STR,
    name=STR,
    total_price=MONEY,
    subtotal_price=MONEY,
    currency=STR,
    financial_status=STR,
    fulfillment_status=STR,
    line_items=array_of(LINE_ITEM),
    backordered={**BOOL, "description": "some line is backordered"},
    discount_codes=array_of({"type": "string"}),
    landing_site=STR,
    referring_site=STR,
    source_name=STR,
    tags=array_of({"type": "string"}),
    note=STR,
    status_url=STR,
    created_at=TIME,
)
CHECKOUT = obj(
    "the checkout (cart at the payment step)",
    id=ID,
    token=STR,
    total_price=MONEY,
    currency=STR,
    recovery_url=STR,
    line_items=array_of(LINE_ITEM),
    created_at=TIME,
    updated_at=TIME,
    completed_at=TIME,
)
IMAGE = obj(
    "a product image",
    id=ID,
    src=STR,
    alt=STR,
    position=INT,
    width=INT,
    height=INT,
    created_at=TIME,
)
STRINGS = array_of({"type": "string"})
PRODUCT_FIELDS: dict[str, Schema] = {
    "id": ID,
    "title": STR,
    "sku": STR,
    "price": MONEY,
    "status": STR,
    "inventory_quantity": INT,
    "url": STR,
    "handle": STR,
    "type": {**STR, "description": "the merchant's product type (Shopify product_type; null on WooCommerce)"},
    "vendor": STR,
    "tags": STRINGS,
    "categories": {
        **STRINGS,
        "description": "WooCommerce categories; Shopify collections (looked up in the store's API)",
    },
    "images": array_of(IMAGE),
    "created_at": TIME,
    "updated_at": TIME,
}
PRODUCT = obj("the product", **PRODUCT_FIELDS)
PRODUCT_WITH_NEW_IMAGES = obj(
    "the product", **PRODUCT_FIELDS, new_images={**array_of(IMAGE), "description": "images this event adds"}
)
INVENTORY = obj(
    "a stock level",
    sku=STR,
    available=INT,
    inventory_item_id=ID,
    location_id=ID,
    threshold={**INT, "description": "the level the derived event crossed: low at or under it (`below: 10` is 9)"},
    product_title=STR,
)
SHIPMENT = obj(
    "a fulfilment / shipment",
    id=ID,
    order_id=ID,
    status=STR,
    tracking_number=STR,
    tracking_url=STR,
    carrier=STR,
)
REFUND = obj(
    "a refund",
    id=ID,
    order_id=ID,
    amount=MONEY,
    currency=STR,
    note=STR,
    restock=BOOL,
    line_items=array_of(LINE_ITEM),
)
RETURN = obj("a return request", id=ID, order_id=ID, reason=STR, line_items=array_of(LINE_ITEM))
SEGMENT = obj("a customer segment", name=STR)
INACTIVITY = obj("how long the customer has been quiet", days=INT, last_order_at=TIME)
LOYALTY = obj("a loyalty ledger change", points=INT, balance=INT, reason=STR)
SCHEDULE = obj("the schedule tick that started the run", fired_at=TIME, trigger=STR)
PROPERTIES: Schema = {
    "type": "object",
    "description": "free-form fields sent by the generic webhook",
    "additionalProperties": True,
}


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    parts: Mapping[str, Schema]

    def data_schema(self) -> Schema:
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://flowrun.dev/schemas/events/{self.name}.json",
            "title": self.name,
            "description": self.description,
            "type": "object",
            "properties": dict(self.parts),
            "required": sorted(self.parts),
            "additionalProperties": True,
        }


def _types() -> dict[str, EventType]:
    order = {"customer": CUSTOMER, "order": ORDER}
    checkout = {"customer": CUSTOMER, "checkout": CHECKOUT}
    inventory = {"inventory": INVENTORY, "product": PRODUCT}
    shipment = {"customer": CUSTOMER, "order": ORDER, "shipment": SHIPMENT}
    entries = [
        ("order.created", "an order was placed", order),
        ("order.updated", "an order changed in a way no other type names", order),
        ("order.paid", "an order was paid", order),
        ("order.fulfilled", "every item of an order was fulfilled", order),
        ("order.cancelled", "an order was cancelled", order),
        ("refund.created", "money was refunded", {**order, "refund": REFUND}),
        ("checkout.created", "a checkout was started", checkout),
        ("checkout.updated", "a checkout changed", checkout),
        ("checkout.abandoned", "derived: no order followed a checkout within the idle time", checkout),
        ("customer.created", "a customer account was created", {"customer": CUSTOMER}),
        ("customer.updated", "a customer changed", {"customer": CUSTOMER}),
        ("customer.inactive", "derived: no order for N days", {"customer": CUSTOMER, "inactivity": INACTIVITY}),
        ("product.created", "a product was created (every image is new)", {"product": PRODUCT_WITH_NEW_IMAGES}),
        ("product.updated", "a product changed", {"product": PRODUCT}),
        (
            "product.images_added",
            "derived: a product update carries images it did not have before",
            {"product": PRODUCT_WITH_NEW_IMAGES},
        ),
        ("inventory.changed", "a stock level changed", inventory),
        ("inventory.low", "derived: stock fell to or below the threshold (once per crossing)", inventory),
        ("inventory.restocked", "derived: stock rose back above the threshold", inventory),
        ("shipment.created", "a fulfilment was created (items shipped)", shipment),
        ("shipment.updated", "a shipment's tracking status changed", shipment),
        ("shipment.delivered", "a shipment was delivered", shipment),
        ("return.requested", "a customer asked to return items", {**order, "return": RETURN}),
        ("segment.entered", "a customer entered a segment", {"customer": CUSTOMER, "segment": SEGMENT}),
        ("segment.exited", "a customer left a segment", {"customer": CUSTOMER, "segment": SEGMENT}),
        (
            "loyalty.points_earned",
            "loyalty points were added to a customer's balance",
            {"customer": CUSTOMER, "loyalty": LOYALTY},
        ),
        ("schedule.tick", "a schedule or interval trigger fired", {"schedule": SCHEDULE}),
    ]
    return {name: EventType(name, desc, parts) for name, desc, parts in entries}


EVENT_TYPES: dict[str, EventType] = _types()

# -- Engagement: what an email or SMS provider's webhook says happened to a message flowrun
# sent (flowrun/engagement/ verifies and normalises them; `message.id` is the send's `message_id`).
MESSAGE = obj(
    "the message the provider reports on",
    provider={**STR, "description": "postmark, sendgrid, mailgun or twilio"},
    id={**STR, "description": "the provider's message id, as the send action's `message_id`; null if it gave none"},
    channel={**STR, "description": "email or sms"},
    recipient={**STR, "description": "the address or E.164 number the message went to"},
    url={**STR, "description": "message.clicked: the link"},
    bounce_type={**STR, "description": "message.bounced: hard (permanent) or soft (temporary)"},
    reason={**STR, "description": "message.bounced and others: the provider's or receiving server's words"},
    machine_open={**BOOL, "description": "message.opened: a machine opened it (Apple Mail Privacy Protection...)"},
    run={**STR, "description": "the run that sent it (null: no send has this message id)"},
    flow={**STR, "description": "the flow that sent it"},
    step={**STR, "description": "the step that sent it: its name, else its path"},
    split={**STR, "description": "the split step around that step, if any"},
    arm={**STR, "description": "the split arm it was sent in, if any"},
    metadata={
        "type": "object",
        "description": "values the send attached, echoed by the provider",
        "additionalProperties": True,
    },
)
ENGAGEMENT_PARTS = {"customer": CUSTOMER, "message": MESSAGE}
EVENT_TYPES.update(
    (name, EventType(name, description, ENGAGEMENT_PARTS))
    for name, description in (
        ("message.delivered", "the provider delivered a message (the receiving server or handset took it)"),
        ("message.opened", "a recipient (or a machine: see message.machine_open) opened an email or read a message"),
        ("message.clicked", "a recipient clicked a tracked link in a message"),
        ("message.bounced", "a message could not be delivered (message.bounce_type: hard or soft)"),
        ("message.complained", "a recipient marked a message as spam"),
        ("message.unsubscribed", "a recipient unsubscribed through the provider"),
    )
)
CUSTOM = EventType(
    "custom.*",
    "any event sent to the generic webhook, named custom.<anything>",
    {"customer": CUSTOMER, "properties": PROPERTIES},
)


def lookup_type(name: str) -> EventType | None:
    if name.startswith("custom.") and len(name) > len("custom."):
        return CUSTOM
    return EVENT_TYPES.get(name)


def all_types() -> list[EventType]:
    return [*EVENT_TYPES.values(), CUSTOM]


def has_field(event_type: EventType, path: tuple[str, ...]) -> bool:
    """Whether a dotted path exists in the type's data (free-form objects accept anything)."""
    schema: Schema = {"type": "object", "properties": dict(event_type.parts), "additionalProperties": False}
    for part in path:
        if schema.get("type") == "array" or "array" in schema.get("type", []):
            schema = schema.get("items", {})
            if part.isdigit():
                continue
        props = schema.get("properties")
        if props is None:
            return bool(schema.get("additionalProperties", True)) or schema.get("type") != "object"
        if part not in props:
            return False
        schema = props[part]
    return True


def field_names(event_type: EventType) -> list[str]:
    out: list[str] = []

    def walk(prefix: str, schema: Schema) -> None:
        props = schema.get("properties")
        if schema.get("type") == "array":
            props = schema.get("items", {}).get("properties")
            prefix += "[]"
        if not props:
            out.append(prefix + (".*" if schema.get("additionalProperties") else ""))
            return
        for key, sub in props.items():
            walk(f"{prefix}.{key}" if prefix else key, sub)

    for key, sub in event_type.parts.items():
        walk(key, sub)
    return out


def complete(data: Any, schema: Schema) -> Any:
    """Fill every declared property that is missing with None, so flows can rely on the key."""
    if isinstance(data, dict) and "properties" in schema:
        out = dict(data)
        for key, sub in schema["properties"].items():
            if key not in out:
                out[key] = {} if sub.get("type") == "object" else ([] if sub.get("type") == "array" else None)
            out[key] = complete(out[key], sub)
        return out
    if isinstance(data, list) and isinstance(schema.get("items"), dict):
        return [complete(item, schema["items"]) for item in data]
    return data


def complete_event_data(type_name: str, data: Mapping[str, Any]) -> dict[str, Any]:
    event_type = lookup_type(type_name)
    if event_type is None:
        return dict(data)
    return complete(dict(data), {"properties": dict(event_type.parts)})  # type: ignore[no-any-return]
