"""slack: a message to the shop's own Slack through an incoming webhook."""

from __future__ import annotations

from flowrun.actions.base import TEMPLATED, ActionType, obj


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
