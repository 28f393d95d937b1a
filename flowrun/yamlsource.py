"""YAML with positions: every value and every key keeps its line and column.

Scalars follow the YAML 1.2 core schema, not PyYAML's YAML 1.1 defaults: `on`, `yes`
and `no` stay strings (so `on:` is a key, not `True`), and `09:00` stays a string
instead of the sexagesimal number 540.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flowrun.errors import Problem, YamlPath

try:
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _BaseLoader = yaml.SafeLoader


class _CoreLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    pass


_CoreLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:int", r"^[-+]?[0-9]+$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$",
        "-+.0123456789",
    ),
):
    _CoreLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


@dataclass
class Document:
    """A parsed YAML document plus where each path came from."""

    file: str
    data: Any
    positions: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: YamlPath, *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of a path; the nearest known parent otherwise."""
        table = self.key_positions if key else self.positions
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.positions:
                return self.positions[probe]
            probe = probe[:-1]
        return self.positions.get((), (1, 1))

    def problem(self, path: YamlPath, message: str, hint: str = "", *, key: bool = False) -> Problem:
        line, column = self.where(path, key=key)
        return Problem(self.file, line, column, tuple(path), message, hint)


MAX_VALUES = 100_000  # values in one document, counting each use of an alias (`*x`) anew
MAX_DEPTH = 200  # mappings and lists inside one another


class YamlSyntaxError(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(problem.message)


def load_document(text: str, file: str) -> Document:
    """Parse one YAML document; raise YamlSyntaxError with a position on bad input."""
    loader = _CoreLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"YAML syntax error: {exc.problem or exc}"
        if exc.context:
            started = exc.context_mark
            where = f" that starts at line {started.line + 1}, column {started.column + 1}" if started else ""
            message += f" ({exc.context}{where})"
        raise YamlSyntaxError(
            Problem(file, line, column, (), message, "check indentation and quoting near here")
        ) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(Problem(file, 1, 1, (), f"YAML error: {exc}")) from None
    finally:
        loader.dispose()
    doc = Document(file, None)
    if node is None:
        return doc
    doc.data = _Builder(doc, loader).build(node, ())
    return doc


class _Builder:
    """Composed YAML nodes to plain values with positions. Aliases share nodes, so a small
    file can stand for a huge document ("billion laughs"): the values built are counted and
    capped, and an alias inside its own anchor is refused."""

    def __init__(self, doc: Document, loader: Any) -> None:
        self.doc, self.loader = doc, loader
        self.values = 0
        self.open: set[int] = set()  # nodes being built: an alias to one of them is a loop

    def _refuse(self, node: yaml.Node, path: YamlPath, message: str, hint: str) -> YamlSyntaxError:
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        return YamlSyntaxError(Problem(self.doc.file, line, column, path, message, hint))

    def build(self, node: yaml.Node, path: YamlPath) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise self._refuse(
                node,
                path,
                f"the document expands to more than {MAX_VALUES:,} values (YAML aliases such as *x repeat "
                "what they point at)",
                "write the values out, or use fewer and smaller aliases",
            )
        if len(path) > MAX_DEPTH:
            raise self._refuse(node, path, f"values are nested more than {MAX_DEPTH} deep", "flatten the document")
        self.doc.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            return self.loader.construct_object(node, deep=True)
        if id(node) in self.open:
            raise self._refuse(node, path, "a YAML alias refers to the value that contains it", "remove the alias")
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._mapping(node, path)
        finally:
            self.open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: YamlPath) -> dict[str, Any]:
        self.loader.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*path, key)
            if key in out:
                raise self._refuse(key_node, child, f"duplicate key {key!r}", "remove one of them")
            self.doc.key_positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.build(value_node, child)
        return out


def read_document(path: Path, what: str, error: type[Exception]) -> Document:
    """Read and parse a YAML file; unreadable or malformed files raise `error([problem])`."""
    file = str(path)
    try:
        return load_document(path.read_text(encoding="utf-8"), file)
    except OSError as exc:
        raise error([Problem(file, 1, 1, (), f"cannot read {what}: {exc.strerror}")]) from None
    except YamlSyntaxError as exc:
        raise error([exc.problem]) from None


def plain(value: Any) -> Any:
    """Deep-copy a loaded value into plain dicts and lists (for JSON output)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
