"""order_note: add a note to an order in the store.

Shopify keeps one free-text note per order (Admin REST `PUT orders/{id}.json`), so the
text is appended to it; WooCommerce keeps a list (`POST orders/{id}/notes`). Both look
first, so a retry after a lost answer does not add the note twice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import TEMPLATED, DeliveryContext, PermanentError, obj, result
from flowrun.actions.stores import STORE_SETTING, Shopify, StoreAction, WooCommerce, store_of, store_unconfigured


class OrderNote(StoreAction):
    name = "order_note"
    summary = "add a note to an order (appended to the Shopify order note; a WooCommerce order note)"
    params_schema = obj(
        ["note"],
        note=TEMPLATED,
        order_id=TEMPLATED,
        customer_visible={"type": "boolean", "description": "WooCommerce: show the note to the customer"},
    )
    result_schema = result(order_id={"type": "string"}, note_id={"type": ["string", "null"]})
    config_schema = STORE_SETTING

    def unconfigured(self, channels: Mapping[str, Any], sources: Mapping[str, Any]) -> str | None:
        return store_unconfigured(sources)

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        order = context.get("order") or {}
        if not params.get("order_id") and order.get("id"):
            params["order_id"] = str(order["id"])
        params["note"] = str(params["note"]).strip()
        return params

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"order_id": str(params.get("order_id") or ""), "note_id": None}

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        order_id, note = params.get("order_id"), params["note"]
        if not order_id:
            raise PermanentError("the event names no order id; give order_note an order_id")
        if not note:
            raise PermanentError("the note rendered empty")
        if store_of(ctx) == "shopify":
            shop = Shopify(ctx)
            current = (await shop.request("GET", f"orders/{order_id}.json")).json()["order"]
            existing = str(current.get("note") or "")
            if note not in existing:
                combined = f"{existing.rstrip()}\n{note}" if existing.strip() else note
                update: dict[str, Any] = {"id": int(order_id), "note": combined}
                await shop.request("PUT", f"orders/{order_id}.json", json={"order": update})
            return {"order_id": str(order_id), "note_id": None}
        woo = WooCommerce(ctx)
        visible = bool(params.get("customer_visible", False))
        notes = (await woo.request("GET", f"orders/{order_id}/notes", params={"type": "any"})).json()
        same = next(
            (n for n in notes if (str(n.get("note", "")).strip(), n.get("customer_note")) == (note, visible)), None
        )
        if same is None:
            note_body: dict[str, Any] = {"note": note, "customer_note": visible}
            same = (await woo.request("POST", f"orders/{order_id}/notes", json=note_body)).json()
        return {"order_id": str(order_id), "note_id": str(same["id"])}
