"""tag_customer: add (or remove) tags on the customer in the store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import TEMPLATED, DeliveryContext, PermanentError, obj, result
from flowrun.actions.stores import STORE_SETTING, Shopify, StoreAction, WooCommerce, store_of, store_unconfigured

TAGS = {"type": "array", "items": TEMPLATED, "minItems": 1}
WOO_META = "flowrun_tags"  # WooCommerce customers have no tags: flowrun keeps them in this meta field


class TagCustomer(StoreAction):
    name = "tag_customer"
    summary = "add or remove customer tags in the store (Shopify customer tags, WooCommerce meta)"
    params_schema = obj([], add=TAGS, remove=TAGS, customer_id=TEMPLATED)
    params_schema["anyOf"] = [{"required": ["add"]}, {"required": ["remove"]}]
    result_schema = result(tags={"type": "array", "items": {"type": "string"}})
    config_schema = STORE_SETTING

    def unconfigured(self, channels: Mapping[str, Any], sources: Mapping[str, Any]) -> str | None:
        return store_unconfigured(sources)

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        customer = context.get("customer") or {}
        if not params.get("customer_id") and customer.get("id"):
            params["customer_id"] = str(customer["id"])
        return params

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"tags": list(params.get("add", []))}

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        customer_id = params.get("customer_id")
        if not customer_id:
            raise PermanentError("the event names no customer id; give tag_customer a customer_id")
        add, remove = list(params.get("add", [])), set(params.get("remove", []))
        if store_of(ctx) == "shopify":
            shop = Shopify(ctx)
            current = (await shop.request("GET", f"customers/{customer_id}.json")).json()["customer"]
            tags = _merge(str(current.get("tags") or "").split(","), add, remove)
            body = {"customer": {"id": int(customer_id), "tags": ", ".join(tags)}}
            await shop.request("PUT", f"customers/{customer_id}.json", json=body)
            return {"tags": tags}
        woo = WooCommerce(ctx)
        current = (await woo.request("GET", f"customers/{customer_id}")).json()
        stored = next((m["value"] for m in current.get("meta_data", []) if m.get("key") == WOO_META), "")
        tags = _merge(str(stored).split(","), add, remove)
        await woo.request(
            "PUT", f"customers/{customer_id}", json={"meta_data": [{"key": WOO_META, "value": ",".join(tags)}]}
        )
        return {"tags": tags}


def _merge(existing: list[str], add: list[str], remove: set[str]) -> list[str]:
    tags = [t.strip() for t in existing if t.strip()]
    tags += [t for t in add if t not in tags]
    return [t for t in tags if t not in remove]
