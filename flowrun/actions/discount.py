"""discount: create a single-use discount code in the store."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flowrun.actions.base import TEMPLATED, ActionType, obj, result, stable_token
from flowrun.durations import DURATION_PATTERN, parse_duration


class Discount(ActionType):
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
    result_schema = result(
        code={"type": "string"},
        percent={"type": ["number", "null"]},
        amount={"type": ["number", "null"]},
        expires_at={"type": ["string", "null"]},
        id={"type": "string"},
    )

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        now = context.get("now")
        if "expires_in" in params and isinstance(now, datetime):
            params["expires_at"] = (now + parse_duration(params["expires_in"])).isoformat()
        params.setdefault("usage_limit", 1)
        return params

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        code = f"{params.get('prefix', 'FLOW')}-{stable_token(key, 8)}"
        return {
            "code": code,
            "percent": params.get("percent"),
            "amount": params.get("amount"),
            "expires_at": params.get("expires_at"),
            "id": stable_token("id" + key, 10).lower(),
        }
