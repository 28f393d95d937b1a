"""validate speed: 1,000 flow files (copies of the library with fresh ids).

Target (issue 2): under 2 seconds. Measured two ways: in-process `load_flows`, and the
whole `flowrun validate` command from a cold start. Baseline in the same run: parsing
the same files with PyYAML's C loader alone.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, best_of, report

from flowrun.flow.loader import load_flows

COUNT = 1000


def make_tree(folder: Path) -> None:
    sources = [p for p in sorted((ROOT / "flows").glob("*.yaml")) if ".test." not in p.name]
    shutil.copytree(ROOT / "flows" / "templates", folder / "templates")
    for i in range(COUNT):
        source = sources[i % len(sources)]
        text = source.read_text().replace(f"flow: {source.stem}", f"flow: {source.stem}-{i}", 1)
        (folder / f"{source.stem}-{i}.yaml").write_text(text)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_tree(folder)
        files = sorted(folder.glob("*.yaml"))

        def validate() -> None:
            result = load_flows([folder])
            assert not result.problems and len(result.flows) == COUNT, result.problems[:3]

        def parse_only() -> None:
            for f in files:
                yaml.load(f.read_text(), Loader=yaml.CSafeLoader)

        in_process = best_of(validate)
        baseline = best_of(parse_only)
        start = time.perf_counter()
        subprocess.run([str(ROOT / ".venv/bin/flowrun"), "validate", str(folder)], check=True, capture_output=True)
        command = time.perf_counter() - start
    report(f"validate {COUNT} files in-process", in_process, "s", "target < 2 s")
    report(f"`flowrun validate` {COUNT} files, whole command, cold", command, "s", "target < 2 s")
    report("baseline: YAML parsing alone", baseline, "s")
    report("ratio validate / parse-only", in_process / baseline, "x")


if __name__ == "__main__":
    main()
