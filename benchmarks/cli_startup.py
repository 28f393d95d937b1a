"""`flowrun --help` from a cold start. Target (issue 2): under 0.3 s.
Baseline in the same run: `python -c pass` with the same interpreter."""

from __future__ import annotations

from common import ROOT, command_median, report


def main() -> None:
    python = str(ROOT / ".venv/bin/python")
    help_s = command_median([str(ROOT / ".venv/bin/flowrun"), "--help"])
    bare_s = command_median([python, "-c", "pass"])
    heavy_s = command_median([python, "-c", "import typer, rich.console, jinja2, jsonschema, yaml, httpx"])
    report("flowrun --help, median of 15", help_s, "s", "target < 0.3 s")
    report("baseline: python -c pass", bare_s, "s")
    report("reference: importing typer+rich+jinja2+jsonschema+yaml+httpx", heavy_s, "s")
    report("ratio --help / bare interpreter", help_s / bare_s, "x")


if __name__ == "__main__":
    main()
