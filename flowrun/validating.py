"""`flowrun validate`: flows, the tests beside them, timelines and project files, checked
together; problems are collected, never raised."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from flowrun.errors import EventFileError, Problem, SourceError
from flowrun.flow.loader import TEST_SUFFIXES, discover, load_flows
from flowrun.flow.model import Flow
from flowrun.segments.loader import load_segments, segment_files, unknown_segments
from flowrun.templating import DEFAULT_LOCALE

_ANY_START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    files: int = 0
    flows: int = 0
    timelines: int = 0
    tests: int = 0

    @property
    def summary(self) -> str:
        parts = [f"{self.flows} flow(s)"]
        if self.tests:
            parts.append(f"{self.tests} test file(s)")
        if self.timelines:
            parts.append(f"{self.timelines} timeline(s)")
        return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def validate_paths(paths: Sequence[Path], config_files: Sequence[Path], *, locale: str | None = None) -> Report:
    from flowrun.dryrun.timeline import is_timeline, load_timeline, load_timeline_stubs

    report = Report()
    timelines = [p for p in discover(paths) if is_timeline(p)]
    loaded = load_flows(paths, skip=set(timelines), locale=locale or DEFAULT_LOCALE)
    report.problems.extend(loaded.problems)
    report.warnings.extend(loaded.warnings)
    report.notes.extend(loaded.notes)
    report.files, report.flows = loaded.files, len(loaded.flows)
    _, segment_problems = load_segments(paths, beside_files=False)
    report.problems.extend(segment_problems)
    if not segment_problems:
        known, _ = load_segments(paths)  # a single flow file's names: the segments beside it too
        report.problems.extend(unknown_segments(loaded.flows, {s.name for s in known}))
    report.files += len(segment_files(paths, beside_files=False))
    for timeline in timelines:  # dry-run's event timelines: their entries, event files and stubs
        report.files += 1
        report.timelines += 1
        try:
            load_timeline(timeline, _ANY_START)
            load_timeline_stubs(timeline, loaded.flows)
        except EventFileError as exc:
            report.problems.extend(exc.problems)
    broken = {Path(p.file).parent.resolve() for p in loaded.problems}
    for test_file in _test_files(paths):
        report.files += 1
        report.tests += 1
        beside = [f for f in loaded.flows if _beside(f, test_file)]
        # A test beside a broken flow would only repeat its problem as "no flow ...".
        complete = test_file.parent.resolve() not in broken
        report.problems.extend(_test_problems(test_file, beside if complete else []))
    for config_file in config_files:
        report.files += 1
        report.problems.extend(_config_problems(config_file))
    return report


def _test_files(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.name.endswith(TEST_SUFFIXES)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.name.endswith(TEST_SUFFIXES):
            found.append(path)
    return found


def _beside(flow: Flow, test_file: Path) -> bool:
    return flow.file.parent.resolve() == test_file.parent.resolve()


def _test_problems(test_file: Path, flows: list[Flow]) -> list[Problem]:
    from flowrun.testfile import load_test_file
    from flowrun.testing import reference_problems

    try:
        test = load_test_file(test_file)
    except SourceError as exc:
        return list(exc.problems)
    if not flows:  # the test's flows were not among the paths given: check only its shape
        return []
    return reference_problems(test, flows)


def _config_problems(path: Path) -> list[Problem]:
    from flowrun.config import load_config
    from flowrun.errors import ConfigError

    try:
        load_config(path, secrets=False)
    except ConfigError as exc:
        return list(exc.problems)
    return []
