"""Flows on message.* events: `validate` checks the fields they read, and `dry-run` plays a
provider's raw body (a SendGrid batch) through the same normalisation serve uses; the
project file's provider settings are checked where they are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowrun.config import load_config
from flowrun.errors import ConfigError
from tests.engagementkit import SendGridKeys, fixture_json

FLOW = """flow: thank-real-openers
on: message.opened
if: not message.machine_open and message.provider == "sendgrid"
steps:
  - log: {message: "opened {{ message.id }} ({{ customer.email }})"}
"""


def test_validate_knows_the_message_fields(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "ok.yaml").write_text(FLOW)
    assert cli("validate", str(tmp_path / "ok.yaml")).exit_code == 0
    (tmp_path / "typo.yaml").write_text(FLOW.replace("message.machine_open", "message.machin_open"))
    result = cli("validate", str(tmp_path / "typo.yaml"))
    assert result.exit_code == 1
    assert "typo.yaml:3:" in result.output and "machin_open" in result.output


def test_dry_run_plays_a_sendgrid_batch_one_event_at_a_time(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "flow.yaml").write_text(FLOW)
    opens = [
        {**fixture_json("sendgrid/webhooks/open.json")[0], "sg_event_id": "human", "sg_machine_open": False},
        {**fixture_json("sendgrid/webhooks/open.json")[0], "sg_event_id": "apple", "sg_machine_open": True},
        fixture_json("sendgrid/webhooks/delivered.json")[0],
    ]
    (tmp_path / "batch.json").write_text(json.dumps(opens))
    result = cli(
        "dry-run", str(tmp_path / "flow.yaml"), "--event", str(tmp_path / "batch.json"),
        "--source", "sendgrid", "--topic", "batch", "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    runs = report["runs"]
    statuses = sorted(r["status"] for r in runs)
    assert statuses == ["completed", "skipped"], report  # the machine open is skipped by the flow's `if`
    [completed] = [r for r in runs if r["status"] == "completed"]
    assert "14c5d75ce93.dfd.64b469" in json.dumps(completed)


def test_the_project_file_configures_the_providers_under_sources(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PM_USER", "u")
    monkeypatch.setenv("PM_PASSWORD", "p")
    file = tmp_path / "flowrun.yaml"
    good = (
        "sources:\n"
        "  postmark: {username: {env: PM_USER}, password: {env: PM_PASSWORD}}\n"
        f"  sendgrid: {{public_key: {SendGridKeys().public}, tolerance: 1d}}\n"
    )
    file.write_text(good)
    config = load_config(file)
    assert config.sources["postmark"]["password"].reveal() == "p" and "p" in config.secrets()
    file.write_text("sources:\n  sendgrid: {public_key: bm90IGEga2V5}\n")
    with pytest.raises(ConfigError) as bad_key:
        load_config(file)
    assert "flowrun.yaml:2:" in str(bad_key.value) and "SendGrid public key cannot be read" in str(bad_key.value)
    file.write_text("sources:\n  postmark: {username: {env: PM_USER}}\n")
    with pytest.raises(ConfigError, match="password"):
        load_config(file)
    file.write_text("sources:\n  mailgun: {signing_key: {env: PM_USER}, tolerance: soon}\n")
    with pytest.raises(ConfigError, match=r"flowrun\.yaml:2:53: 'soon' is not a duration"):
        load_config(file)
