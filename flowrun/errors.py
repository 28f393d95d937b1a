"""The one exception tree of flowrun.

Everything below the CLI raises one of these; only the CLI formats them.

    FlowrunError
    ├── SourceError          a problem at a place in a file (file, line, column, YAML path)
    │   ├── FlowError        a flow file is invalid (schema or semantic check)
    │   ├── EventFileError   an event or timeline file cannot be read or normalised
    │   └── ConfigError      the project configuration is invalid
    ├── UnknownTopicError    a store topic flowrun cannot normalise
    ├── LookupFailedError    a store's API did not answer a lookup an event needs (try later)
    ├── WebhookRefused       a provider's webhook the port answers with a 4xx (engagement)
    ├── RenderError          a template or condition failed at run time
    ├── StateError           the state database is missing or at another schema version
    └── UsageError           the command line asked for something impossible
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

YamlPath = tuple[str | int, ...]


@lru_cache(maxsize=16384)
def format_path(path: YamlPath) -> str:
    """Render a YAML path as `steps[2].email.to`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(document)"


@dataclass(frozen=True)
class Problem:
    """One finding at a place in a file."""

    file: str
    line: int
    column: int
    path: YamlPath
    message: str
    hint: str = ""

    def as_dict(self) -> dict[str, object]:
        message = f"{self.message} ({self.hint})" if self.hint else self.message
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": format_path(self.path),
            "message": message,
        }


class FlowrunError(Exception):
    """Base of every error flowrun raises on purpose."""


@dataclass
class SourceError(FlowrunError):
    problems: Sequence[Problem] = field(default_factory=tuple)

    def __str__(self) -> str:
        return "\n".join(
            f"{p.file}:{p.line}:{p.column}: {p.message}" + (f" ({p.hint})" if p.hint else "") for p in self.problems
        )


class FlowError(SourceError):
    pass


class EventFileError(SourceError):
    pass


class ConfigError(SourceError):
    pass


class SegmentError(SourceError):
    """A segment file (segments/*.yaml next to the flows) that cannot be used."""


class UnknownTopicError(FlowrunError):
    def __init__(self, source: str, topic: str, known: Sequence[str]) -> None:
        self.source, self.topic, self.known = source, topic, tuple(known)
        super().__init__(f"unknown {source} topic {topic!r}; flowrun normalises: {', '.join(sorted(known))}")


class LookupFailedError(FlowrunError):
    """A store's API did not answer a lookup that a delivery's event needs (events.enrich)."""


class WebhookRefused(FlowrunError):
    """A webhook refused before anything is stored: the HTTP status, a short reason (the
    metric's label) and a detail for the log line and the answer."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        self.status, self.reason, self.detail = status, reason, detail
        super().__init__(f"{status} {reason}: {detail}")


class RenderError(FlowrunError):
    """A template or condition failed while a run was being played."""

    def __init__(self, where: str, message: str) -> None:
        self.where, self.message = where, message
        super().__init__(f"{where}: {message}")


class StateError(FlowrunError):
    pass


class UsageError(FlowrunError):
    pass
