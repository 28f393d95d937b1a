"""push: a web or mobile push notification through OneSignal's REST API
(`POST /notifications`, `Authorization: Key <app API key>`), addressed by external id."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import (
    CATEGORY,
    TEMPLATED,
    ActionType,
    DeliveryContext,
    PermanentError,
    obj,
    result,
    stable_token,
)
from flowrun.actions.provider import call
from flowrun.config_schema import SECRET


class Push(ActionType):
    name = "push"
    summary = "send a web or mobile push notification (OneSignal; `to` is the user's external id)"
    channel = "push"
    params_schema = obj(
        ["to", "title"], to=TEMPLATED, title=TEMPLATED, body=TEMPLATED, url=TEMPLATED, category=CATEGORY
    )
    result_schema = result(
        id={"type": "string"},
        message_id={"type": "string", "description": "the provider's id (as `id`), which its webhooks report"},
    )
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["app_id", "api_key"],
        "properties": {
            "app_id": {"type": "string"},
            "api_key": SECRET,
            "api_url": {"type": "string", "description": "default https://api.onesignal.com"},
        },
    }

    def unconfigured(self, channels: Mapping[str, Any], sources: Mapping[str, Any]) -> str | None:
        return None if channels.get("push") else "channels.push (OneSignal app_id, api_key)"

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        notification = stable_token(key, 12).lower()
        return {"id": notification, "message_id": notification}

    def rate_key(self, params: Mapping[str, Any], ctx: DeliveryContext) -> tuple[str, str] | None:
        return ("onesignal", str(ctx.setting("app_id") or ""))

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        app_id, api_key = ctx.require("app_id", "api_key")
        body: dict[str, Any] = {
            "app_id": app_id,
            "target_channel": "push",
            "include_aliases": {"external_id": [str(params["to"])]},
            "headings": {"en": params["title"]},
            "contents": {"en": params.get("body") or params["title"]},
            # OneSignal drops a repeat with the same key for 30 days: a re-send after a crash is one push.
            "idempotency_key": str(uuid.UUID(bytes=hashlib.sha256(key.encode()).digest()[:16], version=4)),
        }
        if params.get("url"):
            body["url"] = params["url"]
        base = str(ctx.setting("api_url", "https://api.onesignal.com")).rstrip("/")
        response = await call(
            ctx,
            "POST",
            f"{base}/notifications",
            provider="OneSignal",
            explain=lambda b: "; ".join(map(str, b["errors"])) if isinstance(b["errors"], list) else str(b["errors"]),
            json=body,
            headers={"Authorization": f"Key {api_key}"},
        )
        answer = response.json()
        if not answer.get("id"):  # 200 with no id: nobody matched (e.g. the user never subscribed)
            raise PermanentError(f"OneSignal sent nothing: {answer.get('errors') or answer}")
        return {"id": str(answer["id"]), "message_id": str(answer["id"])}
