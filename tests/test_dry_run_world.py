"""Dry-run and `flowrun test` standing in for the outside world: stubbed step results, typed
values, empty parameters, events that started nothing, schedules with a horizon, a reader
that leaves early. Through the real CLI (and one real HTTP peer)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from flowrun.actions import REGISTRY
from flowrun.actions.base import DeliveryContext, render_tree
from flowrun.serve.dispatcher.deliver import http_client
from tests.conftest import ROOT
from tests.fakestores import FakeStore
from tests.helpers import event, flow_from

IMAGE_FLOW = """flow: product-image
on: custom.product_saved
steps:
  - name: pick-preset
    http:
      url: "https://images.example/presets?type={{ properties.type | default('any') }}"
      method: GET
    as: preset
  - name: render
    http:
      url: https://images.example/render
      json:
        preset: "{{ preset.json.preset }}"
        width: "{{ preset.json.width * 2 }}"
        product: "{{ properties }}"
        label: "Product {{ properties.title | default('') }}"
  - log: {message: "rendered with {{ preset.json.preset }}"}
"""

ENVELOPE = {"type": "custom.product_saved", "id": "p1", "data": {"properties": {"type": "hat", "title": "Beanie"}}}


def _write(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_a_timeline_can_stub_a_steps_result_by_name(cli, tmp_path: Path) -> None:
    _write(tmp_path, {"flows/image.yaml": IMAGE_FLOW})
    timeline = tmp_path / "timeline.yaml"
    timeline.write_text(
        "events:\n"
        f"  - {{at: 0s, event: {json.dumps(ENVELOPE)}}}\n"
        "stubs:\n"
        "  - {step: pick-preset, result: {json: {preset: square, width: 400}}}\n"
    )
    result = cli("dry-run", str(tmp_path / "flows"), "--timeline", str(timeline), "--format", "json")
    assert result.exit_code == 0, result.output
    [run] = json.loads(result.stdout)["runs"]
    pick, render, log = run["actions"]
    assert (pick["name"], pick["result"]) == (
        "pick-preset",
        {"status": 200, "headers": {}, "json": {"preset": "square", "width": 400}, "text": ""},
    )
    # Typed values: a number stays a number, an object an object; mixed text stays text.
    assert render["params"]["json"] == {
        "preset": "square",
        "width": 800,
        "product": {"type": "hat", "title": "Beanie"},
        "label": "Product Beanie",
    }
    assert log["params"]["message"] == "rendered with square"


def test_without_a_stub_the_flow_reading_a_response_fails_and_says_where(cli, tmp_path: Path) -> None:
    _write(tmp_path, {"flows/image.yaml": IMAGE_FLOW, "e.json": json.dumps(ENVELOPE)})
    result = cli("dry-run", str(tmp_path / "flows"), "--event", str(tmp_path / "e.json"), "--format", "json")
    assert result.exit_code == 1
    assert "steps[1].http.json.preset: 'dict object' has no attribute 'preset'" in result.stderr


def test_a_stub_naming_no_step_is_an_error_with_the_names_there_are(cli, tmp_path: Path) -> None:
    _write(tmp_path, {"flows/image.yaml": IMAGE_FLOW})
    timeline = tmp_path / "timeline.yaml"
    timeline.write_text(
        f"events:\n  - {{at: 0s, event: {json.dumps(ENVELOPE)}}}\n"
        "stubs:\n  - {step: pick-presets, result: {jsn: {}}}\n"
    )
    result = cli("dry-run", str(tmp_path / "flows"), "--timeline", str(timeline))
    assert result.exit_code == 1
    assert f"{timeline}:4:12: no step is named 'pick-presets' [at stubs[0].step]" in result.output
    assert "fix: did you mean 'pick-preset'?" in result.output


def test_flowrun_test_stubs_and_expects_a_steps_params_and_result(cli, tmp_path: Path) -> None:
    case = f"""tests:
  - name: the preset service picks square
    timeline:
      - {{at: 0s, event: {json.dumps(ENVELOPE)}}}
    stubs:
      - {{step: pick-preset, result: {{json: {{preset: square, width: 400}}}}}}
      - {{action: http, result: {{status: 201}}}}
    expect:
      - flow: product-image
        status: completed
        actions:
          - {{step: pick-preset, result: {{status: 200, json: {{preset: square}}}}}}
          - {{step: render, params: {{json: {{width: 800, preset: square}}}}, result: {{status: 201}}}}
          - {{type: log, params: {{message: rendered with square}}}}
