"""`attribution:` in the project file: last-touch windows per channel and touch, whether
machine opens count, and the evidence a split arm needs before the report calls it ahead."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flowrun.durations import parse_duration

TOUCHES = ("sent", "delivered", "opened", "clicked")
CHANNELS = ("email", "sms", "push")
# Klaviyo's published defaults: 5 days after an email open or click, 5 days after an SMS
# click, 1 day after an SMS open, 24 hours after a push is received.
DEFAULT_WINDOWS: Mapping[str, Mapping[str, timedelta]] = {
    "email": {"opened": timedelta(days=5), "clicked": timedelta(days=5)},
    "sms": {"clicked": timedelta(days=5), "opened": timedelta(days=1)},
    "push": {"sent": timedelta(hours=24)},
}
Z_THRESHOLD = 1.96  # two-sided, 95 %


@dataclass(frozen=True)
class Attribution:
    windows: Mapping[str, Mapping[str, timedelta]] = field(default_factory=lambda: DEFAULT_WINDOWS)
    machine_opens: bool = False  # whether an open a machine made (Apple MPP) counts as a touch
    min_sample: int = 100  # delivered messages per arm before a comparison may call one ahead

    @property
    def longest(self) -> timedelta:
        spans = [span for kinds in self.windows.values() for span in kinds.values()]
        return max(spans, default=timedelta(0))


def schema(duration: Mapping[str, Any]) -> dict[str, Any]:
    touch = {
        "type": "object",
        "propertyNames": {"enum": list(TOUCHES)},
        "additionalProperties": {"oneOf": [duration, {"const": False}]},
        "description": "how long after each touch an order is attributed to the message (false: never)",
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "last-touch attribution of orders to messages (flowrun report)",
        "properties": {
            "windows": {
                "type": "object",
                "propertyNames": {"enum": list(CHANNELS)},
                "additionalProperties": touch,
                "description": "per channel; a channel named here replaces its defaults "
                "(email: {opened: 5d, clicked: 5d}, sms: {clicked: 5d, opened: 1d}, push: {sent: 24h})",
            },
            "machine_opens": {
                "type": "boolean",
                "description": "count opens a machine made (Apple Mail Privacy Protection) as touches (default false)",
            },
            "min_sample": {
                "type": "integer",
                "minimum": 1,
                "description": "delivered messages each split arm needs before one is called ahead (default 100)",
            },
        },
    }


def load(data: Mapping[str, Any] | None) -> Attribution:
    """From the schema-valid `attribution:` mapping."""
    data = data or {}
    windows = {channel: dict(kinds) for channel, kinds in DEFAULT_WINDOWS.items()}
    for channel, kinds in (data.get("windows") or {}).items():
        windows[channel] = {kind: parse_duration(span) for kind, span in kinds.items() if span is not False}
    return Attribution(windows, bool(data.get("machine_opens", False)), int(data.get("min_sample", 100)))
