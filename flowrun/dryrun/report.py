"""dry-run output: the JSON document and the readable timeline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flowrun.dryrun.simulator import RecordedAction, SimulationResult
from flowrun.dryrun.stubs import StepIndex
from flowrun.dryrun.timeline import Scheduled
from flowrun.dryrun.unstarted import unstarted
from flowrun.engine.state import RunState, Status
from flowrun.flow.model import Flow
from flowrun.jsonout import iso, plain
from flowrun.templating import Template

SHOWN_PARAMS = (
    "to",
    "subject",
    "title",
    "percent",
    "amount",
    "add",
    "note",
    "points",
    "supplier",
    "items",
    "message",
    "url",
    "method",
)


def public_status(run: RunState) -> str:
    return run.status.value if run.status.final else "waiting"


def as_json(result: SimulationResult, flows: Sequence[Flow] = (), inputs: Sequence[Scheduled] = ()) -> dict[str, Any]:
    """The JSON document of a dry-run; with the flows and the events played it also names
    steps, marks parameters that rendered empty, and lists events that started nothing."""
    index = StepIndex.of(flows)
    by_run: dict[str, list[RecordedAction]] = {}
    for action in result.actions:
        by_run.setdefault(action.run_id, []).append(action)
    runs = []
    for run in result.runs:
        runs.append(
            {
                "flow": run.flow_id,
                "run_id": run.id,
                "trigger": {
                    "type": run.trigger.type,
                    "source": run.trigger.source,
                    "id": run.trigger.id,
                    "at": iso(run.started_at),
                },
                "status": public_status(run),
                "reason": _reason(run),
                "actions": [_action(a, result.start, index) for a in by_run.get(run.id, [])],
                "steps": [
                    {
                        "at": iso(t.at),
                        "offset_s": _offset(t.at, result.start),
                        "step": t.step,
                        "kind": t.kind,
                        "outcome": t.outcome,
                        **({"detail": plain(dict(t.detail))} if t.detail else {}),
                    }
                    for t in run.trace
                ],
                **({"wake_at": iso(run.wake_at)} if run.wake_at and not run.status.final else {}),
            }
        )
    out: dict[str, Any] = {"start": iso(result.start), "events": result.events_played, "runs": runs}
    if flows:
        out["unstarted"] = [
            {"at": iso(u.at), "offset_s": _offset(u.at, result.start), "type": u.type, "id": u.id, "why": u.why}
            for u in unstarted(flows, inputs, result.runs)
        ]
    return out


def _reason(run: RunState) -> str:
    if run.status is Status.SKIPPED:
        values = next((t.detail.get("values") for t in run.trace if t.kind == "skip" and t.detail), None)
        if values:
            seen = ", ".join(f"{k}={v!r}" for k, v in plain(values).items())
            return f"{run.reason}; it saw {seen}"
    return run.reason


def _action(action: RecordedAction, start: datetime, index: StepIndex) -> dict[str, Any]:
    step = index.steps.get((action.flow_id, action.step))
    empty = empty_params(step.params, action.params) if step is not None else []
    return {
        "at": iso(action.at),
        "offset_s": _offset(action.at, start),
        "step": action.step,
        **({"name": step.name} if step is not None and step.name else {}),
        "type": action.type,
        "params": plain(action.params),
        "result": plain(action.result),
        **({"empty": empty} if empty else {}),
        **({"skipped": action.skipped} if action.skipped else {}),
    }


def empty_params(compiled: Any, rendered: Any, path: str = "") -> list[str]:
    """Parameters whose template read something yet rendered empty (or null): `to`, `items[0].sku`."""
    if isinstance(compiled, Template):
        if compiled.is_static or not compiled.uses:
            return []
        return [path] if rendered is None or rendered == "" else []
    if isinstance(compiled, dict) and isinstance(rendered, dict):
        return [e for k, v in compiled.items() for e in empty_params(v, rendered.get(k), f"{path}.{k}".lstrip("."))]
    if isinstance(compiled, list) and isinstance(rendered, list):
        return [
            e
            for i, (c, r) in enumerate(zip(compiled, rendered, strict=False))
            for e in empty_params(c, r, f"{path}[{i}]")
        ]
    return []


def _offset(at: datetime, start: datetime) -> int:
    return int((at - start).total_seconds())


def _short(value: Any, limit: int = 70) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _human_offset(seconds: int) -> str:
    from datetime import timedelta

    from flowrun.durations import format_duration

    return "+" + format_duration(timedelta(seconds=seconds))


def render_text(
    result: SimulationResult, console: Any, flows: Sequence[Flow] = (), inputs: Sequence[Scheduled] = ()
) -> None:
    from rich.text import Text

    data = as_json(result, flows, inputs)
    if not data["runs"]:
        console.print(f"No flow was triggered by the {data['events']} event(s) played.")
        _render_unstarted(data, console)
        return
    colour = {"completed": "green", "converted": "cyan", "skipped": "yellow", "failed": "red", "waiting": "blue"}
    for run in data["runs"]:
        head = Text()
        head.append(f"{run['flow']}", style="bold")
        head.append(f"  ← {run['trigger']['type']} ({run['trigger']['source']})  ")
        head.append(run["status"], style=colour.get(run["status"], ""))
        if run["reason"]:
            head.append(f"  {run['reason']}", style="dim")
        console.print(head)
        for action in run["actions"]:
            params = action["params"]
            shown = ", ".join(f"{k}={_short(params[k])}" for k in SHOWN_PARAMS if k in params)
            if action["type"] in ("sms", "slack") and "text" in params:
                shown += f", text={_short(params['text'])}"
            if action.get("empty"):
                shown += f"  [rendered empty: {', '.join(action['empty'])}]"
            if action["result"]:
                shown += f"  → {_short(action['result'])}"
            console.print(f"  {_human_offset(action['offset_s']):>8}  {action['type']:<15} {shown}", markup=False)
        console.print()
    counts: dict[str, int] = {}
    for run in data["runs"]:
        counts[run["status"]] = counts.get(run["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    actions = sum(len(r["actions"]) for r in data["runs"])
    _render_unstarted(data, console)
    console.print(f"{len(data['runs'])} run(s): {summary}; {actions} action(s); nothing was sent.")


def _render_unstarted(data: dict[str, Any], console: Any) -> None:
    if not data.get("unstarted"):
        return
    console.print("Events that started nothing:")
    for item in data["unstarted"]:
        console.print(f"  {_human_offset(item['offset_s']):>8}  {item['type']}: {item['why']}", markup=False)
    console.print()
