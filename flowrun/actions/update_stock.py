"""update_stock: set or adjust a product's stock in the store."""

from __future__ import annotations

from flowrun.actions.base import TEMPLATED, ActionType, obj, result


class UpdateStock(ActionType):
    name = "update_stock"
    summary = "set or adjust the stock of a SKU in the store"
    params_schema = obj(["sku"], sku=TEMPLATED, set={"type": "integer"}, adjust={"type": "integer"})
    params_schema["oneOf"] = [{"required": ["set"]}, {"required": ["adjust"]}]
    result_schema = result(available={"type": ["integer", "null"]})
