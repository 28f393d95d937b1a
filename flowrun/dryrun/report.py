"""dry-run output: the JSON document and the readable timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flowrun.dryrun.simulator import RecordedAction, SimulationResult
from flowrun.engine.state import RunState, Status
from flowrun.jsonout import iso, plain

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


def as_json(result: SimulationResult) -> dict[str, Any]:
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
                "actions": [_action(a, result.start) for a in by_run.get(run.id, [])],
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
    return {"start": iso(result.start), "events": result.events_played, "runs": runs}


def _reason(run: RunState) -> str:
    if run.status is Status.SKIPPED:
        values = next((t.detail.get("values") for t in run.trace if t.kind == "skip" and t.detail), None)
        if values:
            seen = ", ".join(f"{k}={v!r}" for k, v in plain(values).items())
            return f"{run.reason}; it saw {seen}"
    return run.reason


def _action(action: RecordedAction, start: datetime) -> dict[str, Any]:
    return {
        "at": iso(action.at),
        "offset_s": _offset(action.at, start),
        "step": action.step,
        "type": action.type,
        "params": plain(action.params),
        "result": plain(action.result),
        **({"skipped": action.skipped} if action.skipped else {}),
    }


def _offset(at: datetime, start: datetime) -> int:
    return int((at - start).total_seconds())


def _short(value: Any, limit: int = 70) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _human_offset(seconds: int) -> str:
    from datetime import timedelta

    from flowrun.durations import format_duration

    return "+" + format_duration(timedelta(seconds=seconds))


def render_text(result: SimulationResult, console: Any) -> None:
    from rich.text import Text

    data = as_json(result)
    if not data["runs"]:
        console.print(f"No flow was triggered by the {data['events']} event(s) played.")
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
            if action["result"]:
                shown += f"  → {_short(action['result'])}"
            console.print(f"  {_human_offset(action['offset_s']):>8}  {action['type']:<15} {shown}")
        console.print()
    counts: dict[str, int] = {}
    for run in data["runs"]:
        counts[run["status"]] = counts.get(run["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    actions = sum(len(r["actions"]) for r in data["runs"])
    console.print(f"{len(data['runs'])} run(s): {summary}; {actions} action(s); nothing was sent.")
