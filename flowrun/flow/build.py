"""From a schema-valid YAML document to a Flow, with the semantic checks."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from flowrun.actions import REGISTRY
from flowrun.actions.base import CompileContext, schema_at
from flowrun.durations import DURATION_HINT, DurationSyntaxError, parse_duration
from flowrun.errors import Problem, YamlPath
from flowrun.events.catalogue import EVENT_TYPES, lookup_type
from flowrun.flow import model as m
from flowrun.flow import thresholds
from flowrun.flow.fieldcheck import FieldChecker
from flowrun.flow.scope import TRIGGER, Binding, Scope, types_for
from flowrun.guardrails import load_flow_guardrails
from flowrun.templating import DEFAULT_LOCALE, Condition, Template, TemplateSyntax, parse_condition, parse_template
from flowrun.templating.money import locale_problem
from flowrun.timing import CronSchedule, TimeSpecError, parse_time_of_day, zone
from flowrun.yamlsource import Document

MESSAGE_ACTIONS = frozenset(name for name, action in REGISTRY.items() if action.channel is not None)


class Builder:
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
            cond = parse_condition(source, f"{self.file}:{_fmt(path)}")
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
            label = f"`{action.name}.{_fmt(inside)}`" if inside else f"`{action.name}`"
            schema = schema_at(action.params_schema, inside)
            self.fields.check(where, template, scope, param=schema, label=label)

    def scope_for(self, names: tuple[str, ...]) -> Scope:
        """The names a condition or template sees for events of these types."""
        return Scope(types_for(names), unknown_types=any(n in self.unknown_types for n in names))

    # -- the flow -----------------------------------------------------------------------

    def build(self) -> m.Flow | None:
        data: dict[str, Any] = self.doc.data
        self._collect_bindings(data.get("steps", []), ("steps",))
        self.locale = self.flow_locale(data.get("locale", self.locale))
        trigger = self.trigger(data["on"], ("on",))
        self.trigger_events = trigger.events if isinstance(trigger, m.EventTrigger) else ()
        timezone = self.zone_name(data.get("timezone", "UTC"), ("timezone",))
        scope = self.scope_for(trigger.events if isinstance(trigger, m.EventTrigger) else ("schedule.tick",))
        condition = self.condition(data["if"], ("if",), scope) if "if" in data else None
        if condition is not None and isinstance(trigger, m.EventTrigger):
            for message, hint in thresholds.never_true(trigger, condition):
                self.report(("if",), message, hint)
        if condition is not None:
            scope = scope.guard(condition.asserted)
        goal = self.goal(data["until"], scope) if "until" in data else None
        if goal is not None and isinstance(trigger, m.ScheduleTrigger):
            self.report(
                ("until",),
                "`until` needs a customer, and scheduled runs have none",
                "remove `until`, or start the flow on an event",
            )
        reentry = self.reentry(data.get("reentry", "always"))
        concurrency = self.concurrency(data.get("concurrency", {}), scope)
        steps = self.steps(data["steps"], ("steps",), scope)
        self.problems.extend(self.fields.problems)
        if self.problems:
            return None
        from flowrun.engine.program import compile_program

        flow = m.Flow(
            id=data["flow"],
            file=self.file,
            version=self.version,
            description=data.get("description", ""),
            trigger=trigger,
            condition=condition,
            goal=goal,
            reentry=reentry,
            concurrency=concurrency,
            timezone=timezone,
            steps=steps,
            guardrails=load_flow_guardrails(data["guardrails"]) if "guardrails" in data else None,
            locale=self.locale,
            warnings=tuple(self.fields.warnings),
            notes=tuple(self.fields.notes),
            memory=self.fields.memory,
        )
        object.__setattr__(flow, "program", compile_program(steps))
        return flow

    def flow_locale(self, name: str) -> str:
        problem = locale_problem(name)
        if problem is None:
            return name
        if "locale" in self.doc.data:
            self.report(("locale",), *problem)
        else:
            self.report(("flow",), f"the project's {problem[0]}", problem[1])
        return DEFAULT_LOCALE

    def _collect_bindings(self, steps: list[Any], path: YamlPath) -> None:
        for i, step in enumerate(steps):
            here = (*path, i)
            if isinstance(step.get("name"), str):
                self.step_names.setdefault(step["name"], next((a for a in REGISTRY if a in step), "(control)"))
            if isinstance(step.get("wait"), dict) and "as" in step["wait"]:
                self.all_bindings.setdefault(step["wait"]["as"], _fmt(here))
            elif "as" in step:
                self.all_bindings.setdefault(step["as"], _fmt(here))
            for key in ("then", "else", "otherwise"):
                if isinstance(step.get(key), list):
                    self._collect_bindings(step[key], (*here, key))
            for key in ("choose", "split"):
                for j, option in enumerate(step.get(key) or []):
                    self._collect_bindings(option["steps"], (*here, key, j, "steps"))

    def segment_filter(self, value: dict[str, Any], events: tuple[str, ...], path: YamlPath) -> str | None:
        if "segment" not in value:
            return None
        if not set(events) <= {"segment.entered", "segment.exited"}:
            self.report((*path, "segment"), "`segment:` belongs to segment.entered / segment.exited", "", key=True)
        return str(value["segment"])

    def trigger(self, value: Any, path: YamlPath) -> m.Trigger:
        if isinstance(value, (str, list)):
            return m.EventTrigger(self.event_names(value, path))
        if "event" in value:
            source = value.get("source", ())
            events = self.event_names(value["event"], (*path, "event"))
            return m.EventTrigger(
                events,
                (source,) if isinstance(source, str) else tuple(source),
                **thresholds.trigger_thresholds(value, events, path, self.report),
                segment=self.segment_filter(value, events, path),
            )
        missed = value.get("missed", "skip")
        if "every" in value:
            every = self.duration(value["every"], (*path, "every"))
            if every < timedelta(minutes=1) and every != timedelta(0):
                self.report((*path, "every"), "`every` must be at least 1m", "poll no more often than once a minute")
            return m.ScheduleTrigger(None, every, missed)
        tz = self.zone_name(value.get("timezone", self.doc.data.get("timezone", "UTC")), (*path, "timezone"))
        try:
            cron = CronSchedule.parse(value["schedule"], tz if not self._has_problem_at((*path, "timezone")) else "UTC")
        except TimeSpecError as exc:
            self.report((*path, "schedule"), exc.message, exc.hint)
            cron = None
        return m.ScheduleTrigger(cron, None, missed)

    def _has_problem_at(self, path: YamlPath) -> bool:
        return any(p.path == path for p in self.problems)

    def goal(self, value: Any, scope: Scope) -> m.Goal:
        if isinstance(value, (str, list)):
            return m.Goal(self.event_names(value, ("until",)))
        events = self.event_names(value["event"], ("until", "event"))
        where = None
        if "where" in value:
            where_scope = self.scope_for(events)
            where_scope.extra[TRIGGER] = scope.event_types
            where_scope.awaited = ", ".join(events)
            where = self.condition(value["where"], ("until", "where"), where_scope)
        return m.Goal(events, where)

    def reentry(self, value: str) -> m.Reentry:
        if value in ("always", "once"):
            return m.Reentry(value)
        return m.Reentry("window", self.duration(value, ("reentry",)))

    def concurrency(self, value: dict[str, Any], scope: Scope) -> m.Concurrency:
        key = None
        if "key" in value:
            key = self.template(value["key"], ("concurrency", "key"))
            if key is not None:
                self.fields.check(("concurrency", "key"), key, scope)
        return m.Concurrency(key, value.get("mode", "parallel"))

    def template(self, source: str, path: YamlPath) -> Template | None:
        try:
            return parse_template(source, f"{self.file}:{_fmt(path)}", locale=self.locale)
        except TemplateSyntax as exc:
            unknown = exc.message.startswith("unknown")
            self.report(path, exc.message if unknown else f"template syntax error: {exc.message}", exc.hint)
            return None

    # -- steps --------------------------------------------------------------------------

    def steps(self, items: list[dict[str, Any]], path: YamlPath, scope: Scope) -> tuple[m.AnyStep, ...]:
        out = []
        for i, item in enumerate(items):
            step = self.step(item, (*path, i), scope)
            if step is not None:
                out.append(step)
        return tuple(out)

    def step(self, item: dict[str, Any], path: YamlPath, scope: Scope) -> m.AnyStep | None:
        name = item.get("name")
        if "wait" in item:
            return self.wait_step(item, path, scope)
        if ("then" in item or "else" in item) and "if" not in item:
            self.report(path, "`then`/`else` belong to an `if` step or a `wait: {for: ...}` step")
        if "if" in item:
            cond = self.condition(item["if"], (*path, "if"), scope)
            then_scope, else_scope = scope.guard(cond.asserted if cond else frozenset()), scope.copy()
            then = self.steps(item["then"], (*path, "then"), then_scope)
            otherwise = self.steps(item.get("else", []), (*path, "else"), else_scope)
            scope.merge(then_scope, else_scope)
            return m.IfStep(path, name, cond or _never(), then, otherwise)
        if "choose" in item:
            return self.choose_step(item, path, scope)
        if "split" in item:
            self.check_weights([float(b["weight"]) for b in item["split"]], (*path, "split"))
            branch_scopes = []
            branches = []
            for j, branch in enumerate(item["split"]):
                branch_scope = scope.copy()
                steps = self.steps(branch["steps"], (*path, "split", j, "steps"), branch_scope)
                branches.append(m.SplitBranch(branch.get("name", chr(ord("A") + j)), float(branch["weight"]), steps))
                branch_scopes.append(branch_scope)
            scope.merge(*branch_scopes)
            return m.SplitStep(path, name, tuple(branches))
        if "stop" in item:
            return m.StopStep(path, name, item["stop"])
        return self.action_step(item, path, scope)

    def choose_step(self, item: dict[str, Any], path: YamlPath, scope: Scope) -> m.ChooseStep:
        options, scopes = [], []
        for j, option in enumerate(item["choose"]):
            here = (*path, "choose", j)
            cond = self.condition(option["when"], (*here, "when"), scope) or _never()
            option_scope = scope.guard(cond.asserted)
            options.append(m.ChooseOption(cond, self.steps(option["steps"], (*here, "steps"), option_scope)))
            scopes.append(option_scope)
        otherwise_scope = scope.copy()
        otherwise = self.steps(item.get("otherwise", []), (*path, "otherwise"), otherwise_scope)
        scope.merge(*scopes, otherwise_scope)
        return m.ChooseStep(path, item.get("name"), tuple(options), otherwise)

    def wait_step(self, item: dict[str, Any], path: YamlPath, scope: Scope) -> m.AnyStep:
        wait, name, here = item["wait"], item.get("name"), (*path, "wait")
        if not (isinstance(wait, dict) and "for" in wait) and ("then" in item or "else" in item):
            self.report(
                path,
                "`then`/`else` on a wait need `wait: {for: <event>, timeout: ...}`",
                "a plain wait just continues with the next step",
            )
        if isinstance(wait, str):
            return m.DelayStep(path, name, self.duration(wait, here))
        if "until" in wait:
            try:
                at = parse_time_of_day(wait["until"])
            except TimeSpecError as exc:
                self.report((*here, "until"), exc.message, exc.hint)
                at = parse_time_of_day("00:00")
            tz = wait.get("timezone")
            if tz not in (None, "customer"):
                self.zone_name(tz, (*here, "timezone"))
            return m.WaitUntilStep(path, name, at, tz)
        events = self.event_names(wait["for"], (*here, "for"))
        where = None
        if "where" in wait:
            where_scope = scope.copy()
            where_scope.event_types = types_for(events)
            where_scope.unknown_types = scope.unknown_types or any(n in self.unknown_types for n in events)
            where_scope.guarded = frozenset()
            where_scope.extra[TRIGGER] = scope.event_types
            where_scope.awaited = ", ".join(events)
            where = self.condition(wait["where"], (*here, "where"), where_scope)
        then_scope, else_scope = scope.copy(), scope.copy()
        as_name = wait.get("as")
        if as_name:
            self.check_as_name(as_name, (*here, "as"), scope)
            then_scope.bind(as_name, Binding(f"the event received by {_fmt(path)}", events=types_for(events)))
        then = self.steps(item.get("then", []), (*path, "then"), then_scope)
        otherwise = self.steps(item.get("else", []), (*path, "else"), else_scope)
        scope.merge(then_scope, else_scope)
        message_step = self.message_step(wait["step"], events, (*here, "step")) if "step" in wait else None
        timeout = self.duration(wait["timeout"], (*here, "timeout"))
        return m.WaitForStep(path, name, events, timeout, where, as_name, then, otherwise, message_step)

    def message_step(self, step: str, events: tuple[str, ...], path: YamlPath) -> str:
        """`step:` names a step of this flow that sends a customer message, for message.* waits."""
        others = [e for e in events if not e.startswith("message.")]
        if others:
            self.report(
                path,
                f"`step:` picks the message a step sent, and {others[0]!r} is not a message event",
                "wait for message.delivered, opened, clicked, bounced, complained or unsubscribed",
            )
        found = self.step_names.get(step)
        sends = sorted(n for n, action in self.step_names.items() if action in MESSAGE_ACTIONS)
        if found is None:
            close = difflib.get_close_matches(step, sends, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else "give the send step a `name:` and use it here"
            listed = f" (steps that send: {', '.join(sends)})" if sends else ""
            self.report(path, f"no step named {step!r} in this flow{listed}", hint)
        elif found not in MESSAGE_ACTIONS:
            self.report(
                path,
                f"step {step!r} is a `{found}` step, which sends no customer message",
                f"name an email, sms or push step{': ' + ', '.join(sends) if sends else ''}",
            )
        return step

    def check_weights(self, weights: list[float], path: YamlPath) -> None:
        total = sum(weights)
        if abs(total - 100) < 1e-9:
            return
        scaled = [round(w * 100 / total) for w in weights] if total > 0 else [100 // len(weights)] * len(weights)
        scaled[-1] += 100 - sum(scaled)
        self.report(
            path,
            f"split weights add up to {total:g}, not 100 (they are percentages)",
            f"make them add up to 100, e.g. {', '.join(f'{w:g}' for w in scaled)}",
        )

    def check_as_name(self, name: str, path: YamlPath, scope: Scope) -> None:
        reserved = {"event", "run", "flow", "now", TRIGGER, *{p for t in scope.event_types for p in t.parts}}
        if name in reserved:
            self.report(path, f"`as: {name}` would hide the built-in name {name!r}", "choose another name")

    def action_step(self, item: dict[str, Any], path: YamlPath, scope: Scope) -> m.ActionStep | None:
        kind = next(k for k in item if k in REGISTRY)
        action = REGISTRY[kind]
        looping = set(action.emits) & set(self.trigger_events)
        if looping:
            self.report(
                (*path, kind),
                f"`{kind}` emits {', '.join(sorted(looping))}, which starts this flow: each run would start another",
                "act on the event in a flow that does not itself emit it",
                key=True,
            )
        ctx = CompileContext(
            self.file,
            (*path, kind),
            locate=self.doc.where,
            root=self.root,
            locale=self.locale,
            schema=action.params_schema,
        )
        params = action.compile_params(item[kind], ctx)
        self.problems.extend(ctx.problems)
        self.check_params(params, (*path, kind), scope, action)
        retry_raw = item.get("retry", {})
        retry = m.RetryPolicy(
            attempts=retry_raw.get("attempts", 5 if action.retry_by_default else 1),
            backoff=self.duration(retry_raw.get("backoff", "30s"), (*path, "retry", "backoff")),
            max_backoff=self.duration(retry_raw.get("max_backoff", "1h"), (*path, "retry", "max_backoff")),
        )
        as_name = item.get("as")
        if as_name:
            self.check_as_name(as_name, (*path, "as"), scope)
            scope.bind(as_name, Binding(f"the result of {kind} at {_fmt(path)}", action=action))
        return m.ActionStep(
            path,
            item.get("name"),
            action,
            params,
            as_name,
            item.get("on_error", "fail"),
            retry,
            self.duration(item.get("timeout", "30s"), (*path, "timeout")),
        )


def _templates_with_paths(value: Any, path: YamlPath) -> Iterator[tuple[YamlPath, Template]]:
    if isinstance(value, Template):
        yield path, value
    elif isinstance(value, dict):
        for key, sub in value.items():
            yield from _templates_with_paths(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _templates_with_paths(sub, (*path, i))


def _never() -> Condition:
    return Condition("false", "(invalid)")


def _fmt(path: YamlPath) -> str:
    from flowrun.errors import format_path

    return format_path(path)
