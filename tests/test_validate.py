"""`flowrun validate`: every broken flow names its file, line, column and a fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

BROKEN = sorted((ROOT / "tests" / "broken").glob("*.yaml"))


def _expectation(path: Path) -> tuple[int, int, str]:
    match = re.match(r"# expect: (\d+):(\d+) (.*)", path.read_text().splitlines()[0])
    assert match, f"{path} has no '# expect: LINE:COL message' header"
    return int(match[1]), int(match[2]), match[3]


def test_the_library_is_valid(cli) -> None:
    result = cli("validate", "flows/")
    assert result.exit_code == 0, result.output
    assert re.search(r"\d+ files checked, \d+ flow\(s\) and \d+ test file\(s\) valid", result.output)


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_flow_reports_line_column_and_message(cli, path: Path) -> None:
    line, column, message = _expectation(path)
    relative = path.relative_to(ROOT)
    result = cli("validate", str(relative))
    assert result.exit_code == 1
    wanted = f"{relative}:{line}:{column}: "
    text = result.output.replace("\n    fix: ", " || ")
    lines = [ln for ln in text.splitlines() if ln.startswith(wanted)]
    assert lines, f"no problem reported at {wanted}\n{result.output}"
    head, _, fix = message.partition(" || ")
    assert any(head in ln for ln in lines), result.output
    if fix:
        assert any(ln.split(" || ", 1)[-1].startswith(fix) for ln in lines), result.output
    assert "Traceback" not in result.output


def test_duplicate_flow_ids_across_files(cli) -> None:
    result = cli("validate", "tests/broken/dup")
    assert result.exit_code == 1
    assert "tests/broken/dup/b.yaml:2:7: duplicate flow id 'same-id'" in result.output
    assert "already used by tests/broken/dup/a.yaml" in result.output


def test_json_output_shape(cli) -> None:
    result = cli("validate", "tests/broken/unknown-event.yaml", "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["ok"] is False and data["files"] == 1
    assert data["errors"] == [
        {
            "file": "tests/broken/unknown-event.yaml",
            "line": 3,
            "column": 5,
            "path": "on",
            "message": "unknown event type 'order.craeted' (did you mean 'order.created'?)",
        }
    ]


def test_json_output_when_valid(cli) -> None:
    result = cli("validate", "flows/order-confirmation.yaml", "--format", "json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert (data["ok"], data["files"], data["errors"]) == (True, 1, [])
    assert isinstance(data["warnings"], list) and isinstance(data["notes"], list)


def test_github_annotations(cli) -> None:
    result = cli("validate", "tests/broken/bad-timezone.yaml", "--format", "github")
    assert result.exit_code == 1
    assert result.output.startswith(
        "::error file=tests/broken/bad-timezone.yaml,line=4,col=11,title=flowrun validate::"
        "unknown time zone 'Europe/Berln' — fix: did you mean 'Europe/Berlin'?"
    )


def test_usage_errors_exit_2(cli) -> None:
    assert cli("validate", "no/such/folder").exit_code == 2
    assert cli("validate", "--format", "xml").exit_code == 2


def test_empty_folder_is_a_problem(cli, tmp_path: Path) -> None:
    result = cli("validate", str(tmp_path))
    assert result.exit_code == 1
    assert "0 files checked" in result.output


def test_the_project_file_is_validated_too(cli, tmp_path: Path) -> None:
    (tmp_path / "flowrun.yaml").write_text("database: sqlite:///x.db\nlisten: {host: 127.0.0.1, prot: 8787}\n")
    result = cli("validate", str(tmp_path))
    assert result.exit_code == 1
    assert f"{tmp_path / 'flowrun.yaml'}:2:27: unknown key 'prot'" in result.output
    assert "did you mean 'port'?" in result.output


def test_the_example_project_file_is_valid(cli) -> None:
    result = cli("validate", "examples/flowrun.yaml", "flows/")
    assert result.exit_code == 0, result.output


def test_timelines_are_checked_as_timelines_not_reported_as_broken_flows(cli, tmp_path: Path) -> None:
    result = cli("validate", "examples/")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("0 flow(s) and 1 timeline(s) valid.")
    (tmp_path / "t.yaml").write_text("- at: 0s\n  event: missing.json\n- at: soon\n  event: missing.json\n")
    result = cli("validate", str(tmp_path))
    assert result.exit_code == 1
    assert f"{tmp_path / 'missing.json'}:1:1: cannot read event file" in result.output


def test_serve_check_names_the_channel_a_flow_needs_and_fails(cli, tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows/f.yaml").write_text(
        "flow: hello\non: order.created\nsteps:\n  - sms: {to: '{{ customer.phone }}', text: hi}\n"
    )
    (tmp_path / "flowrun.yaml").write_text(f"database: sqlite:///{tmp_path / 's.db'}\nflows: flows\n")
    result = cli("serve", "--check", "-c", str(tmp_path / "flowrun.yaml"))
    assert result.exit_code == 1, result.output
    assert "error: flows use `sms` but channels.sms (Twilio account_sid, auth_token, from) is not configured" in (
        result.output
    )
