"""From a schema-valid YAML document to a Flow, with the semantic checks: the flow's own keys
here (trigger, condition, goal, re-entry, concurrency); steps in build_steps, the shared checks in
build_context."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flowrun.actions import REGISTRY
from flowrun.errors import YamlPath
from flowrun.flow import model as m
from flowrun.flow import thresholds
from flowrun.flow.build_context import fmt
from flowrun.flow.build_steps import StepBuilder
from flowrun.flow.scope import TRIGGER, Scope
from flowrun.guardrails import load_flow_guardrails
from flowrun.templating import DEFAULT_LOCALE
from flowrun.templating.money import locale_problem
from flowrun.timing import CronSchedule, TimeSpecError


class Builder(StepBuilder):
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
            segments_read=tuple(self.fields.segments_read),
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
                self.all_bindings.setdefault(step["wait"]["as"], fmt(here))
            elif "as" in step:
                self.all_bindings.setdefault(step["as"], fmt(here))
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
