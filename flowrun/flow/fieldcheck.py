"""The checks on what templates and conditions read: fields exist, nulls are handled where
they would reach a parameter, typed parameters get the type they take.

Errors point at the flow's YAML value, or, for a template file, at the field's own line
and column in that file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowrun.errors import Problem, YamlPath, format_path
from flowrun.flow.scope import MEMORY, UNCHECKED, Scope, check_field, may_be_null
from flowrun.templating import Condition, FieldPath, FieldUse, Template, column_of
from flowrun.templating.template import expression_tree
from flowrun.templating.values import ANY, NULL, compatible, expression_types, schema_types
from flowrun.yamlsource import Document

_TYPE_WORDS = {
    "string": "text",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true/false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}


def _words(types: frozenset[str]) -> str:
    if "number" in types:
        types = types - {"integer"}
    return " or ".join(_TYPE_WORDS.get(t, t) for t in sorted(types))


@dataclass
class FieldChecker:
    doc: Document
    file: Path
    all_bindings: Mapping[str, str]
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    _noted: set[FieldPath] = field(default_factory=set)
    memory: bool = False  # something here reads `profile`, `orders` or `in_segment(…)`
    segments_read: list[tuple[str, Problem]] = field(default_factory=list)  # `in_segment('x')`: x, and where

    def check(
        self, path: YamlPath, item: Template | Condition, scope: Scope, *, param: Any = None, label: str = ""
    ) -> None:
        """`param`: the parameter's schema when the item is an action parameter (`label`: its name)."""
        first: dict[FieldPath, FieldUse] = {}
        optional: dict[FieldPath, bool] = {}
        for use in item.uses:
            self.memory = self.memory or use.path[0] in MEMORY
            if use.path[0] == "in_segment" and len(use.path) == 2 and use.path not in first:
                where = self._at(path, item, use, f"no segment {use.path[1]!r} is defined", "")
                self.segments_read.append((use.path[1], where))
            first.setdefault(use.path, use)
            optional[use.path] = optional.get(use.path, True) and use.optional
        failed: set[FieldPath] = set()
        for field_path, use in first.items():
            found = check_field(field_path, scope, self.all_bindings, optional=optional[field_path])
            if found is not None:
                failed.add(field_path)
                self.problems.append(self._at(path, item, use, *found))
            elif field_path[:2] == ("event", "raw") and len(field_path) > 2 and field_path not in self._noted:
                self._noted.add(field_path)
                self.notes.append(self._at(path, item, use, f"`{'.'.join(field_path)}` is not checked", UNCHECKED))
        if label and isinstance(item, Template):
            wanted = schema_types(param) if param is not None else ANY
            if not item.typed and not item.is_static and "string" not in wanted:
                self.problems.append(
                    self.doc.problem(
                        path,
                        f"{label} takes {_words(wanted)}, but a template with text around its {{{{ }}}} is text",
                        "make the whole value one {{ expression }}",
                    )
                )
                return
            self._nulls(path, item, scope, failed, param, label)
            if item.typed and not failed:
                self._types(path, item, scope, param, label)

    def _nulls(
        self, path: YamlPath, item: Template, scope: Scope, failed: set[FieldPath], param: Any, label: str
    ) -> None:
        if item.typed and "null" in schema_types(param):
            return
        seen: set[FieldPath] = set()
        for use in item.uses:
            if not use.exposed or use.guarded or use.path in failed or use.path in seen or scope.is_guarded(use.path):
                continue
            seen.add(use.path)
            if use.path[:2] == ("event", "raw") or not may_be_null(scope.schema_of(use.path)):
                continue
            dotted = ".".join(use.path)
            binding = scope.bindings.get(use.path[0])
            if binding is not None:
                why = binding.set_by
            else:
                why = f"{', '.join(t.name for t in scope.event_types)} events do not always carry it"
            becomes = "null" if item.typed else "empty"
            self.warnings.append(
                self._at(
                    path,
                    item,
                    use,
                    f"`{dotted}` may be null ({why}): {label} would be {becomes}",
                    f"guard the step with `if: {dotted}`, or give a fallback: {{{{ {dotted} | default('...') }}}}",
                )
            )

    def _types(self, path: YamlPath, item: Template, scope: Scope, param: Any, label: str) -> None:
        expr = expression_tree(item.source)
        if expr is None:
            return
        found = expression_types(expr, lambda p: _types_of(scope, p))
        wanted = schema_types(param)
        solid = found - NULL
        if found == ANY or not solid or compatible(solid, wanted):
            return
        hint = f"give {_words(wanted)} here (a filter can convert: `| int`, `| string`, `| list`)"
        if wanted & {"array"} and not solid & {"array"}:
            hint = f'put it in a list: ["{item.source.strip()}"]'
        self.problems.append(
            self.doc.problem(
                path, f"{label} takes {_words(wanted)}, but {item.source.strip()!r} gives {_words(solid)}", hint
            )
        )

    def _at(self, path: YamlPath, item: Template | Condition, use: FieldUse, message: str, hint: str) -> Problem:
        where = item.where
        if isinstance(item, Template) and not where.startswith(f"{self.file}:"):
            needle = "in_segment(" if use.path[0] == "in_segment" else ".".join(use.path)
            column = column_of(item.source, use.line, needle)
            used_by = f" (in the template of {self.file} {format_path(path)})"
            return Problem(where, use.line, column, path, message + used_by, hint)
        return self.doc.problem(path, message, hint)


def _types_of(scope: Scope, path: FieldPath) -> frozenset[str] | None:
    schema = scope.schema_of(path)
    return None if schema is None else schema_types(schema)
