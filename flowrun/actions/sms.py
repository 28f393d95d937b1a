"""sms: a text message through Twilio's Messages API."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import (
    CATEGORY,
    TEMPLATED,
    ActionType,
    CompileContext,
    DeliveryContext,
    PermanentError,
    obj,
    result,
    stable_token,
)
from flowrun.actions.provider import call
from flowrun.config_schema import SECRET
from flowrun.phones import E164, international, literal_problem, sendable
from flowrun.templating import Template


class Sms(ActionType):
    name = "sms"
    summary = "send a text message (Twilio Messages API)"
    channel = "sms"
    params_schema = obj(["to", "text"], to=TEMPLATED, text=TEMPLATED, category=CATEGORY)
    result_schema = result(
        sid={"type": "string"},
        status={"type": "string"},
        message_id={"type": "string", "description": "the provider's id (as `sid`), which its status callbacks report"},
    )
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["account_sid", "auth_token"],
        "properties": {
            "account_sid": {"type": "string", "pattern": "^AC[0-9a-fA-F]{32}$"},
            "auth_token": SECRET,
            "from": {"type": "string", "pattern": E164.pattern, "description": "a Twilio number in E.164"},
            "messaging_service_sid": {"type": "string", "pattern": "^MG[0-9a-fA-F]{32}$"},
            "api_url": {"type": "string", "description": "default https://api.twilio.com"},
            "status_callback": {
                "type": "string",
                "description": "where Twilio posts each message's status: https://<flowrun>/webhooks/twilio",
            },
        },
        "oneOf": [{"required": ["from"]}, {"required": ["messaging_service_sid"]}],
    }

    def unconfigured(self, channels: Mapping[str, Any], sources: Mapping[str, Any]) -> str | None:
        return None if channels.get("sms") else "channels.sms (Twilio account_sid, auth_token, from)"

    def compile_params(self, raw: Any, ctx: CompileContext) -> Any:
        params = super().compile_params(raw, ctx)
        to = params.get("to") if isinstance(params, dict) else None
        if isinstance(to, Template) and to.is_static:
            problem = literal_problem(to.source)
            if problem is not None:
                ctx.report((*ctx.path, "to"), *problem)
        return params

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        """A national number (as customers type them into checkouts) is made international
        with the customer's country; anything else keeps its digits and `+` for delivery to judge."""
        given = str(params["to"])
        customer = context.get("customer")
        country = customer.get("country") if isinstance(customer, Mapping) else None
        params["to"] = international(given, country if isinstance(country, str) else None) or re.sub(
            r"[\s().-]", "", given
        )
        return super().finish_params(params, context)

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        sid = "SM" + stable_token(key, 32).lower()
        return {"sid": sid, "status": "queued", "message_id": sid}

    def rate_key(self, params: Mapping[str, Any], ctx: DeliveryContext) -> tuple[str, str] | None:
        return ("twilio", str(ctx.setting("from") or ctx.setting("messaging_service_sid") or ""))

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        sid, token = ctx.require("account_sid", "auth_token")
        if not sendable(params["to"]):
            raise PermanentError(f"{params['to']!r} is not a phone number in E.164 form (+14155550123)")
        form = {"To": params["to"], "Body": params["text"]}
        if ctx.setting("messaging_service_sid"):
            form["MessagingServiceSid"] = ctx.setting("messaging_service_sid")
        else:
            form["From"] = ctx.setting("from")
        if ctx.setting("status_callback"):  # delivered / undelivered come back as message.* events
            form["StatusCallback"] = ctx.setting("status_callback")
        base = str(ctx.setting("api_url", "https://api.twilio.com")).rstrip("/")
        response = await call(
            ctx,
            "POST",
            f"{base}/2010-04-01/Accounts/{sid}/Messages.json",
            provider="Twilio",
            explain=lambda b: f"error {b['code']}: {b['message']} ({b.get('more_info', '')})",
            data=form,
            auth=(sid, token),
        )
        answer = response.json()
        sid = str(answer["sid"])
        return {"sid": sid, "status": str(answer.get("status", "queued")), "message_id": sid}
