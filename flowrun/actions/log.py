"""log: write a line to flowrun's log (useful while building a flow)."""

from __future__ import annotations

from flowrun.actions.base import TEMPLATED, ActionType, obj


class Log(ActionType):
    name = "log"
    summary = "write a message to the service log"
    params_schema = obj(["message"], message=TEMPLATED, level={"enum": ["debug", "info", "warning", "error"]})
    retry_by_default = False
