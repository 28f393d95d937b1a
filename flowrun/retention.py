"""The project file's `retention:`: how long serve keeps what it no longer needs, on by default.

What correctness needs is never a setting below its floor: a delivery's dedupe key stays at
least `DEDUPE_FLOOR` (Shopify retries a webhook for 48 hours), re-entry rules read the slim
`entries` rows (never pruned), the loyalty ledger is never pruned, and the send log (caps,
reports) is kept unless `sends:` names a window, which is never shorter than the longest cap.
Parked actions and unfinished runs are never pruned; failed runs and rejected or failed inbox
rows are kept until handled (`failed: keep`, the default) or for the window given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flowrun.durations import DURATION_PATTERN, format_duration, parse_duration

DEDUPE_FLOOR = timedelta(hours=48)
KEEP = "keep"

_WINDOW = {
    "oneOf": [
        {"type": "string", "pattern": DURATION_PATTERN},
        {"const": KEEP, "description": "never pruned"},
    ]
}


def _window(text: str) -> dict[str, Any]:
    return {**_WINDOW, "description": text}


SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "what serve prunes, and when (on by default: runs 90d, inbox bodies 14d, ignored 2d)",
    "properties": {
        "runs": _window("finished runs with their outbox rows and attempts (default 90d)"),
        "failed": _window("failed runs, rejected and failed deliveries (default keep: until handled)"),
        "inbox": _window("bodies of processed deliveries (default 14d); the dedupe key stays for `dedupe`"),
        "ignored": _window("deliveries nothing read (default 2d)"),
        "dedupe": {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "a delivery id is remembered at least this long (default and minimum 48h: Shopify "
            "retries for 48 hours)",
        },
        "sends": _window("the send log caps and reports read (default keep; never shorter than the longest cap)"),
        "every": {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "the leader prunes again this long after a prune ends (10m)",
        },
        "batch": {"type": "integer", "minimum": 1, "maximum": 100000, "description": "rows per transaction (500)"},
    },
}


@dataclass(frozen=True)
class Retention:
    runs: timedelta | None = timedelta(days=90)  # None: kept
    failed: timedelta | None = None
    inbox: timedelta | None = timedelta(days=14)
    ignored: timedelta | None = timedelta(days=2)
    dedupe: timedelta = DEDUPE_FLOOR
    sends: timedelta | None = None
    every: timedelta = timedelta(minutes=10)
    batch: int = 500

    def describe(self, kind: str) -> str:
        """`runs: 90d`, as a prune's reason."""
        window = getattr(self, kind, None)
        return f"{kind}: {format_duration(window) if isinstance(window, timedelta) else KEEP}"


def _parse(value: object, default: timedelta | None) -> timedelta | None:
    if value is None:
        return default
    return None if value == KEEP else parse_duration(str(value))


def load_retention(data: Mapping[str, Any]) -> Retention:
    """From the checked `retention:` mapping (see `problems` for what the schema cannot say)."""
    base = Retention()
    return Retention(
        runs=_parse(data.get("runs"), base.runs),
        failed=_parse(data.get("failed"), base.failed),
        inbox=_parse(data.get("inbox"), base.inbox),
        ignored=_parse(data.get("ignored"), base.ignored),
        dedupe=parse_duration(data.get("dedupe", "48h")),
        sends=_parse(data.get("sends"), base.sends),
        every=parse_duration(data.get("every", "10m")),
        batch=int(data.get("batch", base.batch)),
    )


def _maybe(value: object) -> timedelta | None:
    """A duration the schema accepted (None for `keep` or for what it reports itself)."""
    try:
        return parse_duration(value) if isinstance(value, str) and value != KEEP else None
    except ValueError:
        return None


def problems(data: Mapping[str, Any], longest_cap: timedelta) -> list[tuple[tuple[str | int, ...], str, str]]:
    """The floors: dedupe keys for the stores' retry window, the send log for the longest cap."""
    found: list[tuple[tuple[str | int, ...], str, str]] = []
    if not isinstance(data, Mapping):
        return found
    dedupe, sends = data.get("dedupe"), data.get("sends")
    dedupe_for, sends_for, every = _maybe(dedupe), _maybe(sends), _maybe(data.get("every"))
    if dedupe_for is not None and dedupe_for < DEDUPE_FLOOR:
        found.append(
            (
                ("retention", "dedupe"),
                f"dedupe {dedupe} is shorter than the stores' retry window (48h): a retried delivery "
                "would start a second run",
                "remove it (default 48h), or give 48h or more",
            )
        )
    if sends_for is not None and longest_cap and sends_for < longest_cap:
        found.append(
            (
                ("retention", "sends"),
                f"sends {sends} is shorter than the longest cap ({format_duration(longest_cap)}): caps would forget"
                " sends they count",
                f"give {format_duration(longest_cap)} or more, or keep",
            )
        )
    if every is not None and every < timedelta(seconds=1):
        found.append((("retention", "every"), "every must be at least 1s", "e.g. every: 10m"))
    return found
