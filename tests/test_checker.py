"""`flowrun validate` on the mistakes that used to pass: through the real CLI, exit code and output."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import ROOT


def flows_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "flows"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


SMS = """flow: sms-thanks
on: order.created
{guard}steps:
  - sms: {{to: "{to}", text: "Thanks for order {{{{ order.number | default('') }}}}"}}
"""


def test_a_nullable_field_reaching_a_parameter_warns_and_fails_with_strict(cli, tmp_path: Path) -> None:
    folder = flows_dir(tmp_path, {"f.yaml": SMS.format(guard="", to="{{ customer.phone }}")})
    result = cli("validate", str(folder))
    assert result.exit_code == 0, result.output
    assert (
        f"{folder / 'f.yaml'}:4:15: warning: `customer.phone` may be null (order.created events do not always "
        "carry it): `sms.to` would be empty [at steps[0].sms.to]"
    ) in result.output
    assert "fix: guard the step with `if: customer.phone`, or give a fallback" in result.output
    assert result.output.strip().endswith("1 flow(s) valid, 1 warning(s).")
    strict = cli("validate", str(folder), "--strict")
    assert strict.exit_code == 1
    assert f"{folder / 'f.yaml'}:4:15: `customer.phone` may be null" in strict.output
    annotations = cli("validate", str(folder), "--format", "github")
    assert annotations.output.startswith(f"::warning file={folder / 'f.yaml'},line=4,col=15,")


def test_a_guard_or_a_fallback_silences_the_null_warning(cli, tmp_path: Path) -> None:
    folder = flows_dir(
        tmp_path,
        {
            "entry.yaml": SMS.format(guard="if: customer.phone\n", to="{{ customer.phone }}"),
            "fallback.yaml": SMS.format(guard="", to="{{ customer.phone | default('+14155550100') }}").replace(
                "sms-thanks", "fallback"
            ),
            "inline.yaml": SMS.format(guard="", to="{% if customer.phone %}{{ customer.phone }}{% endif %}").replace(
                "sms-thanks", "inline"
            ),
            "step.yaml": """flow: step-guard
on: order.created
steps:
  - if: customer.phone and order.total_price > 10
    then:
      - sms: {to: "{{ customer.phone }}", text: "big order"}
""",
        },
    )
    result = cli("validate", str(folder), "--strict", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["warnings"] == []


def test_a_misspelt_trigger_is_one_error_not_a_cascade(cli, tmp_path: Path) -> None:
    folder = flows_dir(
        tmp_path,
        {
            "f.yaml": """flow: typo
on: order.craeted
if: order.total_price > 10 and customer.email
steps:
  - email: {to: "{{ customer.email }}", subject: "Order {{ order.number }}", text: "{{ customer.first_name }}"}
  - wait: {for: shipment.delivered, timeout: 3d, where: "order.id == trigger.order.id"}
"""
        },
    )
    result = cli("validate", str(folder), "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.output)["errors"] == [
        {
            "file": str(folder / "f.yaml"),
            "line": 2,
            "column": 5,
            "path": "on",
            "message": "unknown event type 'order.craeted' (did you mean 'order.created'?)",
        }
    ]


def test_template_file_errors_point_into_the_template_file(cli, tmp_path: Path) -> None:
    folder = flows_dir(
        tmp_path,
        {
            "f.yaml": """flow: file-errors
on: order.created
if: customer.email
steps:
  - email: {to: "{{ customer.email }}", subject: Hi, template: templates/a.html.j2}
  - email: {to: "{{ customer.email }}", subject: Hi, template: templates/b.html.j2}
""",
            "templates/a.html.j2": "<p>Hello</p>\n<p>{{ customer.first_name | titel }}</p>\n",
            "templates/b.html.j2": "<p>Hi</p>\n\n<p>Order {{ order.numbr }}</p>\n",
        },
    )
    result = cli("validate", str(folder), "--format", "github")
    assert result.exit_code == 1
    a, b = folder / "templates/a.html.j2", folder / "templates/b.html.j2"
    lines = result.output.splitlines()
    assert any(
        line.startswith(f"::error file={a},line=2,col=29,") and "unknown filter 'titel'" in line for line in lines
    )
    assert any(
        line.startswith(f"::error file={b},line=3,col=13,")
        and "field `order.numbr` does not exist in order.created events" in line
        and "did you mean `order.number`?" in line
        for line in lines
    ), result.output


def test_a_symlink_cannot_lead_a_template_out_of_the_flows_folder(cli, tmp_path: Path) -> None:
    secret = tmp_path / "outside.txt"
    secret.write_text("not for emails")
    folder = flows_dir(
        tmp_path,
        {
            "f.yaml": """flow: link
