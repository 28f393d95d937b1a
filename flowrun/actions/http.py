"""http: a generic HTTP request; the response is kept with `as:`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import TEMPLATED, ActionType, obj, result


class Http(ActionType):
    name = "http"
    summary = "call any HTTP endpoint; the response status, headers and JSON body are kept with `as:`"
    params_schema = obj(
        ["url"],
        method={"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"], "default": "POST"},
        url=TEMPLATED,
        headers={"type": "object", "additionalProperties": {"type": "string"}},
        query={"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
        json={"description": "a JSON body (any shape; strings may be templates)"},
        form={"type": "object", "additionalProperties": {"type": "string"}},
        timeout={"type": "string", "pattern": r"^(?:[0-9]+[smhdw])+$"},
        expect_status={"type": "array", "items": {"type": "integer"}},
    )
    result_schema = result(
        status={"type": "integer"},
        headers={"type": "object", "additionalProperties": True},
        json={"description": "the JSON response body", "additionalProperties": True},
        text={"type": "string"},
    )

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        params.setdefault("method", "POST" if ("json" in params or "form" in params) else "GET")
        return params

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"status": 200, "headers": {}, "json": {}, "text": ""}
