"""loyalty_points: add or remove points in the loyalty ledger."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import TEMPLATED, ActionType, obj, result


class LoyaltyPoints(ActionType):
    name = "loyalty_points"
    summary = "add points to the customer's loyalty balance (negative to redeem); emits loyalty.points_earned"
    params_schema = obj(
        ["points"],
        points={
            "description": "a whole number, or a template such as '{{ (order.total_price * 10) | int }}'",
            "type": ["integer", "string"],
        },
        reason=TEMPLATED,
        customer=TEMPLATED,
    )
    result_schema = result(points={"type": "integer"}, balance={"type": ["integer", "null"]})
    retry_by_default = True

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        params["points"] = int(params["points"])
        return params

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"points": params["points"], "balance": None}
