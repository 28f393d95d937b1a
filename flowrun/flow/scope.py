"""Which names a template may read at a given step, whether its fields exist, and whether
they may be null there."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowrun.actions.base import ActionType
from flowrun.events.catalogue import EventType, field_names, has_field, lookup_type
from flowrun.profile.view import PROFILE_SCHEMA
from flowrun.templating import GLOBALS, FieldPath

EVENT_FIELDS = ("type", "source", "id", "occurred_at", "raw")
MEMORY = ("profile", "orders", "in_segment")  # read from customer memory (flowrun.profile.view)
ALWAYS = {"run", "flow", "now", "loop", "orders", "in_segment", *GLOBALS}
TRIGGER = "trigger"  # inside `wait: {for:, where:}` and `until: {where:}`: the event that started the run
UNCHECKED = "raw payload fields are not checked: a missing key reads as null"


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

    def schema(self, path: tuple[str, ...]) -> Any:
        if self.action is not None:
            return _walk(self.action.result_schema, path)
        found = [_walk(_type_schema(t), path) for t in self.events]
        return _merge(found)


@dataclass
class Scope:
    """Names visible at one point: the trigger's data parts, `as:` names set so far, and
    the fields conditions have ruled null out for (`if: customer.phone`)."""

    event_types: tuple[EventType, ...]
    bindings: dict[str, Binding] = field(default_factory=dict)
    extra: dict[str, tuple[EventType, ...]] = field(default_factory=dict)  # `trigger` in a where
    unknown_types: bool = False  # the trigger names a type that does not exist: reported once, not per field
    guarded: frozenset[FieldPath] = frozenset()
    awaited: str = ""  # in a where: the awaited event's types, for messages

    def copy(self) -> Scope:
        return Scope(
            self.event_types,
            dict(self.bindings),
            dict(self.extra),
            self.unknown_types,
            self.guarded,
            self.awaited,
        )

    def bind(self, name: str, binding: Binding) -> None:
        self.bindings[name] = binding

    def guard(self, fields: frozenset[FieldPath]) -> Scope:
        inner = self.copy()
        inner.guarded = self.guarded | fields
        return inner

    def merge(self, *branches: Scope) -> None:
        """After a branch point, only names set on every path are surely set."""
        common = set.intersection(*(set(b.bindings) for b in branches)) if branches else set()
        self.bindings = {n: branches[0].bindings[n] for n in common}

    def is_guarded(self, path: FieldPath) -> bool:
        return any(path == g[: len(path)] for g in self.guarded)

    def schema_of(self, path: FieldPath) -> Any:
        """The JSON Schema of a field read here, merged over the trigger's types (None: unknown)."""
        root, rest = path[0], path[1:]
        if root in self.bindings:
            return self.bindings[root].schema(rest)
        if root == "event":
            return {} if not rest or rest[0] == "raw" else _EVENT_FIELD_SCHEMAS.get(rest[0])
        if root == "profile":
            return _walk(PROFILE_SCHEMA, rest)
        if root in self.extra:
            return _merge([_walk(_type_schema(t), rest) for t in self.extra[root]]) if rest else None
        if root in ALWAYS or self.unknown_types:
            return None
        return _merge([_walk(_type_schema(t), path) for t in self.event_types])


_EVENT_FIELD_SCHEMAS: dict[str, Any] = {
    "type": {"type": "string"},
    "source": {"type": "string"},
    "id": {"type": "string"},
    "occurred_at": {"type": "string"},
}


def _type_schema(event_type: EventType) -> dict[str, Any]:
    return {"type": "object", "properties": dict(event_type.parts)}


def _walk(schema: Any, path: FieldPath) -> Any:
    for part in path:
        if not isinstance(schema, Mapping):
            return None
        kinds = schema.get("type")
        if kinds == "array" or (isinstance(kinds, list) and "array" in kinds):
            schema = schema.get("items", {})
            if part.isdigit():
                continue
        props = schema.get("properties")
        if props is None:
            return {} if schema.get("additionalProperties", True) else None
        if part not in props:
            return None
        schema = props[part]
    return schema


def _merge(schemas: list[Any]) -> Any:
    """One schema standing for several (a flow on two trigger types): types are unioned."""
    found = [s for s in schemas if s is not None]
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    kinds: set[str] = set()
    for s in found:
        kind = s.get("type") if isinstance(s, Mapping) else None
        if kind is None:
            return {}
        kinds |= {kind} if isinstance(kind, str) else set(kind)
    return {"type": sorted(kinds)}


