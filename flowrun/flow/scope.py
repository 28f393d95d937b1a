"""Which names a template may read at a given step, and whether its fields exist."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from flowrun.actions.base import ActionType
from flowrun.events.catalogue import EventType, field_names, has_field, lookup_type
from flowrun.templating import TEXT_ENV, FieldPath

EVENT_FIELDS = ("type", "source", "id", "occurred_at", "raw")
ALWAYS = {"run", "flow", "now", "loop", *TEXT_ENV.globals}


@dataclass(frozen=True)
class Binding:
    """What an `as:` name holds: an action's result, or an event a wait received."""

    set_by: str
    action: ActionType | None = None
    events: tuple[EventType, ...] = ()

    def has(self, path: tuple[str, ...]) -> bool:
        if self.action is not None:
            return self.action.result_has(path)
        if path and path[0] == "event":
            return len(path) < 2 or path[1] in EVENT_FIELDS
        return all(has_field(t, path) for t in self.events)


@dataclass
class Scope:
    """Names visible at one point: the trigger's data parts, `as:` names set so far."""

    event_types: tuple[EventType, ...]
    bindings: dict[str, Binding] = field(default_factory=dict)
    extra: dict[str, tuple[EventType, ...]] = field(default_factory=dict)  # e.g. `trigger` in where

    def copy(self) -> Scope:
        return Scope(self.event_types, dict(self.bindings), dict(self.extra))

    def bind(self, name: str, binding: Binding) -> None:
        self.bindings[name] = binding

    def merge(self, *branches: Scope) -> None:
        """After a branch point, only names set on every path are surely set."""
        common = set.intersection(*(set(b.bindings) for b in branches)) if branches else set()
        self.bindings = {n: branches[0].bindings[n] for n in common}


def check_field(path: FieldPath, scope: Scope, all_bindings: Mapping[str, str]) -> tuple[str, str] | None:
    """None if the path can be read here; else (message, hint)."""
    root, rest = path[0], path[1:]
    if root in scope.bindings:
        binding = scope.bindings[root]
        if rest and not binding.has(rest):
            return f"`{root}` ({binding.set_by}) has no field {'.'.join(rest)!r}", _binding_fields(binding)
        return None
    if root == "event":
        if rest and rest[0] not in EVENT_FIELDS:
            return f"`event` has no field {rest[0]!r}", f"event fields: {', '.join(EVENT_FIELDS)}"
        return None
    if root in scope.extra:
        return _check_in_types(rest, scope.extra[root], prefix=f"{root}.") if rest else None
    if root in ALWAYS:
        return None
    holders = [t for t in scope.event_types if root in t.parts]
    if holders:
        return _check_in_types(path, scope.event_types)
    if root in all_bindings:
        return (
            f"`{root}` is used before it is set, or is not set on every path to here",
            f"it is set by {all_bindings[root]}",
        )
    names = sorted({p for t in scope.event_types for p in t.parts} | set(scope.bindings) | {"event"})
    close = difflib.get_close_matches(root, names, n=1, cutoff=0.6)
    kinds = ", ".join(t.name for t in scope.event_types)
    return (
        f"unknown name `{root}` ({kinds} events have: {', '.join(names)})",
        f"did you mean `{close[0]}`?" if close else "use `| default(...)` for optional values",
    )


def _check_in_types(path: FieldPath, types: tuple[EventType, ...], prefix: str = "") -> tuple[str, str] | None:
    for event_type in types:
        if path[0] not in event_type.parts:
            others = ", ".join(t.name for t in types)
            return (
                f"`{prefix}{path[0]}` is not in {event_type.name} events (this flow starts on {others})",
                "guard it with `is defined` or `| default(...)`",
            )
        if not has_field(event_type, path):
            dotted = prefix + ".".join(path)
            close = _closest(path, [f.replace("[]", "") for f in field_names(event_type)])
            hint = f"did you mean `{prefix}{close}`?" if close else f"see `flowrun events {event_type.name}`"
            return f"field `{dotted}` does not exist in {event_type.name} events", hint
    return None


def _closest(path: FieldPath, fields: list[str]) -> str | None:
    """The likeliest intended field: a sibling sharing the typo's first letters, else the closest."""
    for depth in range(len(path), 0, -1):
        parent = ".".join(path[: depth - 1])
        siblings = {
            f[len(parent) + 1 if parent else 0 :].split(".")[0]
            for f in fields
            if not parent or f.startswith(parent + ".")
        }
        typo = path[depth - 1]
        if typo in siblings:
            continue
        prefixed = sorted(s for s in siblings if len(typo) >= 3 and s.startswith(typo[:3]))
        close = prefixed[:1] or difflib.get_close_matches(typo, sorted(siblings), n=1, cutoff=0.6)
        if close:
            return ".".join((*path[: depth - 1], close[0]))
        return None
    return None


def _binding_fields(binding: Binding) -> str:
    if binding.action is not None:
        props = binding.action.result_schema.get("properties", {})
        return f"fields: {', '.join(props)}" if props else "this action returns no fields"
    return "fields: " + ", ".join(sorted({p for t in binding.events for p in t.parts} | {"event"}))


def types_for(names: tuple[str, ...]) -> tuple[EventType, ...]:
    found = (lookup_type(n) for n in names)
    return tuple(t for t in found if t is not None)


Reporter = Callable[[tuple[str | int, ...], str, str], None]
