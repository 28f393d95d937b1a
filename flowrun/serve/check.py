"""`flowrun serve --check`: what would stop serve from doing its job, before it starts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import text

from flowrun.config import Config
from flowrun.dryrun.session import load_all_flows
from flowrun.segments.loader import project_segments
from flowrun.state.database import make_engine
from flowrun.state.storage import disk_warning


def check(config: Config) -> list[str]:
    """What `serve --check` reports: flows load, the database answers, channels exist."""
    flows = load_all_flows([config.flows], locale=config.locale)
    segments = project_segments([config.flows], flows)  # SegmentError with every problem, as validate has them
    engine = make_engine(config.database)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()
    notes = [f"{len(flows)} flows valid in {config.flows}", f"database reachable: {config.database.split('://')[0]}"]
    if segments:
        notes.insert(1, f"{len(segments)} segment(s) valid: {', '.join(s.name for s in segments)}")
    low = disk_warning(config.database)
    if low:
        notes.append(low)
    from flowrun.actions import REGISTRY
    from flowrun.actions.base import ActionType
    from flowrun.flow.model import ActionStep

    used = {s.action.name for f in flows for s in _walk(f.steps) if isinstance(s, ActionStep)}
    undelivered = sorted(a for a in used if type(REGISTRY[a]).deliver is ActionType.deliver)
    if undelivered:
        notes.append(f"warning: no channel delivers {', '.join(undelivered)} yet; those actions will be parked")
    for name in sorted(used):
        missing = REGISTRY[name].unconfigured(config.channels, config.sources)
        if missing:
            notes.append(f"error: flows use `{name}` but {missing} is not configured in {config.file}")
    return notes


def _walk(steps: Any) -> Iterator[Any]:
    for step in steps:
        yield step
        for attr in ("then", "otherwise"):
            yield from _walk(getattr(step, attr, ()))
        for option in getattr(step, "options", ()):
            yield from _walk(option.steps)
        for branch in getattr(step, "branches", ()):
            yield from _walk(branch.steps)
