"""One dry-run: load flows, read events and timelines, play them, return the result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowrun.attribution.windows import Attribution
from flowrun.delivery.ratelimit import DEFAULTS as RATE_DEFAULTS
from flowrun.delivery.ratelimit import Rate
from flowrun.delivery.throttle import Throttle
from flowrun.dryrun.simulator import SimulationResult, Simulator
from flowrun.dryrun.stubs import Stub, Stubs
from flowrun.dryrun.timeline import Scheduled, load_timeline, load_timeline_stubs, resolve_at
from flowrun.errors import FlowError, UsageError
from flowrun.events.normalise import load_event_file
from flowrun.events.values import timestamp
from flowrun.flow.loader import load_flows
from flowrun.flow.model import Flow
from flowrun.guardrails import Guardrails
from flowrun.runtime.settings import INACTIVE_AFTER, Settings
from flowrun.segments.loader import segments_for
from flowrun.segments.model import Segment
from flowrun.templating import DEFAULT_LOCALE

if TYPE_CHECKING:
    from flowrun.config import Config

DEFAULT_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday morning; fixed so output is repeatable


def parse_start(text: str | None) -> datetime:
    if text is None:
        return DEFAULT_START
    start = timestamp(text)
    if start is None:
        raise UsageError(f"--start {text!r} is not an ISO 8601 time (e.g. 2026-03-01T10:00:00Z)")
    return start


def load_all_flows(paths: Sequence[Path], *, locale: str = DEFAULT_LOCALE) -> list[Flow]:
    for path in paths:
        if not path.exists():
            raise UsageError(f"no such file or folder: {path}")
    result = load_flows(paths, locale=locale)
    if result.problems:
        raise FlowError(result.problems)
    if not result.flows:
        raise UsageError(f"no flow files found in {', '.join(map(str, paths))}")
    return result.flows


def play(
    flow_paths: Sequence[Path],
    event_files: Sequence[Path],
    timeline: Path | None,
    source: str | None,
    topic: str | None,
    start_text: str | None,
    until_text: str | None,
    derive: Derive | None = None,
) -> DryRun:
    start = parse_start(start_text)
    flows = load_all_flows(flow_paths, locale=derive.locale if derive else DEFAULT_LOCALE)
    derive = with_segments(derive, flow_paths)
    scheduled = [
        Scheduled(start, tuple(load_event_file(f, source=source, topic=topic, received_at=start))) for f in event_files
    ]
    stubs: tuple[Stub, ...] = ()
    if timeline is not None:
        scheduled.extend(load_timeline(timeline, start))
        stubs = load_timeline_stubs(timeline, flows)
    until = None
    if until_text is not None:
        until = resolve_at(until_text, start)
        if until is None:
            raise UsageError(f"--until {until_text!r} is neither an offset (3d) nor an ISO time")
    result = simulate(flows, scheduled, start, until, derive, stubs)
    return DryRun(result, tuple(flows), tuple(scheduled))


@dataclass(frozen=True)
class DryRun:
    """What was played and what came of it, for the report."""

    result: SimulationResult
    flows: tuple[Flow, ...]
    inputs: tuple[Scheduled, ...]


@dataclass(frozen=True)
class Derive:
    """The project's derivation settings (flowrun.yaml `derive:`), so dry-run derives as serve does."""

    checkout_idle: timedelta = timedelta(hours=1)
    low_stock_threshold: int = 5
    inactive_after: tuple[timedelta, ...] = INACTIVE_AFTER
    guardrails: Guardrails = field(default_factory=Guardrails)
    locale: str = DEFAULT_LOCALE
    rate_limits: Mapping[str, Rate | None] = field(default_factory=lambda: dict(RATE_DEFAULTS))
    channels: Mapping[str, Any] = field(default_factory=dict)  # for the rate-limit buckets sends draw from
    sources: Mapping[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"  # the shop's, for `orders.count(since='yesterday')`
    segments: tuple[Segment, ...] | None = None  # None: the segments/ folder beside the flows played
    attribution: Attribution = field(default_factory=Attribution)

    @classmethod
    def of(cls, config: Config) -> Derive:
        """A project's settings, as serve uses them."""
        return cls(
            config.checkout_idle,
            config.low_stock_threshold,
            config.inactive_after,
            config.guardrails,
            config.locale,
            config.rate_limits,
            config.channels,
            config.sources,
            config.timezone,
            segments_for([config.flows]),
            config.attribution,
        )


def with_segments(derive: Derive | None, flow_paths: Sequence[Path]) -> Derive:
    """The project's settings with the segments beside these flows (unless it names its own)."""
    chosen = derive or Derive()
    return chosen if chosen.segments is not None else replace(chosen, segments=segments_for(flow_paths))


def simulate(
    flows: list[Flow],
    scheduled: Sequence[Scheduled],
    start: datetime,
    until: datetime | None = None,
    derive: Derive | None = None,
    stubs: Sequence[Stub] = (),
) -> SimulationResult:
    chosen = derive or Derive()
    settings = Settings(
        checkout_idle=chosen.checkout_idle,
        low_stock_threshold=chosen.low_stock_threshold,
        inactive_after=chosen.inactive_after,
        guardrails=chosen.guardrails,
        segments=chosen.segments or (),
        timezone=chosen.timezone,
        attribution=chosen.attribution,
    )
    throttle = Throttle(chosen.rate_limits, chosen.channels, chosen.sources)
    simulator = Simulator(flows, start, settings, Stubs(tuple(stubs)).with_flows(flows), throttle)
    for item in scheduled:
        for event in item.events:
            simulator.add_event(item.at, event)
    return simulator.run(until)
