"""tag_customer: add (or remove) tags on the customer in the store."""

from __future__ import annotations

from flowrun.actions.base import TEMPLATED, ActionType, obj

TAGS = {"type": "array", "items": TEMPLATED, "minItems": 1}


class TagCustomer(ActionType):
    name = "tag_customer"
    summary = "add or remove customer tags in the store (Shopify customer tags, WooCommerce meta)"
    params_schema = obj([], add=TAGS, remove=TAGS, customer_id=TEMPLATED)
    params_schema["anyOf"] = [{"required": ["add"]}, {"required": ["remove"]}]
