"""Read flow files: YAML with positions, schema check, then the model and semantic checks."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flowrun.errors import FlowError, Problem
from flowrun.flow.build import Builder
from flowrun.flow.model import Flow
from flowrun.flow.validation import check
from flowrun.templating import DEFAULT_LOCALE
from flowrun.yamlsource import YamlSyntaxError, load_document

TEST_SUFFIXES = (".test.yaml", ".test.yml")
CONFIG_NAMES = ("flowrun.yaml", "flowrun.yml")
SEGMENTS = "segments"  # the folder of segment files inside a flows folder


def is_flow_file(path: Path) -> bool:
    name = path.name
    return (
        name.endswith((".yaml", ".yml"))
        and not name.endswith(TEST_SUFFIXES)
        and name not in CONFIG_NAMES
        and not name.startswith(".")
    )


def discover(paths: Iterable[Path]) -> list[Path]:
    """Flow files under the given files and folders, in a stable order."""
    return [file for file, _ in discover_with_roots(paths)]


def discover_with_roots(paths: Iterable[Path]) -> list[tuple[Path, Path]]:
    """(flow file, its flows folder): the folder given, or a file's own folder. A flow's
    templates must stay inside its flows folder."""
    found: list[tuple[Path, Path]] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                (p, path)
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and is_flow_file(p)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and p.relative_to(path).parts[0] != SEGMENTS  # segment files (flowrun.segments.loader)
            )
        elif path.name not in CONFIG_NAMES and path.parent.name != SEGMENTS:  # a project file: its own schema
            found.append((path, path.parent))
    return found


def load_flow(path: Path, *, root: Path | None = None, locale: str = DEFAULT_LOCALE) -> Flow:
    """One flow file to a Flow; raises FlowError carrying every problem found.

    `root`: the flows folder its templates must stay in (default: the file's folder);
    `locale`: the project's, for `money` in flows that do not set their own."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError([Problem(file, 1, 1, (), f"cannot read flow file: {exc}")]) from None
    try:
        doc = load_document(text, file)
    except YamlSyntaxError as exc:
        raise FlowError([exc.problem]) from None
    if not isinstance(doc.data, dict):
        raise FlowError(
            [
                doc.problem(
                    (),
                    "a flow file must be a mapping with `flow`, `on` and `steps`",
                    "start from `flowrun init`, or see flows/ for examples",
                )
            ]
        )
    problems = [doc.problem(path_, message, hint, key=at_key) for path_, message, hint, at_key in check(doc.data)]
    if problems:
        raise FlowError(_unique(problems))
    builder = Builder(doc, text, root=root, locale=locale)
    flow = builder.build()
    if flow is None:
        raise FlowError(_unique(builder.problems))
    return flow


def _unique(problems: Sequence[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        key = (p.line, p.column, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return sorted(out, key=lambda p: (p.file, p.line, p.column))


@dataclass
class FlowSet:
    flows: list[Flow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: int = 0

    @property
    def warnings(self) -> list[Problem]:
        return [w for f in self.flows for w in f.warnings]

    @property
    def notes(self) -> list[Problem]:
        return [n for f in self.flows for n in f.notes]


def load_flows(paths: Iterable[Path], skip: Collection[Path] = (), *, locale: str = DEFAULT_LOCALE) -> FlowSet:
    """Every flow under the paths (but `skip`); problems are collected, not raised, and ids
    must be unique."""
    result = FlowSet()
    first_seen: dict[str, Flow] = {}
    for path, root in discover_with_roots(paths):
        if path in skip:
            continue
        result.files += 1
        try:
            flow = load_flow(path, root=root, locale=locale)
        except FlowError as exc:
            result.problems.extend(exc.problems)
            continue
        if flow.id in first_seen:
            line, column = _id_position(path)
            result.problems.append(
                Problem(
                    str(path),
                    line,
                    column,
                    ("flow",),
                    f"duplicate flow id {flow.id!r}",
                    f"already used by {first_seen[flow.id].file}; flow ids must be unique",
                )
            )
            continue
        first_seen[flow.id] = flow
        result.flows.append(flow)
    return result


def _id_position(path: Path) -> tuple[int, int]:
    doc = load_document(path.read_text(encoding="utf-8"), str(path))
    return doc.where(("flow",))
