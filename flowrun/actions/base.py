"""What every action module provides; the engine only ever talks to this."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowrun.errors import Problem, YamlPath
from flowrun.templating import DEFAULT_LOCALE, Template, TemplateSyntax, parse_template
from flowrun.templating.values import schema_types

if TYPE_CHECKING:
    from datetime import datetime

    from flowrun.engine.state import RunState
    from flowrun.events import Event
    from flowrun.loyalty import Ledger

Schema = dict[str, Any]
TEMPLATED: Schema = {"type": "string", "description": "text; may use {{ }} templates"}
CATEGORY: Schema = {
    "enum": ["marketing", "transactional"],
    "description": "transactional messages (order, shipping) pass marketing suppression and caps",
}


MAX_TEMPLATE_FILE_BYTES = 1_000_000


@dataclass
class CompileContext:
    """What an action needs to compile its parameters: where the flow lives (and the folder
    its templates must stay in), its locale, its parameters' schema, where to report."""

    flow_file: Path
    path: YamlPath
    problems: list[Problem] = field(default_factory=list)
    locate: Any = None  # callable(path) -> (line, column)
    root: Path | None = None  # the flows folder; default: the flow file's folder
    locale: str = DEFAULT_LOCALE
    schema: Any = None  # the action's params schema, for typed parameters

    def report(self, path: YamlPath, message: str, hint: str = "") -> None:
        line, column = self.locate(path) if self.locate else (1, 1)
        self.problems.append(Problem(str(self.flow_file), line, column, path, message, hint))

    def schema_at(self, path: YamlPath) -> Any:
        return schema_at(self.schema, path[len(self.path) :])

    def template(
        self, source: str, path: YamlPath, *, html: bool = False, typed: bool | None = None
    ) -> Template | None:
        where = f"{self.flow_file}:{_fmt(path)}"
        if typed is None:
            typed = takes_more_than_text(self.schema_at(path))
        try:
            return parse_template(source, where, html=html, locale=self.locale, typed=typed)
        except TemplateSyntax as exc:
            message = f"template syntax error: {exc.message}" if "unknown" not in exc.message else exc.message
            self.report(path, message, exc.hint or "check the {{ }} and {% %} pairs")
            return None

    def template_file(self, name: str, path: YamlPath) -> Template | None:
        """A template file next to the flow; it must stay inside the flows folder."""
        root = self.root if self.root is not None else self.flow_file.parent
        shown = os.path.normpath(self.flow_file.parent / name)
        if Path(name).is_absolute() or Path(name).drive:
            self.report(
                path,
                f"template path {name!r} is absolute; templates are read from the flows folder only",
                f"give a path relative to the flow file inside {root}, e.g. templates/{Path(name).name}",
            )
            return None
        file = (self.flow_file.parent / name).resolve()
        if not file.is_relative_to(root.resolve()):
            self.report(
                path,
                f"template path {name!r} leads outside the flows folder {root} (to {file})",
                f"keep templates inside {root}, e.g. templates/{Path(name).name}",
            )
            return None
        try:
            if file.stat().st_size > MAX_TEMPLATE_FILE_BYTES:
                self.report(path, f"template file {name!r} is over {MAX_TEMPLATE_FILE_BYTES:,} bytes")
                return None
            source = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            self.report(
                path,
                f"template file {name!r} not found (looked for {file})",
                "template paths are relative to the flow file",
            )
            return None
        try:
            return parse_template(source, shown, html=".htm" in file.name, locale=self.locale)
        except TemplateSyntax as exc:
            message = f"template syntax error: {exc.message}" if "unknown" not in exc.message else exc.message
            self.problems.append(
                Problem(
                    shown,
                    exc.line,
                    exc.column,
                    path,
                    f"{message} (in the template of {self.flow_file} {_fmt(path)})",
                    exc.hint,
                )
            )
            return None


def schema_at(schema: Any, path: YamlPath) -> Any:
    """The sub-schema of a parameter at a path inside the action's mapping (None: unknown)."""
    for part in path:
        if not isinstance(schema, Mapping):
            return None
        if not ({"type", "properties", "items", "anyOf", "oneOf", "enum", "const"} & set(schema)):
            return {}  # any value: so is every part of it
        if isinstance(part, int):
            schema = schema.get("items")
            continue
        props = schema.get("properties") or {}
        if part in props:
            schema = props[part]
            continue
        branch = next(
            (b for b in schema.get("anyOf", schema.get("oneOf", ())) if part in b.get("properties", {})), None
        )
        if branch is not None:
            schema = branch["properties"][part]
        elif isinstance(schema.get("additionalProperties"), Mapping):
            schema = schema["additionalProperties"]
        else:
            return None
    return schema


def takes_more_than_text(schema: Any) -> bool:
    """Whether a parameter's value may be more than a string (a number, list, object...)."""
    if schema is None:
        return False
    return bool(schema_types(schema) - {"string"})


def _fmt(path: YamlPath) -> str:
    from flowrun.errors import format_path

    return format_path(path)


class PermanentError(Exception):
    """The provider said no in a way that retrying cannot change (a 4xx, bad input)."""


