"""update_stock: set or adjust a product's stock in the store.

WooCommerce: the product (or variation) is found by SKU and its `stock_quantity` written,
with stock management switched on. Shopify's REST API cannot look a SKU up, so there the
step names the inventory item and location (an `inventory.*` event carries both) and
uses `inventory_levels/set` or `inventory_levels/adjust`.

An `adjust` is read-then-write on WooCommerce and a relative change on Shopify: if the
store applied it but its answer was lost, a retry applies it again. `set` is safe to retry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import TEMPLATED, DeliveryContext, PermanentError, obj, result
from flowrun.actions.stores import STORE_SETTING, Shopify, StoreAction, WooCommerce, store_of, store_unconfigured


class UpdateStock(StoreAction):
    name = "update_stock"
    summary = "set or adjust the stock of a SKU in the store"
    params_schema = obj(
        [],
        sku=TEMPLATED,
        set={"type": ["integer", "string"], "description": "the new quantity (a number or a template)"},
        adjust={"type": ["integer", "string"], "description": "added to the quantity (negative to remove)"},
        inventory_item_id={**TEMPLATED, "description": "Shopify: default the event's inventory.inventory_item_id"},
        location_id={**TEMPLATED, "description": "Shopify: default the event's inventory.location_id"},
    )
    params_schema["oneOf"] = [{"required": ["set"]}, {"required": ["adjust"]}]
    result_schema = result(available={"type": ["integer", "null"]}, id={"type": ["string", "null"]})
    config_schema = STORE_SETTING

    def unconfigured(self, channels: Mapping[str, Any], sources: Mapping[str, Any]) -> str | None:
        return store_unconfigured(sources)

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        inventory = context.get("inventory") or {}
        for name in ("sku", "inventory_item_id", "location_id"):
            if not params.get(name) and inventory.get(name) is not None:
                params[name] = str(inventory[name])
        for name in ("set", "adjust"):
            if name in params:
                params[name] = int(params[name])
        return params

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"available": params.get("set"), "id": None}

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        if store_of(ctx) == "shopify":
            return await _shopify(Shopify(ctx), params)
        return await _woocommerce(WooCommerce(ctx), params)


async def _shopify(shop: Shopify, params: Mapping[str, Any]) -> dict[str, Any]:
    item, location = params.get("inventory_item_id"), params.get("location_id")
    if not item or not location:
        raise PermanentError(
            "Shopify needs inventory_item_id and location_id for update_stock (its REST API cannot look up a SKU)"
        )
    body: dict[str, Any] = {"location_id": int(location), "inventory_item_id": int(item)}
    if "set" in params:
        answer = await shop.request("POST", "inventory_levels/set.json", json={**body, "available": params["set"]})
    else:
        body["available_adjustment"] = params["adjust"]
        answer = await shop.request("POST", "inventory_levels/adjust.json", json=body)
    level = answer.json()["inventory_level"]
    return {"available": level.get("available"), "id": str(item)}


async def _woocommerce(woo: WooCommerce, params: Mapping[str, Any]) -> dict[str, Any]:
    sku = params.get("sku")
    if not sku:
        raise PermanentError("update_stock needs a sku on WooCommerce")
    found = (await woo.request("GET", "products", params={"sku": sku})).json()
    if not found:
        raise PermanentError(f"WooCommerce has no product with SKU {sku!r}")
    product = found[0]
    quantity = params["set"] if "set" in params else int(product.get("stock_quantity") or 0) + params["adjust"]
    parent = product.get("parent_id") or 0
    path = f"products/{parent}/variations/{product['id']}" if parent else f"products/{product['id']}"
    updated = (await woo.request("PUT", path, json={"manage_stock": True, "stock_quantity": quantity})).json()
    return {"available": updated.get("stock_quantity"), "id": str(product["id"])}
