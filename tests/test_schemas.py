"""The published schemas are generated from the code and kept in step with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from flowrun.actions import REGISTRY
from flowrun.flow.schema import flow_schema
from flowrun.schemas import render_all
from flowrun.yamlsource import load_document
from tests.conftest import ROOT


def test_schema_files_match_the_code() -> None:
    expected = render_all()
    on_disk = {str(p.relative_to(ROOT / "schemas")): p.read_text() for p in (ROOT / "schemas").rglob("*.json")}
    assert sorted(on_disk) == sorted(expected), "run `flowrun schema --write schemas`"
    stale = [name for name, text in expected.items() if on_disk[name] != text]
    assert not stale, f"stale schema files (run `flowrun schema --write schemas`): {stale}"


def test_every_action_in_the_registry_has_a_step_definition() -> None:
    defs = flow_schema()["$defs"]
    refs = {r["$ref"].rsplit("/", 1)[-1] for r in defs["step"]["anyOf"]}
    for name in REGISTRY:
        assert f"step.{name}" in refs
        assert defs[f"step.{name}"]["required"] == [name]


def test_the_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(flow_schema())


@pytest.mark.parametrize(
    "path", sorted(p for p in (ROOT / "flows").glob("*.yaml") if ".test." not in p.name), ids=lambda p: p.stem
)
def test_library_flows_pass_the_published_schema_as_an_editor_sees_it(path: Path) -> None:
    schema = json.loads((ROOT / "schemas/flow.schema.json").read_text())
    data = load_document(path.read_text(), str(path)).data
    assert not list(Draft202012Validator(schema).iter_errors(data))