"""
    _write(tmp_path, {"image.yaml": IMAGE_FLOW, "image.test.yaml": case})
    result = cli("test", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("1 passed, 0 failed")
    (tmp_path / "image.test.yaml").write_text(case.replace("width: 800", "width: 801"))
    result = cli("test", str(tmp_path))
    assert result.exit_code == 1
    assert "params.json: expected {'width': 801, 'preset': 'square'}, got {'preset': 'square', 'width': 800" in (
        result.output
    )


def test_typed_values_reach_a_real_http_peer_as_json_objects_and_numbers(tmp_path: Path) -> None:
    class Peer(FakeStore):
        def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
            return 200, {"ok": True}, {}

    flow = flow_from(
        tmp_path,
        """flow: typed
on: order.created
steps:
  - http:
      url: "{{ event.raw.callback }}"
      json:
        order: "{{ event.raw }}"
        points: "{{ order.total_price * 10 }}"
        tags: "{{ customer.tags }}"
        vip: "{{ order.total_price > 100 }}"
        note: "Order {{ order.total_price }}"
""",
    )
    peer = Peer()
    try:
        step = flow.steps[0]
        order = event("order.created", order={"total_price": 150.5}, customer={"email": "a@x", "tags": ["vip"]})
        raw = {"id": 7, "callback": f"{peer.url}/hook", "line_items": [{"sku": "B-1"}]}
        context = {**order.context(), "event": {**order.context()["event"], "raw": raw}}
        params = step.action.finish_params(render_tree(step.params, context), context)

        async def go() -> dict[str, Any]:
            http = http_client(2)
            try:
                allowed = {"allow_hosts": ["127.0.0.1"]}
                return await REGISTRY["http"].deliver(
                    params, "r/steps[0]", DeliveryContext(http, allowed, logging.getLogger("t"), 5)
                )
            finally:
                await http.aclose()

        answer = asyncio.run(go())
    finally:
        peer.close()
    assert answer["json"] == {"ok": True}
    [request] = peer.requests
    assert json.loads(request["body"]) == {
        "order": {"id": 7, "callback": f"{peer.url}/hook", "line_items": [{"sku": "B-1"}]},
        "points": 1505,
        "tags": ["vip"],
        "vip": True,
        "note": "Order 150.5",
    }


def test_parameters_that_rendered_empty_are_marked(cli, tmp_path: Path) -> None:
    flow = tmp_path / "f.yaml"
    flow.write_text(
        "flow: sms\non: order.created\nsteps:\n"
        "  - sms: {to: '{{ customer.phone }}', text: 'Order {{ order.number }}'}\n"
    )
    envelope = tmp_path / "e.json"
    envelope.write_text(json.dumps({"type": "order.created", "data": {"customer": {"email": "a@x"}, "order": {}}}))
    result = cli("dry-run", str(flow), "--event", str(envelope), "--format", "json")
    [run] = json.loads(result.stdout)["runs"]
    assert run["actions"][0]["empty"] == ["to"]
    text = cli("dry-run", str(flow), "--event", str(envelope))
    assert "[rendered empty: to]" in text.output


def test_events_that_started_nothing_are_listed_with_why(cli, tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "flows/notify.yaml": "flow: notify\non: custom.notify_me\nsteps:\n  - log: {message: hi}\n",
            "flows/paid.yaml": (
                "flow: paid\non: {event: order.paid, source: woocommerce}\nsteps:\n  - log: {message: x}\n"
            ),
        },
    )
    timeline = tmp_path / "t.yaml"
    timeline.write_text(
        "- {at: 0s, event: {type: custom.notify_mee, id: n1, data: {customer: {email: a@x}}}}\n"
        "- {at: 1h, event: {type: order.paid, source: shopify, id: o1, data: {customer: {email: a@x}}}}\n"
        "- {at: 2h, event: {type: custom.notify_me, id: n2, data: {customer: {email: a@x}}}}\n"
    )
    result = cli("dry-run", str(tmp_path / "flows"), "--timeline", str(timeline), "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["flow"] for r in data["runs"]] == ["notify"]
    assert data["unstarted"] == [
        {
            "at": "2026-01-05T09:00:00Z",
            "offset_s": 0,
            "type": "custom.notify_mee",
            "id": "custom:n1",
            "why": "no flow starts on custom.notify_mee (did you mean 'custom.notify_me'? a flow starts on that)",
        },
        {
            "at": "2026-01-05T10:00:00Z",
            "offset_s": 3600,
            "type": "order.paid",
            "id": "o1",
            "why": "flows on order.paid (paid) take only events from woocommerce, and this one is from shopify",
        },
    ]
    text = cli("dry-run", str(tmp_path / "flows"), "--timeline", str(timeline))
    assert (
        "Events that started nothing:\n       +0s  custom.notify_mee: no flow starts on custom.notify_mee"
        in text.output
    )


def test_a_scheduled_flow_dry_runs_with_a_horizon_and_no_events(cli, tmp_path: Path) -> None:
    flow = tmp_path / "digest.yaml"
    flow.write_text(
        "flow: digest\non: {schedule: '0 8 * * 1-5', timezone: Europe/Berlin}\nsteps:\n  - log: {message: morning}\n"
    )
    result = cli("dry-run", str(flow), "--until", "7d", "--format", "json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    assert [r["trigger"]["at"][:10] for r in runs] == [
        "2026-01-06",
        "2026-01-07",
        "2026-01-08",
        "2026-01-09",
        "2026-01-12",
    ]
    missing = cli("dry-run", str(flow))
    assert missing.exit_code == 2
    assert "a flow on a schedule alone: --until 7d" in missing.output


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    flowrun = Path(sys.executable).parent / "flowrun"
    for fmt in ("text", "json"):
        shell = (
            f"'{flowrun}' dry-run flows/ --timeline examples/timelines/abandoned-then-order.yaml --until 120d "
            f"--format {fmt} | head -1 >/dev/null; echo $? ${{PIPESTATUS[0]}}"
        )
        done = subprocess.run(
            ["bash", "-c", shell], cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ}
        )
        assert done.stderr == "", done.stderr
        assert done.stdout.split() == ["0", "141"]


def test_money_follows_the_project_locale_and_a_flows_own(cli, tmp_path: Path) -> None:
    message = 'steps:\n  - log: {message: "{{ order.total_price | money(order.currency) }}"}\n'
    _write(
        tmp_path,
        {
            "flows/project.yaml": "flow: project\non: order.created\n" + message,
            "flows/own.yaml": "flow: own\nlocale: en_US\non: order.created\n" + message,
            "flowrun.yaml": "locale: de_DE\n",
            "e.json": json.dumps(
                {
                    "type": "order.created",
                    "data": {"customer": {"email": "a@x"}, "order": {"total_price": "1234.5", "currency": "EUR"}},
                }
            ),
            "flows/f.test.yaml": """tests:
  - name: amounts as the shop writes them
    timeline: [{at: 0s, event: ../e.json}]
    expect:
      - {flow: project, actions: [{params: {message: "1.234,50\u00a0€"}}]}
      - {flow: own, actions: [{params: {message: "€1,234.50"}}]}
""",
        },
    )

    def messages(*extra: str) -> dict[str, str]:
        result = cli(
            "dry-run", str(tmp_path / "flows"), "--event", str(tmp_path / "e.json"), "--format", "json", *extra
        )
        assert result.exit_code == 0, result.output
        return {r["flow"]: r["actions"][0]["params"]["message"] for r in json.loads(result.stdout)["runs"]}

    assert messages() == {"project": "€1,234.50", "own": "€1,234.50"}
    assert messages("-c", str(tmp_path / "flowrun.yaml")) == {"project": "1.234,50\xa0€", "own": "€1,234.50"}
    assert cli("test", str(tmp_path / "flows"), "-c", str(tmp_path / "flowrun.yaml")).exit_code == 0
    assert cli("test", str(tmp_path / "flows")).exit_code == 1