class RetryableError(Exception):
    """Worth another try later (a timeout, 429, 5xx); `retry_after` in seconds if the provider said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedError(RetryableError):
    """HTTP 429 with a `Retry-After`: the provider asked to come back later; not a failed attempt."""


@dataclass
class DeliveryContext:
    """What a delivery may use: the shared HTTP client, its settings, a logger, a timeout."""

    http: Any  # httpx.AsyncClient
    settings: Mapping[str, Any]
    log: logging.Logger
    timeout_s: float
    sources: Mapping[str, Any] = field(default_factory=dict)  # store credentials, for store actions
    channels: Mapping[str, Any] = field(default_factory=dict)  # every channel's settings (a PO is an email)
    clients: Any = None  # flowrun.netpolicy.GuardedClients kept by the dispatcher; None: one per request

    def setting(self, name: str, default: Any = None) -> Any:
        """A channel setting, secrets revealed."""
        return revealed(self.settings.get(name, default))

    def require(self, *names: str) -> list[Any]:
        missing = [n for n in names if self.settings.get(n) in (None, "")]
        if missing:
            raise PermanentError(f"channel settings missing: {', '.join(missing)} (set them in flowrun.yaml)")
        return [self.setting(n) for n in names]


class ActionType:
    """Base of the action modules. Subclasses set the class attributes and may override hooks."""

    name: str = ""
    summary: str = ""
    channel: str | None = None  # email | sms | push: subject to guardrails
    config_schema: Schema = {"type": "object"}  # its settings under `channels:` in flowrun.yaml
    params_schema: Schema = {}
    result_schema: Schema = {"type": "object", "properties": {}}
    retry_by_default: bool = True
    emits: tuple[str, ...] = ()  # event types its settling may emit (a flow may not start on them)

    def step_schema(self) -> Schema:
        return self.params_schema

    def compile_params(self, raw: Any, ctx: CompileContext) -> Any:
        """Turn the YAML value into a tree whose strings are Templates. Override for files."""
        return compile_tree(raw, ctx.path, ctx)

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        """Hook run after rendering (derive a text part, set defaults...)."""
        if self.channel is not None:
            params.setdefault("category", "marketing")
        return params

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        """The result a dry-run records for `as:`; deterministic in the idempotency key."""
        return {}

    def rate_key(self, params: Mapping[str, Any], ctx: DeliveryContext) -> tuple[str, str] | None:
        """The provider's rate-limit bucket this send draws from: (provider, account), or None
        (flowrun.delivery.ratelimit)."""
        return None

    def unconfigured(self, channels: Mapping[str, Any], sources: Mapping[str, Any]) -> str | None:
        """What `serve --check` must report before this action can deliver (None: ready)."""
        return None

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        """Perform the action for real; raise PermanentError or RetryableError on failure."""
        raise PermanentError(f"no channel delivers `{self.name}` in this version of flowrun")

    def settle(
        self,
        params: Mapping[str, Any],
        key: str,
        result: dict[str, Any],
        run: RunState,
        ledger: Ledger,
        now: datetime,
    ) -> tuple[dict[str, Any], list[Event]]:
        """Local effects of a delivered action, applied with the run's next step in one
        transaction (serve's worker; the simulator in dry-run): the result the run sees, and
        events to play. Applied again after a crash, so it must be idempotent in `key`."""
        return result, []

    def result_has(self, path: tuple[str, ...]) -> bool:
        schema = self.result_schema
        for part in path:
            props = schema.get("properties")
            if props is None:
                return bool(schema.get("additionalProperties", False))
            if part not in props:
                return False
            schema = props[part]
        return True


def revealed(value: Any) -> Any:
    """Settings as a provider needs them: every Secret (config.Secret) in them revealed."""
    if hasattr(value, "reveal"):
        return value.reveal()
    if isinstance(value, Mapping):
        return {k: revealed(v) for k, v in value.items()}
    return value


def compile_tree(raw: Any, path: YamlPath, ctx: CompileContext) -> Any:
    """The YAML value with every string a Template; a string that is one whole `{{ }}` where
    the action's schema takes more than text is typed (it keeps its value's type)."""
    if isinstance(raw, str):
        return ctx.template(raw, path) or raw
    if isinstance(raw, Mapping):
        return {k: compile_tree(v, (*path, k), ctx) for k, v in raw.items()}
    if isinstance(raw, list):
        return [compile_tree(v, (*path, i), ctx) for i, v in enumerate(raw)]
    return raw


def render_tree(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, Template):
        return value.render_value(context)
    if isinstance(value, Mapping):
        return {k: render_tree(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_tree(v, context) for v in value]
    return value


def templates_in(value: Any) -> list[Template]:
    if isinstance(value, Template):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in templates_in(v)]
    if isinstance(value, list):
        return [t for v in value for t in templates_in(v)]
    return []


def stable_token(key: str, size: int = 8) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:size].upper()


def obj(required: list[str], **props: Schema) -> Schema:
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def result(**props: Schema) -> Schema:
    return {"type": "object", "properties": props}


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds: a (possibly fractional) number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import UTC, datetime

    return max(0.0, (when - datetime.now(UTC)).total_seconds())
