"""order_note: add a note to the order in the store."""

from __future__ import annotations

from flowrun.actions.base import TEMPLATED, ActionType, obj


class OrderNote(ActionType):
    name = "order_note"
    summary = "add a note to an order (Shopify order note, WooCommerce order note)"
    params_schema = obj(
        ["note"],
        note=TEMPLATED,
        order_id=TEMPLATED,
        customer_visible={"type": "boolean", "description": "WooCommerce: show the note to the customer"},
    )
