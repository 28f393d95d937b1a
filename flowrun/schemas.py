"""Every published schema as text: flow.schema.json, flow-test.schema.json, config.schema.json
and events/<type>.json."""

from __future__ import annotations

import json

from flowrun.events.catalogue import all_types
from flowrun.flow.schema import flow_schema


def _text(schema: object) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    from flowrun.config_schema import config_schema
    from flowrun.testfile import test_file_schema

    files = {
        "flow.schema.json": _text(flow_schema()),
        "flow-test.schema.json": _text(test_file_schema()),
        "config.schema.json": _text(config_schema()),
    }
    for event_type in all_types():
        files[f"events/{event_type.name}.json"] = _text(event_type.data_schema())
    return files
