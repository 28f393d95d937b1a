"""support_ticket: open a ticket in Zendesk (`POST /api/v2/tickets.json`, API token auth)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import TEMPLATED, ActionType, DeliveryContext, obj, result, stable_token
from flowrun.actions.provider import call
from flowrun.config_schema import SECRET


class SupportTicket(ActionType):
    name = "support_ticket"
    summary = "open a ticket in the helpdesk (Zendesk)"
    params_schema = obj(
        ["subject", "body"],
        subject=TEMPLATED,
        body=TEMPLATED,
        requester=TEMPLATED,
        priority={"enum": ["low", "normal", "high", "urgent"]},
        tags={"type": "array", "items": TEMPLATED},
    )
    result_schema = result(id={"type": "string"}, url={"type": ["string", "null"]})
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["subdomain", "email", "api_token"],
        "properties": {
            "subdomain": {"type": "string", "description": "your-shop in your-shop.zendesk.com"},
            "email": {"type": "string", "description": "the agent the API token belongs to"},
            "api_token": SECRET,
            "api_url": {"type": "string", "description": "default https://<subdomain>.zendesk.com"},
        },
    }

    def unconfigured(self, channels: Mapping[str, Any], sources: Mapping[str, Any]) -> str | None:
        return (
            None if channels.get("support_ticket") else "channels.support_ticket (Zendesk subdomain, email, api_token)"
        )

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"id": stable_token(key, 8).lower(), "url": None}

    def rate_key(self, params: Mapping[str, Any], ctx: DeliveryContext) -> tuple[str, str] | None:
        return ("zendesk", str(ctx.setting("subdomain") or ""))

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        subdomain, email, token = ctx.require("subdomain", "email", "api_token")
        base = str(ctx.setting("api_url") or f"https://{subdomain}.zendesk.com").rstrip("/")
        ticket: dict[str, Any] = {"subject": params["subject"], "comment": {"body": params["body"]}}
        if params.get("requester"):
            ticket["requester"] = {"email": params["requester"]}
        if params.get("priority"):
            ticket["priority"] = params["priority"]
        if params.get("tags"):
            ticket["tags"] = list(params["tags"])
        response = await call(
            ctx,
            "POST",
            f"{base}/api/v2/tickets.json",
            provider="Zendesk",
            explain=lambda b: f"{b['error']}: {b.get('description', '')} {b.get('details', '')}".strip(),
            json={"ticket": ticket},
            auth=(f"{email}/token", token),
            headers={"Idempotency-Key": key},
        )
        created = response.json()["ticket"]
        return {"id": str(created["id"]), "url": f"https://{subdomain}.zendesk.com/agent/tickets/{created['id']}"}
