"""purchase_order: raise a purchase order with a supplier for low-stock items."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import TEMPLATED, ActionType, obj, result, stable_token

ITEM = obj(["sku", "quantity"], sku=TEMPLATED, quantity={"type": ["integer", "string"]}, title=TEMPLATED)


class PurchaseOrder(ActionType):
    name = "purchase_order"
    summary = "render a purchase order (CSV + HTML) and send it to the supplier by email or HTTP"
    params_schema = obj(
        ["supplier", "items"],
        supplier=TEMPLATED,
        send_to=TEMPLATED,
        items={"type": "array", "items": ITEM, "minItems": 1},
        note=TEMPLATED,
    )
    result_schema = result(number={"type": "string"}, lines={"type": "integer"})

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        for item in params["items"]:
            item["quantity"] = int(item["quantity"])
        return params

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"number": f"PO-{stable_token(key, 6)}", "lines": len(params["items"])}