on: order.created
if: customer.email
steps:
  - email: {to: "{{ customer.email }}", subject: Hi, template: templates/note.txt}
"""
        },
    )
    (folder / "templates").mkdir()
    os.symlink(secret, folder / "templates/note.txt")
    result = cli("validate", str(folder))
    assert result.exit_code == 1
    assert f"{folder / 'f.yaml'}:5:64: template path 'templates/note.txt' leads outside the flows folder" in (
        result.output
    )


def test_a_billion_laughs_file_fails_at_once_with_a_clear_error(cli, tmp_path: Path) -> None:
    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        rows.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    text = "\n".join(rows) + "\n"
    assert len(text.encode()) < 450  # 9^9 (387 million) strings once expanded
    (tmp_path / "laughs.yaml").write_text(text)
    result = cli("validate", str(tmp_path / "laughs.yaml"))
    assert result.exit_code == 1
    assert "the document expands to more than 100,000 values (YAML aliases such as *x repeat" in result.output
    (tmp_path / "loop.yaml").write_text("flow: loop\non: order.created\nsteps: &s [*s]\n")
    result = cli("validate", str(tmp_path / "loop.yaml"))
    assert "a YAML alias refers to the value that contains it" in result.output


def test_event_raw_paths_are_noted_as_unchecked(cli, tmp_path: Path) -> None:
    folder = flows_dir(
        tmp_path,
        {
            "f.yaml": """flow: raw
on: order.created
if: event.raw.note_attributes[0].value == 'gift'
steps:
  - log: {message: "gift order {{ event.raw.name | default('') }}"}
"""
        },
    )
    result = cli("validate", str(folder))
    assert result.exit_code == 0, result.output
    assert (
        f"{folder / 'f.yaml'}:3:5: note: `event.raw.note_attributes` is not checked [at if]\n"
        "    fix: raw payload fields are not checked: a missing key reads as null"
    ) in result.output


def test_the_project_locale_is_checked_and_used(cli, tmp_path: Path) -> None:
    (tmp_path / "flowrun.yaml").write_text("locale: de_XX\n")
    result = cli("validate", str(tmp_path / "flowrun.yaml"))
    assert result.exit_code == 1
    assert f"{tmp_path / 'flowrun.yaml'}:1:9: unknown locale 'de_XX'" in result.output


def test_test_files_are_checked_against_their_schema(cli, tmp_path: Path) -> None:
    folder = flows_dir(
        tmp_path,
        {
            "f.yaml": "flow: hello\non: order.created\nsteps:\n  - log: {message: hi}\n",
            "f.test.yaml": """tests:
  - name: a typo must not pass
    timeline:
      - {at: 0s, event: {type: order.created, data: {customer: {email: a@example.com}}}}
    expected:
      - {flow: hello, status: completed}
  - name: unknown flow and step
    timeline: []
    stubs:
      - {step: fetch, result: {status: 200}}
    expect:
      - {flow: helo, status: completed}
""",
        },
    )
    result = cli("validate", str(folder))
    assert result.exit_code == 1
    test_file = folder / "f.test.yaml"
    assert f"{test_file}:5:5: unknown key 'expected' [at tests[0].expected]\n    fix: did you mean 'expect'?" in (
        result.output
    )
    assert "missing required key 'expect'" not in result.output  # one mistake, one error
    tested = cli("test", str(folder))
    assert tested.exit_code == 1
    assert f"{test_file}:5:5: unknown key 'expected'" in tested.output
    del_typo = test_file.read_text().replace("expected:", "expect:")
    test_file.write_text(del_typo)
    result = cli("validate", str(folder))
    assert f"{test_file}:10:16: no step is named 'fetch'" in result.output
    assert f"{test_file}:12:16: no flow 'helo' [at tests[1].expect[0].flow]\n    fix: did you mean 'hello'?" in (
        result.output
    )


def test_the_library_and_its_tests_validate(cli) -> None:
    result = cli("validate", "flows/", "examples/")
    assert result.exit_code == 0, result.output
    assert "test file(s)" in result.output and "1 timeline(s)" in result.output
    assert (ROOT / "schemas" / "flow-test.schema.json").is_file()
