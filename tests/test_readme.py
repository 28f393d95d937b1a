"""README "Your first flow": every snippet in it is a file the suite writes and every command
in it is run, in a fresh folder, through the real CLI.

Marks in the README, on the line before a fenced block:
`<!-- file: PATH -->` the block is that file; `<!-- run -->` (or `<!-- run, exit N -->`) each
`flowrun ...` line of the block must exit 0 (or N); `<!-- output -->` the block is exactly
what the command before it printed.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, Cli

SECTION = "## Your first flow"
BLOCK = re.compile(r"(?:<!-- (?P<mark>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.DOTALL)


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return text[start:end]


def test_every_snippet_of_your_first_flow_is_marked() -> None:
    blocks = list(BLOCK.finditer(_section()))
    assert len(blocks) >= 6
    unmarked = [b["body"][:60] for b in blocks if not b["mark"]]
    assert unmarked == [], "every snippet in 'Your first flow' needs a mark the suite checks"


def test_your_first_flow_works_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = Cli()
    last_output = None
    ran = 0
    for block in BLOCK.finditer(_section()):
        mark, body = block["mark"] or "", block["body"]
        if mark.startswith("file: "):
            path = tmp_path / mark.removeprefix("file: ")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        elif mark.startswith("run"):
            wanted = int(mark.split("exit ")[1]) if "exit " in mark else 0
            for line in body.splitlines():
                if line.startswith("flowrun "):
                    result = cli(*shlex.split(line)[1:])
                    assert result.exit_code == wanted, f"{line}\n{result.output}"
                    last_output = result.output
                    ran += 1
        elif mark == "output":
            assert last_output is not None
            assert last_output == body, f"README output block differs:\n{last_output}"
    assert ran >= 4


def test_the_flow_of_a_flow_validates_strictly(cli, tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    start = text.index("## A flow\n")
    snippet = BLOCK.search(text, start)
    assert snippet is not None and snippet["lang"] == "yaml"
    shutil.copytree(ROOT / "flows" / "templates", tmp_path / "templates")
    (tmp_path / "a-flow.yaml").write_text(snippet["body"])
    result = cli("validate", str(tmp_path), "--strict")
    assert result.exit_code == 0, result.output
