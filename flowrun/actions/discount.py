"""discount: create a single-use discount code in the store."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flowrun.actions.base import TEMPLATED, DeliveryContext, obj, result, stable_token
from flowrun.actions.stores import STORE_SETTING, Shopify, StoreAction, WooCommerce, store_of, store_unconfigured
from flowrun.durations import DURATION_PATTERN, parse_duration


class Discount(StoreAction):
    name = "discount"
    summary = "create a discount code (Shopify price rule + code, WooCommerce coupon); keep it with `as:`"
    params_schema = obj(
        [],
        percent={"type": "number", "exclusiveMinimum": 0, "maximum": 100},
        amount={"type": "number", "exclusiveMinimum": 0},
        free_shipping={"type": "boolean"},
        prefix={"type": "string", "pattern": "^[A-Za-z0-9_-]{0,20}$"},
        expires_in={"type": "string", "pattern": DURATION_PATTERN},
        minimum_subtotal={"type": "number", "minimum": 0},
        usage_limit={"type": "integer", "minimum": 1},
        customer_email=TEMPLATED,
    )
    params_schema["oneOf"] = [{"required": ["percent"]}, {"required": ["amount"]}, {"required": ["free_shipping"]}]
    config_schema = STORE_SETTING
    result_schema = result(
        code={"type": "string"},
        percent={"type": ["number", "null"]},
        amount={"type": ["number", "null"]},
        expires_at={"type": ["string", "null"]},
        id={"type": "string"},
    )

    def unconfigured(self, channels: Mapping[str, Any], sources: Mapping[str, Any]) -> str | None:
        return store_unconfigured(sources)

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        now = context.get("now")
        if "expires_in" in params and isinstance(now, datetime):
            params["expires_at"] = (now + parse_duration(params["expires_in"])).isoformat()
        params.setdefault("usage_limit", 1)
        if isinstance(now, datetime):
            params.setdefault("starts_at", now.isoformat())
        return params

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {**self._expected(params, key), "id": stable_token("id" + key, 10).lower()}

    def _expected(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        """What both dry-run and the store get: the code is a function of the idempotency key,
        so a retry finds the code it created instead of making a second one."""
        code = f"{params.get('prefix', 'FLOW')}-{stable_token(key, 8)}"
        return {
            "code": code,
            "percent": params.get("percent"),
            "amount": params.get("amount"),
            "expires_at": params.get("expires_at"),
        }

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        expected = self._expected(params, key)
        if store_of(ctx) == "shopify":
            return {**expected, "id": await _shopify_code(Shopify(ctx), params, expected["code"])}
        return {**expected, "id": await _woo_coupon(WooCommerce(ctx), params, expected["code"])}


async def _shopify_code(shop: Shopify, params: Mapping[str, Any], code: str) -> str:
    """A price rule and its one code (REST price_rules + discount_codes); looked up first."""

    found = await shop.request(
        "GET", "discount_codes/lookup.json", params={"code": code}, ok=lambda r: r.status_code in (200, 303, 404)
    )
    if found.status_code in (200, 303):
        location = found.headers.get("location", "")
        return location.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json") or code
    rule: dict[str, Any] = {
        "title": code,
        "target_type": "line_item",
        "target_selection": "all",
        "allocation_method": "across",
        "customer_selection": "all",
        "once_per_customer": True,
        "usage_limit": params.get("usage_limit", 1),
        "starts_at": params.get("starts_at"),
    }
    if "percent" in params:
        rule |= {"value_type": "percentage", "value": f"-{params['percent']}"}
    elif "amount" in params:
        rule |= {"value_type": "fixed_amount", "value": f"-{params['amount']}"}
    else:
        rule |= {
            "target_type": "shipping_line",
            "allocation_method": "each",
            "value_type": "percentage",
            "value": "-100",
        }
    if params.get("expires_at"):
        rule["ends_at"] = params["expires_at"]
    if params.get("minimum_subtotal"):
        rule["prerequisite_subtotal_range"] = {"greater_than_or_equal_to": str(params["minimum_subtotal"])}
    rule = {k: v for k, v in rule.items() if v is not None}
    created = (await shop.request("POST", "price_rules.json", json={"price_rule": rule})).json()["price_rule"]
    answer = await shop.request(
        "POST", f"price_rules/{created['id']}/discount_codes.json", json={"discount_code": {"code": code}}
    )
    return str(answer.json()["discount_code"]["id"])


async def _woo_coupon(woo: WooCommerce, params: Mapping[str, Any], code: str) -> str:
    existing = (await woo.request("GET", "coupons", params={"code": code})).json()
    if existing:
        return str(existing[0]["id"])
    coupon: dict[str, Any] = {"code": code, "usage_limit": params.get("usage_limit", 1), "individual_use": True}
    if "percent" in params:
        coupon |= {"discount_type": "percent", "amount": str(params["percent"])}
    elif "amount" in params:
        coupon |= {"discount_type": "fixed_cart", "amount": str(params["amount"])}
    else:
        coupon |= {"discount_type": "fixed_cart", "amount": "0", "free_shipping": True}
    if params.get("expires_at"):
        coupon["date_expires_gmt"] = str(params["expires_at"])[:19]
    if params.get("minimum_subtotal"):
        coupon["minimum_amount"] = str(params["minimum_subtotal"])
    if params.get("customer_email"):
        coupon["email_restrictions"] = [params["customer_email"]]
    return str((await woo.request("POST", "coupons", json=coupon)).json()["id"])
