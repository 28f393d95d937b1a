"""support_ticket: open a ticket in the helpdesk."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import TEMPLATED, ActionType, obj, result, stable_token


class SupportTicket(ActionType):
    name = "support_ticket"
    summary = "open a ticket in the helpdesk (or any HTTP endpoint)"
    params_schema = obj(
        ["subject", "body"],
        subject=TEMPLATED,
        body=TEMPLATED,
        requester=TEMPLATED,
        priority={"enum": ["low", "normal", "high", "urgent"]},
        tags={"type": "array", "items": TEMPLATED},
    )
    result_schema = result(id={"type": "string"}, url={"type": ["string", "null"]})

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"id": stable_token(key, 8).lower(), "url": None}
