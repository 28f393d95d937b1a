"""What the engine applies: one piece of work per inbox row, timer, check, send due or outcome,
with what marks it done and what sets it aside for good if it breaks the runtime."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from flowrun.runtime.inputs import Input
from flowrun.state.uow import SqlUnitOfWork

Mark = Callable[[SqlUnitOfWork], None]
Quarantine = Callable[[SqlUnitOfWork, str], None]


def _nothing(uow: SqlUnitOfWork) -> None:
    return None


@dataclass(frozen=True)
class Work:
    label: str
    inputs: Sequence[Input]
    done: Mark = _nothing  # called in the same unit of work after the inputs were applied
    quarantine: Quarantine | None = None  # the work broke the runtime: set it aside, in its own unit
    run_id: str | None = None  # the run it resumes (read ahead in batches)
    kind: str = "input"  # for metrics: inbox | timer | check | send | outcome
    events: int = field(default=0)  # inbox: how many events the row became
