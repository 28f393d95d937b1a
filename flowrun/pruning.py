"""Retention as serve's leader and `flowrun prune` run it: the project's windows, the longest
frequency cap of the project and its flows (the send log is never pruned below it), and the
lines `flowrun prune` prints."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from flowrun.config import Config
from flowrun.durations import format_duration
from flowrun.flow.model import Flow
from flowrun.state import codec
from flowrun.state import prune as pruner
from flowrun.state.cursors import get_cursor
from flowrun.state.database import reading

log = logging.getLogger("flowrun.retention")


def longest_cap(config: Config, flows: Sequence[Flow]) -> timedelta:
    found = [config.settings().guardrails.longest_cap]
    for flow in flows:
        if flow.guardrails is not None:
            found += [cap.per for cap in flow.guardrails.caps.values() if cap is not None]
    return max(found)


def prune_now(
    db: Engine,
    config: Config,
    cap: timedelta,
    now: datetime,
    pace: pruner.Pace = pruner.UNPACED,
    stopping: Callable[[], bool] = lambda: False,
) -> dict[str, int]:
    """A prune pass; `cap` is `longest_cap(config, flows)` (the send log is kept that long)."""
    removed = pruner.prune(db, config.retention, now, cap, pace, stopping)
    if any(n for family, n in removed.items() if family != "pages"):
        log.info("retention pruned %s", ", ".join(f"{k} {v}" for k, v in removed.items() if v))
    return removed


def prune_command(db: Engine, config: Config, flows: Sequence[Flow], dry_run: bool) -> list[str]:
    """`flowrun prune`: what would go (`--dry-run`), or what went."""
    now = datetime.now(UTC)
    cap = longest_cap(config, flows)
    with reading(db) as conn:
        lines = pruner.plan(conn, config.retention, now, cap)
        last = get_cursor(conn, pruner.LAST)
    windows = ", ".join(config.retention.describe(k) for k in ("runs", "failed", "inbox", "ignored", "sends"))
    head = [f"retention ({windows}; dedupe keys {format_duration(config.retention.dedupe)})"]
    if last:
        head.append(f"last prune {codec.utc(last['at']).replace(microsecond=0).isoformat()}")  # type: ignore[union-attr]
    if dry_run:
        return [*head, "would prune (--dry-run: nothing changed):", *("  " + line for line in lines)]
    removed = prune_now(db, config, cap, now)
    done = [f"  {family}: {n} rows" for family, n in removed.items() if family != "pages"]
    if removed.get("pages"):
        done.append(f"  {removed['pages']} free pages given back to the file system")
    return [*head, "pruned:", *done]
