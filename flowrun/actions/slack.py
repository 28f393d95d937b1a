"""slack: a message to the shop's own Slack through an incoming webhook."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import TEMPLATED, ActionType, DeliveryContext, PermanentError, obj, revealed
from flowrun.actions.provider import call
from flowrun.config_schema import SECRET


class Slack(ActionType):
    name = "slack"
    summary = "post to a Slack channel through an incoming webhook"
    channel = None  # messages to the shop's own team: no customer guardrails
    params_schema = obj(
        [],
        text=TEMPLATED,
        blocks={"type": "array", "items": {"type": "object"}},
        webhook={"type": "string", "description": "name of a webhook in the project config"},
    )
    params_schema["anyOf"] = [{"required": ["text"]}, {"required": ["blocks"]}]
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "webhook_url": SECRET,
            "webhooks": {"type": "object", "additionalProperties": SECRET, "description": "named webhooks"},
        },
    }

    def unconfigured(self, channels: Mapping[str, Any], sources: Mapping[str, Any]) -> str | None:
        return None if channels.get("slack") else "channels.slack (webhook_url)"

    def rate_key(self, params: Mapping[str, Any], ctx: DeliveryContext) -> tuple[str, str] | None:
        return ("slack", str(params.get("webhook") or "webhook_url"))  # Slack limits each webhook

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        name = params.get("webhook")
        url = (ctx.settings.get("webhooks") or {}).get(name) if name else ctx.settings.get("webhook_url")
        if url is None:
            raise PermanentError(
                f"no Slack webhook {'named ' + repr(name) if name else 'webhook_url'} in channels.slack"
            )
        body = {k: params[k] for k in ("text", "blocks") if k in params}
        # Slack answers errors as plain text (invalid_payload, no_service, channel_is_archived...).
        await call(ctx, "POST", revealed(url), provider="Slack", json=body)
        return {}
