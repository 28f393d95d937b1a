"""The steps of a flow, each built from its schema-valid mapping: control steps (if, choose,
split, waits, stop) and action steps, with the scope each branch sees."""

from __future__ import annotations

import difflib
from typing import Any

from flowrun.actions import REGISTRY
from flowrun.actions.base import CompileContext
from flowrun.errors import YamlPath
from flowrun.flow import model as m
from flowrun.flow.build_context import BuildContext, fmt, never
from flowrun.flow.scope import TRIGGER, Binding, Scope, types_for
from flowrun.timing import TimeSpecError, parse_time_of_day

MESSAGE_ACTIONS = frozenset(name for name, action in REGISTRY.items() if action.channel is not None)


class StepBuilder(BuildContext):
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
            return m.IfStep(path, name, cond or never(), then, otherwise)
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
            cond = self.condition(option["when"], (*here, "when"), scope) or never()
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
            then_scope.bind(as_name, Binding(f"the event received by {fmt(path)}", events=types_for(events)))
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
            scope.bind(as_name, Binding(f"the result of {kind} at {fmt(path)}", action=action))
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
