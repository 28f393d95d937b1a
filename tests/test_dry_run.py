"""`flowrun dry-run` and `flowrun test` through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT

EXAMPLES = ROOT / "examples" / "events"


def _runs(output: str) -> list[dict]:
    return json.loads(output)["runs"]


def test_abandoned_checkout_then_order_converts_without_second_reminder(cli, tmp_path: Path) -> None:
    timeline = tmp_path / "timeline.yaml"
    timeline.write_text(
        f"- {{at: 0s, event: {EXAMPLES / 'canonical/checkout.abandoned.json'}}}\n"
        f"- {{at: 3h, event: {EXAMPLES / 'shopify/orders/create.json'}, source: shopify, topic: orders/create}}\n"
    )
    result = cli("dry-run", "flows/", "--timeline", str(timeline), "--format", "json")
    assert result.exit_code == 0, result.output
    [run] = [r for r in _runs(result.stdout) if r["flow"] == "abandoned-checkout"]
    assert run["status"] == "converted"
    assert run["reason"] == "goal reached: order.created"
    assert [(a["offset_s"], a["type"]) for a in run["actions"]] == [(0, "email")]
    assert run["actions"][0]["params"]["subject"] == "You left something behind, Ada"
    assert run["actions"][0]["params"]["to"] == "ada@example.com"


def test_the_shipped_timeline_derives_abandonment_from_a_raw_checkout(cli) -> None:
    result = cli("dry-run", "flows/", "--timeline", "examples/timelines/abandoned-then-order.yaml", "--format", "json")
    assert result.exit_code == 0, result.output
    [run] = [r for r in _runs(result.stdout) if r["flow"] == "abandoned-checkout"]
    assert run["trigger"]["type"] == "checkout.abandoned"
    assert run["trigger"]["at"] == "2026-01-05T10:00:00Z"  # one idle hour after the checkout
    assert (run["status"], len(run["actions"])) == ("converted", 1)


def _example_invocations() -> list[tuple[str, list[str]]]:
    cases = []
    for path in sorted(EXAMPLES.rglob("*.json")):
        relative = path.relative_to(EXAMPLES)
        store = relative.parts[0]
        if store == "shopify":
            args = ["--source", "shopify", "--topic", "/".join(relative.with_suffix("").parts[1:])]
        elif store == "woocommerce":
            args = ["--source", "woocommerce", "--topic", relative.stem]
        else:
            args = []
        cases.append((str(relative), ["--event", str(path), *args]))
    return cases


@pytest.mark.parametrize(("name", "args"), _example_invocations(), ids=[c[0] for c in _example_invocations()])
def test_every_example_event_plays_through_the_library(cli, name: str, args: list[str]) -> None:
    result = cli("dry-run", "flows/", *args, "--format", "json")
    assert result.exit_code == 0, f"{name}: {result.output}"
    runs = _runs(result.stdout)
    assert all(r["status"] in ("completed", "converted", "skipped") for r in runs), runs


def test_examples_cover_every_documented_topic() -> None:
    from flowrun.events.normalise import known_topics

    shopify = {str(p.relative_to(EXAMPLES / "shopify").with_suffix("")) for p in (EXAMPLES / "shopify").rglob("*.json")}
    woo = {p.stem for p in (EXAMPLES / "woocommerce").glob("*.json")}
    assert set(known_topics()["shopify"]) - {"orders/updated"} <= shopify
    assert set(known_topics()["woocommerce"]) - {"customer.updated"} <= woo


def test_output_is_deterministic(cli) -> None:
    args = ["dry-run", "flows/", "--timeline", "examples/timelines/abandoned-then-order.yaml", "--format", "json"]
    assert cli(*args).stdout == cli(*args).stdout


def test_text_output_is_a_readable_timeline(cli) -> None:
    result = cli("dry-run", "flows/", "--event", "examples/events/canonical/checkout.abandoned.json")
    assert result.exit_code == 0
    assert "abandoned-checkout" in result.output and "completed" in result.output
    assert "+23h  discount" in result.output
    assert "nothing was sent" in result.output


def test_until_leaves_runs_waiting(cli) -> None:
    result = cli(
        "dry-run",
        "flows/",
        "--event",
        "examples/events/canonical/checkout.abandoned.json",
        "--until",
        "2h",
        "--format",
        "json",
    )
    [run] = [r for r in _runs(result.stdout) if r["flow"] == "abandoned-checkout"]
    assert run["status"] == "waiting"
    assert run["wake_at"] == "2026-01-06T08:00:00Z"


def test_skipped_run_shows_the_values_the_condition_saw(cli, tmp_path: Path) -> None:
    event = tmp_path / "small.json"
    event.write_text(
        json.dumps(
            {
                "type": "checkout.abandoned",
                "data": {"customer": {"email": "a@example.com"}, "checkout": {"total_price": 12.5}},
            }
        )
    )
    result = cli("dry-run", "flows/abandoned-checkout.yaml", "--event", str(event), "--format", "json")
    [run] = _runs(result.stdout)
    assert run["status"] == "skipped"
    assert run["reason"] == (
        "entry condition `checkout.total_price >= 20 and customer.email` was false; "
        "it saw checkout.total_price=12.5, customer.email='a@example.com'"
    )


def test_event_file_that_is_not_json(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "order.created",\n  "data": }')
    result = cli("dry-run", "flows/", "--event", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:2:11: not JSON: Expecting value" in result.output
    assert "Traceback" not in result.output


def test_unknown_topic(cli) -> None:
    result = cli(
        "dry-run",
        "flows/",
        "--event",
        "examples/events/shopify/orders/create.json",
        "--source",
        "shopify",
        "--topic",
        "orders/explode",
    )
    assert result.exit_code == 1
    assert "unknown shopify topic 'orders/explode'; flowrun normalises: checkouts/create" in result.output


def test_unknown_event_type_in_envelope(cli, tmp_path: Path) -> None:
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"type": "order.exploded", "data": {}}))
    result = cli("dry-run", "flows/", "--event", str(event))
    assert result.exit_code == 1
    assert "unknown event type 'order.exploded'" in result.output


def test_missing_field_at_run_time_fails_the_run_with_its_place(cli, tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("flow: t\non: custom.ping\nsteps:\n  - log: {message: '{{ properties.who }}'}\n")
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"type": "custom.ping", "data": {"properties": {}}}))
    result = cli("dry-run", str(flow), "--event", str(event), "--format", "json")
    assert result.exit_code == 1
    assert f"{flow}:steps[0].log.message: 'dict object' has no attribute 'who'" in result.stderr
    assert "Traceback" not in result.output


def test_dry_run_needs_events(cli) -> None:
    result = cli("dry-run", "flows/")
    assert result.exit_code == 2
    assert "give at least one --event FILE or a --timeline FILE" in result.output


def test_flowrun_test_passes_on_the_library(cli) -> None:
    result = cli("test", "flows/")
    assert result.exit_code == 0, result.output
    passed = int(result.output.strip().splitlines()[-1].split()[0])
    assert passed >= len(list((ROOT / "flows").glob("*.test.yaml")))
    assert result.output.strip().endswith(" passed, 0 failed")


def test_every_library_flow_has_a_test() -> None:
    flows = {p.stem for p in (ROOT / "flows").glob("*.yaml") if not p.name.endswith(".test.yaml")}
    tests = {p.name.removesuffix(".test.yaml") for p in (ROOT / "flows").glob("*.test.yaml")}
    assert flows - tests == set()


def test_a_wrong_expectation_fails_with_a_diff(cli, tmp_path: Path) -> None:
    for item in (ROOT / "flows").iterdir():
        if item.suffix in (".yaml",) and not item.name.endswith(".test.yaml"):
            (tmp_path / item.name).write_text(item.read_text())
    shutil.copytree(ROOT / "flows" / "templates", tmp_path / "templates")
    (tmp_path / "wrong.test.yaml").write_text(f"""
