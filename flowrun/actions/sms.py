"""sms: a text message through Twilio's Messages API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import CATEGORY, TEMPLATED, ActionType, obj, result, stable_token


class Sms(ActionType):
    name = "sms"
    summary = "send a text message (Twilio Messages API)"
    channel = "sms"
    params_schema = obj(["to", "text"], to=TEMPLATED, text=TEMPLATED, category=CATEGORY)
    result_schema = result(sid={"type": "string"}, status={"type": "string"})

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"sid": "SM" + stable_token(key, 32).lower(), "status": "queued"}
