"""Stand-ins for the outside world in dry-run and `flowrun test`: a step's result, given.

A stub names a step by its `name:` or every step of one action type (optionally only in
one flow) and gives the result the provider would have answered; it is laid over the
action's own simulated result, so `{json: {preset: square}}` for `http` keeps `status: 200`.
The most specific stub wins: a step's name before an action type, one flow's before any.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from flowrun.actions import REGISTRY
from flowrun.errors import YamlPath, format_path
from flowrun.flow import model as m

STUB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "the result a step gets instead of the real provider's answer",
    "properties": {
        "step": {"type": "string", "description": "the step's `name:`"},
        "action": {"enum": sorted(REGISTRY), "description": "every step of this action type"},
        "flow": {"type": "string", "description": "only in this flow"},
        "to": {"type": "string", "description": "only the message to this recipient (its rendered `to`)"},
        "result": {"type": "object", "description": "laid over the action's simulated result"},
    },
    "required": ["result"],
    "oneOf": [{"required": ["step"]}, {"required": ["action"]}],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Stub:
    result: Mapping[str, Any]
    step: str | None = None
    action: str | None = None
    flow: str | None = None
    to: str | None = None  # only the message to this recipient: a provider message id per customer

    def rank(self, flow_id: str, name: str | None, action: str, to: Any = None) -> int:
        """How well this stub fits a step (0: not at all)."""
        if self.flow is not None and self.flow != flow_id:
            return 0
        if self.to is not None:
            if str(to) != self.to:
                return 0
            fits = replace(self, to=None).rank(flow_id, name, action)
            return fits + 4 if fits else 0
        if self.step is not None:
            return (4 if self.flow else 3) if self.step == name else 0
        return (2 if self.flow else 1) if self.action == action else 0


def walk_steps(steps: Sequence[m.AnyStep]) -> Iterator[m.AnyStep]:
    for step in steps:
        yield step
        for nested in _children(step):
            yield from walk_steps(nested)


def _children(step: m.AnyStep) -> list[tuple[m.AnyStep, ...]]:
    if isinstance(step, (m.IfStep, m.WaitForStep)):
        return [step.then, step.otherwise]
    if isinstance(step, m.ChooseStep):
        return [*(o.steps for o in step.options), step.otherwise]
    if isinstance(step, m.SplitStep):
        return [b.steps for b in step.branches]
    return []


@dataclass(frozen=True)
class StepIndex:
    """Every action step of the loaded flows by (flow id, step path as in traces)."""

    steps: Mapping[tuple[str, str], m.ActionStep] = field(default_factory=dict)

    @classmethod
    def of(cls, flows: Sequence[m.Flow]) -> StepIndex:
        return cls(
            {
                (flow.id, format_path(step.path)): step
                for flow in flows
                for step in walk_steps(flow.steps)
                if isinstance(step, m.ActionStep)
            }
        )

    def name(self, flow_id: str, path: str) -> str | None:
        step = self.steps.get((flow_id, path))
        return step.name if step is not None else None


@dataclass(frozen=True)
class Stubs:
    items: tuple[Stub, ...] = ()
    index: StepIndex = field(default_factory=StepIndex)

    def with_flows(self, flows: Sequence[m.Flow]) -> Stubs:
        return Stubs(self.items, StepIndex.of(flows))

    def result_for(self, flow_id: str, step: str, action: str, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        """The result dry-run records for a step: the best stub over the action's simulation."""
        simulated = REGISTRY[action].simulate(params, key)
        name = self.index.name(flow_id, step)
        to = params.get("to")
        best = max(self.items, key=lambda s: s.rank(flow_id, name, action, to), default=None)
        if best is None or best.rank(flow_id, name, action, to) == 0:
            return simulated
        return {**simulated, **best.result}


def check_stub(stub: Stub, flows: Sequence[m.Flow], path: YamlPath) -> list[tuple[YamlPath, str, str]]:
    """What is wrong with a stub against the loaded flows: (path, message, hint) each."""
    found: list[tuple[YamlPath, str, str]] = []
    index = StepIndex.of(flows)
    flow_ids = sorted({f.id for f in flows})
    if stub.flow is not None and stub.flow not in flow_ids:
        found.append(((*path, "flow"), f"no flow {stub.flow!r} is loaded", _suggest(stub.flow, flow_ids)))
    steps = [s for (flow_id, _), s in index.steps.items() if stub.flow in (None, flow_id)]
    if stub.step is not None:
        names = sorted({s.name for s in steps if s.name})
        matching = [s for s in steps if s.name == stub.step]
        if not matching:
            hint = _suggest(stub.step, names) or (
                f"named steps: {', '.join(names)}" if names else "give the step a `name:` in its flow"
            )
            found.append(((*path, "step"), f"no step is named {stub.step!r}", hint))
            return found
        actions = {s.action for s in matching}
    else:
        actions = {REGISTRY[stub.action]} if stub.action in REGISTRY else set()
    for action in actions:
        known = action.result_schema.get("properties") or {}
        for key in stub.result:
            if known and key not in known:
                hint = _suggest(str(key), known) or f"{action.name} results have: {', '.join(known)}"
                found.append(((*path, "result", key), f"`{action.name}` results have no field {key!r}", hint))
    return found


def _suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


def parse_stubs(items: Sequence[Mapping[str, Any]]) -> tuple[Stub, ...]:
    """Schema-checked YAML stubs to Stub values."""
    return tuple(
        Stub(dict(item["result"]), item.get("step"), item.get("action"), item.get("flow"), item.get("to"))
        for item in items
        if isinstance(item, Mapping) and isinstance(item.get("result"), Mapping)
    )