tests:
  - name: wrong subject and timing
    timeline:
      - {{at: 0s, event: {EXAMPLES / "canonical/checkout.abandoned.json"}}}
    expect:
      - flow: abandoned-checkout
        status: converted
        actions:
          - {{at: 2h, type: email, params: {{subject: Hello}}}}
""")
    result = cli("test", str(tmp_path))
    assert result.exit_code == 1
    lines = [ln.rstrip() for ln in result.output.splitlines()]
    assert "FAIL " + str(tmp_path / "wrong.test.yaml") + "::wrong subject and timing" in lines
    assert "      abandoned-checkout: status" in lines
    assert "    -   converted" in lines
    assert "    +   completed" in lines
    assert "        at: expected +2h, got +0s" in lines
    assert "        params.subject: expected 'Hello', got 'You left something behind, Ada'" in lines
    assert "    + abandoned-checkout action 2: discount at +23h  (not expected)" in lines
    assert lines[-1] == "0 passed, 1 failed"


def test_events_and_schema_commands(cli) -> None:
    result = cli("events", "order.created")
    assert result.exit_code == 0
    assert "order.total_price" in result.output and "order.line_items[].sku" in result.output
    schema = json.loads(cli("schema").stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert cli("events", "order.nope").exit_code == 2


def test_init_scaffolds_a_repository_that_validates_and_tests(cli, tmp_path: Path, monkeypatch) -> None:
    result = cli("init", str(tmp_path / "shop"))
    assert result.exit_code == 0
    assert (tmp_path / "shop/.github/workflows/flows.yml").read_text().count("flowrun validate flows/") == 1
    monkeypatch.chdir(tmp_path / "shop")
    assert cli("validate").exit_code == 0
    tested = cli("test")
    assert tested.exit_code == 0, tested.output
    assert "2 passed, 0 failed" in tested.output
    assert cli("init", str(tmp_path / "shop")).exit_code == 2


def test_customer_inactive_is_derived_up_to_the_horizon_with_the_projects_thresholds(cli, tmp_path: Path) -> None:
    timeline = tmp_path / "timeline.yaml"
    timeline.write_text(
        f"- {{at: 0s, event: {EXAMPLES / 'shopify/orders/create.json'}, source: shopify, topic: orders/create}}\n"
    )
    project = tmp_path / "flowrun.yaml"
    project.write_text("derive: {inactive_after: [30d, 90d]}\n")

    def quiet_runs(*extra: str) -> list[tuple[str, str, int]]:
        result = cli("dry-run", "flows/", "--timeline", str(timeline), "--format", "json", *extra)
        assert result.exit_code == 0, result.output
        return [
            (r["flow"], r["status"], r["steps"][0]["offset_s"] // 86400)
            for r in _runs(result.stdout)
            if r["trigger"]["type"] == "customer.inactive"
        ]

    assert quiet_runs() == []  # no horizon: nothing is derived past the last event
    found = quiet_runs("--until", "100d", "--config", str(project))
    assert ("re-engagement", "completed", 30) in found
    assert ("win-back", "completed", 90) in found
    assert not [f for f in found if f[2] == 60]  # 60 days is not one of this project's thresholds
