"""loyalty_points: add or redeem points in the loyalty ledger (flowrun.loyalty).

The ledger lives in the state database and is written when the action is settled, in the
same transaction as the run's next step, so each action changes a balance once. Earning
points emits `loyalty.points_earned`. With `channels.loyalty_points.api_url` set, the
change is also POSTed to an outside loyalty service first, with the action's key as
`Idempotency-Key`; the local ledger stays the record flows read (`as:` gets its balance)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flowrun.actions.base import TEMPLATED, ActionType, DeliveryContext, obj, result
from flowrun.actions.provider import call
from flowrun.config_schema import SECRET
from flowrun.events import Event, customer_key
from flowrun.loyalty import Ledger, change_points, earned_event

if TYPE_CHECKING:
    from datetime import datetime

    from flowrun.engine.state import RunState


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
        customer={**TEMPLATED, "description": "whose balance; default the run's customer (email, else id)"},
    )
    result_schema = result(
        points={"type": "integer"},
        balance={"type": ["integer", "null"]},
        refused={"type": ["string", "null"], "description": "why the ledger refused the change"},
    )
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "api_url": {"type": "string", "description": "optional: POST each change here as JSON"},
            "api_key": {**SECRET, "description": "sent as `Authorization: Bearer`"},
        },
    }
    emits = ("loyalty.points_earned",)

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        params["points"] = int(params["points"])
        params.setdefault("reason", "")
        if not params.get("customer"):
            params["customer"] = customer_key(context)
        return params

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"points": params["points"], "balance": None, "refused": None}

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        url = ctx.setting("api_url")
        if url:
            headers = {"Idempotency-Key": key}
            if ctx.setting("api_key"):
                headers["Authorization"] = f"Bearer {ctx.setting('api_key')}"
            body = {"customer": params.get("customer"), "points": params["points"], "reason": params["reason"]}
            await call(ctx, "POST", str(url), provider="loyalty API", headers=headers, json=body)
        return self.simulate(params, key)

    def settle(
        self,
        params: Mapping[str, Any],
        key: str,
        result: dict[str, Any],
        run: RunState,
        ledger: Ledger,
        now: datetime,
    ) -> tuple[dict[str, Any], list[Event]]:
        who = str(params.get("customer") or "")
        if not who:
            return {**result, "refused": "the run has no customer; give loyalty_points a customer"}, []
        change = change_points(ledger, key, who, params["points"], str(params["reason"]), run.id, now)
        settled = {"points": params["points"], "balance": change.balance, "refused": change.refused or None}
        if change.entry is None or change.entry.points <= 0:
            return settled, []
        customer = dict(run.trigger.data.get("customer") or {})
        return settled, [earned_event(change.entry, customer, "flowrun")]
