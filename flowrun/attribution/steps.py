"""Where a send sits in its flow: the step's label and the innermost split arm around it."""

from __future__ import annotations

from dataclasses import dataclass

from flowrun.errors import format_path
from flowrun.flow import model as m


@dataclass(frozen=True)
class StepInfo:
    label: str  # the step's name, else its path
    split: str | None
    arm: str | None


def step_index(flow: m.Flow) -> dict[str, StepInfo]:
    """Every action step of a flow by its path (`steps[2].split[0].steps[1]`): its label and the
    innermost split arm it sits in. Cached on the flow (frozen, so kept beside its fields)."""
    cached: dict[str, StepInfo] | None = flow.__dict__.get("_step_index")
    if cached is not None:
        return cached
    found: dict[str, StepInfo] = {}
    _walk(flow.steps, None, None, found)
    object.__setattr__(flow, "_step_index", found)
    return found


def _label(step: m.Step) -> str:
    return step.name or format_path(step.path)


def _walk(steps: tuple[m.AnyStep, ...], split: str | None, arm: str | None, found: dict[str, StepInfo]) -> None:
    for step in steps:
        if isinstance(step, m.ActionStep):
            found[format_path(step.path)] = StepInfo(_label(step), split, arm)
        elif isinstance(step, (m.IfStep, m.WaitForStep)):
            _walk(step.then, split, arm, found)
            _walk(step.otherwise, split, arm, found)
        elif isinstance(step, m.ChooseStep):
            for option in step.options:
                _walk(option.steps, split, arm, found)
            _walk(step.otherwise, split, arm, found)
        elif isinstance(step, m.SplitStep):
            for branch in step.branches:
                _walk(branch.steps, _label(step), branch.name, found)
