"""push: a web or mobile push notification."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import CATEGORY, TEMPLATED, ActionType, obj, result, stable_token


class Push(ActionType):
    name = "push"
    summary = "send a web or mobile push notification"
    channel = "push"
    params_schema = obj(
        ["to", "title"], to=TEMPLATED, title=TEMPLATED, body=TEMPLATED, url=TEMPLATED, category=CATEGORY
    )
    result_schema = result(id={"type": "string"})

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"id": stable_token(key, 12).lower()}