def may_be_null(schema: Any) -> bool:
    if not isinstance(schema, Mapping):
        return False
    kind = schema.get("type")
    return kind == "null" or (isinstance(kind, list) and "null" in kind)


def check_field(
    path: FieldPath, scope: Scope, all_bindings: Mapping[str, str], *, optional: bool = False
) -> tuple[str, str] | None:
    """None if the path can be read here; else (message, hint).

    `optional`: read under `| default(...)` or `is defined`. Such a field need not be in
    every trigger type, but it must exist in one: `default` is for null, not for a typo."""
    root, rest = path[0], path[1:]
    if root in scope.bindings:
        binding = scope.bindings[root]
        if rest and not binding.has(rest):
            return f"`{root}` ({binding.set_by}) has no field {'.'.join(rest)!r}", _binding_fields(binding)
        return None
    if root == "profile":
        return _profile_field(rest)
    if root == "event":
        if rest and rest[0] not in EVENT_FIELDS:
            return f"`event` has no field {rest[0]!r}", f"event fields: {', '.join(EVENT_FIELDS)}"
        return None
    if root in scope.extra:
        return _check_in_types(rest, scope.extra[root], f"{root}.", optional) if rest else None
    if root in ALWAYS or scope.unknown_types:
        return None
    if any(root in t.parts for t in scope.event_types):
        found = _check_in_types(path, scope.event_types, "", optional)
        if found is not None and scope.awaited and TRIGGER in scope.extra:
            in_trigger = _check_in_types(path, scope.extra[TRIGGER], "", optional) is None
            if in_trigger:
                return found[0], f"the run's trigger has it: write `{TRIGGER}.{'.'.join(path)}`"
        return found
    if root in all_bindings:
        if optional:
            return None  # `offer is defined`: set on some paths, and the author knows it
        return (
            f"`{root}` is used before it is set, or is not set on every path to here",
            f"it is set by {all_bindings[root]}",
        )
    return _unknown_name(path, scope, optional)


def _profile_field(rest: FieldPath) -> tuple[str, str] | None:
    schema: Any = PROFILE_SCHEMA
    for depth, part in enumerate(rest):
        props = schema.get("properties") if isinstance(schema, Mapping) else None
        if props is None:
            return None  # spend.USD: any currency
        if part not in props:
            close = difflib.get_close_matches(part, sorted(props), n=1, cutoff=0.6)
            dotted = ".".join(("profile", *rest[: depth + 1]))
            hint = f"did you mean `{'.'.join(('profile', *rest[:depth], close[0]))}`?" if close else ""
            return f"`profile` has no field {dotted!r}", hint or f"profile fields: {', '.join(sorted(props))}"
        schema = props[part]
    return None


def _unknown_name(path: FieldPath, scope: Scope, optional: bool) -> tuple[str, str]:
    root = path[0]
    names = sorted({p for t in scope.event_types for p in t.parts} | set(scope.bindings) | {"event", *scope.extra})
    kinds = ", ".join(t.name for t in scope.event_types)
    if scope.awaited and TRIGGER in scope.extra and any(root in t.parts for t in scope.extra[TRIGGER]):
        return (
            f"`{root}` is not in {scope.awaited} events (the event this waits for)",
            f"the run's trigger has it: write `{TRIGGER}.{'.'.join(path)}`",
        )
    close = difflib.get_close_matches(root, names, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else f"see `flowrun events {scope.event_types[0].name}`"
    if not scope.event_types:
        hint = "see `flowrun events`"
    if optional:
        hint += "; `default` and `is defined` are for fields that exist and may be null"
    return f"unknown name `{root}` ({kinds} events have: {', '.join(names)})", hint


def _check_in_types(
    path: FieldPath, types: tuple[EventType, ...], prefix: str, optional: bool
) -> tuple[str, str] | None:
    if optional:  # in one of the types is enough
        if any(path[0] in t.parts and has_field(t, path) for t in types):
            return None
        holders = [t for t in types if path[0] in t.parts] or list(types)
        problem = _check_in_types(path, tuple(holders[:1]), prefix, False)
        if problem is None:
            return None
        return problem[0], problem[1] + "; `default` and `is defined` are for fields that exist and may be null"
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
