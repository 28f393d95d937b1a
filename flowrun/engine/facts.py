"""Names a run's conditions and templates read from the state rather than from its events:
`profile`, `orders`, `in_segment(…)`. The runtime provides them for the input it is applying
(flowrun.runtime.profiles), so the engine stays a function of its arguments plus these reads."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from flowrun.engine.state import RunState

Provider = Callable[[RunState, datetime], Mapping[str, Any]]
FACTS: ContextVar[Provider | None] = ContextVar("flowrun_facts", default=None)


def facts_for(run: RunState, now: datetime) -> Mapping[str, Any]:
    provider = FACTS.get()
    return provider(run, now) if provider is not None else {}
