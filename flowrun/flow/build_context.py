"""What every part of building a flow shares: the document, the problems found so far, and the
small checks (durations, zones, event names, conditions, templates, parameters)."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from flowrun.actions.base import schema_at
from flowrun.durations import DURATION_HINT, DurationSyntaxError, parse_duration
from flowrun.errors import Problem, YamlPath, format_path
from flowrun.events.catalogue import EVENT_TYPES, lookup_type
from flowrun.flow.fieldcheck import FieldChecker
from flowrun.flow.scope import Scope, types_for
from flowrun.templating import DEFAULT_LOCALE, Condition, Template, TemplateSyntax, parse_condition, parse_template
from flowrun.timing import TimeSpecError, zone
from flowrun.yamlsource import Document


class BuildContext:
    def __init__(
        self, doc: Document, source_text: str, *, root: Path | None = None, locale: str = DEFAULT_LOCALE
    ) -> None:
        self.doc = doc
        self.file = Path(doc.file)
        self.root = root
        self.locale = locale
        self.version = hashlib.sha256(source_text.encode()).hexdigest()[:12]
        self.problems: list[Problem] = []
        self.all_bindings: dict[str, str] = {}
        self.step_names: dict[str, str] = {}  # step name -> its action (or "(control)")
        self.fields = FieldChecker(doc, self.file, self.all_bindings)
        self.unknown_types: set[str] = set()
        self.trigger_events: tuple[str, ...] = ()  # set by Builder.build

    def report(self, path: YamlPath, message: str, hint: str = "", *, key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, hint, key=key))

    # -- small pieces -------------------------------------------------------------------

    def duration(self, text: str, path: YamlPath) -> timedelta:
        try:
            return parse_duration(text)
        except DurationSyntaxError:
            self.report(path, f"{text!r} is not a duration", DURATION_HINT)
            return timedelta(0)

    def zone_name(self, name: str, path: YamlPath) -> str:
        try:
            zone(name)
        except TimeSpecError as exc:
            self.report(path, exc.message, exc.hint)
        return name

    def event_names(self, value: str | list[str], path: YamlPath) -> tuple[str, ...]:
        names = (value,) if isinstance(value, str) else tuple(value)
        for i, name in enumerate(names):
            if lookup_type(name) is None:
                self.unknown_types.add(name)
                where = path if isinstance(value, str) else (*path, i)
                close = difflib.get_close_matches(name, sorted(EVENT_TYPES), n=1, cutoff=0.6)
                hint = (
                    f"did you mean {close[0]!r}?" if close else "see `flowrun events`; generic events are custom.<name>"
                )
                self.report(where, f"unknown event type {name!r}", hint)
        return names

    def condition(self, source: str, path: YamlPath, scope: Scope) -> Condition | None:
        try:
            cond = parse_condition(source, f"{self.file}:{fmt(path)}")
        except TemplateSyntax as exc:
            unknown = exc.message.startswith("unknown")
            self.report(
                path,
                exc.message if unknown else f"condition syntax error: {exc.message}",
                exc.hint if unknown else "conditions are Jinja2 expressions, e.g. order.total_price > 100",
            )
            return None
        self.fields.check(path, cond, scope)
        return cond

    def check_params(self, params: Any, path: YamlPath, scope: Scope, action: Any) -> None:
        for where, template in _templates_with_paths(params, path):
            inside = where[len(path) :]
            label = f"`{action.name}.{fmt(inside)}`" if inside else f"`{action.name}`"
            schema = schema_at(action.params_schema, inside)
            self.fields.check(where, template, scope, param=schema, label=label)

    def scope_for(self, names: tuple[str, ...]) -> Scope:
        """The names a condition or template sees for events of these types."""
        return Scope(types_for(names), unknown_types=any(n in self.unknown_types for n in names))

    def template(self, source: str, path: YamlPath) -> Template | None:
        try:
            return parse_template(source, f"{self.file}:{fmt(path)}", locale=self.locale)
        except TemplateSyntax as exc:
            unknown = exc.message.startswith("unknown")
            self.report(path, exc.message if unknown else f"template syntax error: {exc.message}", exc.hint)
            return None


def _templates_with_paths(value: Any, path: YamlPath) -> Iterator[tuple[YamlPath, Template]]:
    if isinstance(value, Template):
        yield path, value
    elif isinstance(value, dict):
        for key, sub in value.items():
            yield from _templates_with_paths(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _templates_with_paths(sub, (*path, i))


def never() -> Condition:
    return Condition("false", "(invalid)")


def fmt(path: YamlPath) -> str:
    return format_path(path)
