"""log: write a line to flowrun's log (useful while building a flow)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import TEMPLATED, ActionType, DeliveryContext, obj


class Log(ActionType):
    name = "log"
    summary = "write a message to the service log"
    params_schema = obj(["message"], message=TEMPLATED, level={"enum": ["debug", "info", "warning", "error"]})
    retry_by_default = False

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        level = getattr(logging, str(params.get("level", "info")).upper(), logging.INFO)
        ctx.log.log(level, "%s [%s]", params["message"], key)
        return {}
