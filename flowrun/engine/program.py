"""Steps compiled to a flat program: branches become jumps, so a run is just a counter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Union

from flowrun.flow import model as m


@dataclass(frozen=True)
class Do:
    step: m.ActionStep


@dataclass(frozen=True)
class Delay:
    step: m.DelayStep


@dataclass(frozen=True)
class WaitUntil:
    step: m.WaitUntilStep


@dataclass(frozen=True)
class Await:
    step: m.WaitForStep
    timeout_target: int = -1


@dataclass(frozen=True)
class Branch:
    step: m.IfStep
    else_target: int = -1


@dataclass(frozen=True)
class Choose:
    step: m.ChooseStep
    targets: tuple[int, ...] = ()
    otherwise_target: int = -1


@dataclass(frozen=True)
class Split:
    step: m.SplitStep
    targets: tuple[int, ...] = ()


@dataclass(frozen=True)
class Jump:
    target: int = -1


@dataclass(frozen=True)
class Stop:
    step: m.StopStep


Instruction = Union[Do, Delay, WaitUntil, Await, Branch, Choose, Split, Jump, Stop]


class _Emitter:
    def __init__(self) -> None:
        self.code: list[Any] = []

    def emit(self, ins: Any) -> int:
        self.code.append(ins)
        return len(self.code) - 1

    def patch(self, index: int, **changes: Any) -> None:
        self.code[index] = replace(self.code[index], **changes)

    def here(self) -> int:
        return len(self.code)

    def block_then_jump(self, steps: Sequence[m.AnyStep]) -> tuple[int, int]:
        start = self.here()
        self.steps(steps)
        return start, self.emit(Jump())

    def steps(self, steps: Sequence[m.AnyStep]) -> None:
        for step in steps:
            self.step(step)

    def step(self, step: m.AnyStep) -> None:
        if isinstance(step, m.ActionStep):
            self.emit(Do(step))
        elif isinstance(step, m.DelayStep):
            self.emit(Delay(step))
        elif isinstance(step, m.WaitUntilStep):
            self.emit(WaitUntil(step))
        elif isinstance(step, m.StopStep):
            self.emit(Stop(step))
        elif isinstance(step, m.WaitForStep):
            head = self.emit(Await(step))
            _, jump = self.block_then_jump(step.then)
            self.patch(head, timeout_target=self.here())
            self.steps(step.otherwise)
            self.patch(jump, target=self.here())
        elif isinstance(step, m.IfStep):
            head = self.emit(Branch(step))
            _, jump = self.block_then_jump(step.then)
            self.patch(head, else_target=self.here())
            self.steps(step.otherwise)
            self.patch(jump, target=self.here())
        elif isinstance(step, m.ChooseStep):
            head = self.emit(Choose(step))
            starts, jumps = zip(*(self.block_then_jump(o.steps) for o in step.options), strict=True)
            self.patch(head, targets=tuple(starts), otherwise_target=self.here())
            self.steps(step.otherwise)
            for jump in jumps:
                self.patch(jump, target=self.here())
        elif isinstance(step, m.SplitStep):
            head = self.emit(Split(step))
            starts, jumps = zip(*(self.block_then_jump(b.steps) for b in step.branches), strict=True)
            self.patch(head, targets=tuple(starts))
            for jump in jumps:
                self.patch(jump, target=self.here())
        else:  # pragma: no cover - the model has no other step types
            raise TypeError(f"unknown step {step!r}")


def compile_program(steps: Sequence[m.AnyStep]) -> tuple[Instruction, ...]:
    emitter = _Emitter()
    emitter.steps(steps)
    return tuple(emitter.code)
