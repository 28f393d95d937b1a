"""Commands for flow authors: validate, dry-run, test, events, schema, init."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flowrun.cli.base import (
    EXIT_OK,
    EXIT_PROBLEMS,
    OutputFormat,
    RunFormat,
    _config,
    _console,
    _existing,
    _guard,
    _problem_line,
    app,
)


@app.command()
def validate(
    paths: Annotated[list[Path] | None, typer.Argument(help="Flow files or folders (default: flows/).")] = None,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="text, json, or github annotations.")
    ] = OutputFormat.text,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings are errors (exit 1).")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Project file whose `locale` flows default to.")
    ] = None,
) -> None:
    """Check flows, their tests (*.test.yaml) and timelines against the schema and the semantic rules."""
    _guard(_validate, paths or [Path("flows")], output, strict, config)


def _validate(paths: list[Path], output: OutputFormat, strict: bool = False, config_path: Path | None = None) -> None:
    from flowrun.validating import validate_paths

    locale = _config(config_path).locale if config_path is not None else None
    report = validate_paths(_existing(paths), _config_files(paths), locale=locale)
    errors = [*report.problems, *(report.warnings if strict else [])]
    warnings = [] if strict else report.warnings
    if output is OutputFormat.json:
        from flowrun.jsonout import dumps

        print(
            dumps(
                {
                    "ok": not errors,
                    "files": report.files,
                    "errors": [p.as_dict() for p in errors],
                    "warnings": [p.as_dict() for p in warnings],
                    "notes": [p.as_dict() for p in report.notes],
                }
            )
        )
    elif output is OutputFormat.github:
        for level, found in (("error", errors), ("warning", warnings), ("notice", report.notes)):
            for p in found:
                message = (p.message + (f" — fix: {p.hint}" if p.hint else "")).replace("%", "%25").replace("\n", "%0A")
                print(f"::{level} file={p.file},line={p.line},col={p.column},title=flowrun validate::{message}")
    else:
        for p in errors:
            print(_problem_line(p))
        for p in warnings:
            print(_problem_line(p, "warning: "))
        for p in report.notes:
            print(_problem_line(p, "note: "))
        noun = "file" if report.files == 1 else "files"
        warned = f", {len(warnings)} warning(s)" if warnings else ""
        if errors:
            print(f"{report.files} {noun} checked, {len(errors)} problem(s){warned}.")
        else:
            print(f"{report.files} {noun} checked, {report.summary} valid{warned}.")
    raise typer.Exit(EXIT_PROBLEMS if errors or report.files == 0 else EXIT_OK)


def _config_files(paths: list[Path]) -> list[Path]:
    """Project files to check too: named ones, ones inside the folders, and ./flowrun.yaml."""
    from flowrun.flow.loader import CONFIG_NAMES

    found = [p for p in paths if p.name in CONFIG_NAMES]
    found += [p / n for p in paths if p.is_dir() for n in CONFIG_NAMES if (p / n).is_file()]
    found += [Path(n) for n in CONFIG_NAMES if Path(n).is_file()]
    return sorted(set(found))


# -- dry-run -----------------------------------------------------------------------------


@app.command("dry-run")
def dry_run(
    path: Annotated[Path, typer.Argument(help="A flow file or a folder of flows.")],
    event: Annotated[
        list[Path] | None, typer.Option("--event", "-e", help="Event file (JSON), played at the start.")
    ] = None,
    timeline: Annotated[Path | None, typer.Option(help="Timeline YAML: events at offsets.")] = None,
    source: Annotated[str | None, typer.Option(help="Raw store body: shopify or woocommerce.")] = None,
    topic: Annotated[str | None, typer.Option(help="Raw store body's topic, e.g. orders/create.")] = None,
    start: Annotated[str | None, typer.Option(help="Simulated start time (ISO 8601).")] = None,
    until: Annotated[
        str | None, typer.Option(help="Stop the clock here (offset like 3d, or ISO); runs left show `waiting`.")
    ] = None,
    output: Annotated[RunFormat, typer.Option("--format", help="text or json.")] = RunFormat.text,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Project file whose `derive:` settings to use, as serve does."),
    ] = None,
    report: Annotated[
        bool, typer.Option("--report", help="Print what `flowrun report` would show for what was played.")
    ] = False,
) -> None:
    """Play flows against sample events on a simulated clock. Nothing is sent."""
    _guard(_dry_run, path, event or [], timeline, source, topic, start, until, output, config, report)


def _dry_run(
    path: Path,
    events: list[Path],
    timeline: Path | None,
    source: str | None,
    topic: str | None,
    start_text: str | None,
    until_text: str | None,
    output: RunFormat,
    config_path: Path | None = None,
    report: bool = False,
) -> None:
    from flowrun.dryrun.session import play
    from flowrun.errors import UsageError

    if not events and timeline is None and until_text is None:
        raise UsageError("give at least one --event FILE or a --timeline FILE (a flow on a schedule alone: --until 7d)")
    if (source is None) != (topic is None) and source not in (None, "custom"):
        raise UsageError("--source shopify|woocommerce needs --topic (e.g. --topic orders/create)")
    derive = _derive(config_path)
    played = play([path], events, timeline, source, topic, start_text, until_text, derive)
    result = played.result
    failed = [r for r in result.runs if r.status.value == "failed"]
    if report:
        from flowrun.attribution.sources import from_memory

        assert result.messages is not None
        min_sample = derive.attribution.min_sample if derive else 100
        from flowrun.cli.results import ReportFormat, print_report

        print_report(from_memory(result.messages, min_sample=min_sample), ReportFormat(output.value))
    elif output is RunFormat.json:
        from flowrun.dryrun.report import as_json
        from flowrun.jsonout import dumps

        print(dumps(as_json(result, played.flows, played.inputs)))
    else:
        from flowrun.dryrun.report import render_text

        render_text(result, _console(), played.flows, played.inputs)
    for run in failed:
        print(f"error: run {run.id} of flow {run.flow_id} failed: {run.reason}", file=sys.stderr)
    raise typer.Exit(EXIT_PROBLEMS if failed else EXIT_OK)


# -- test --------------------------------------------------------------------------------


@app.command("test")
def test_flows(
    paths: Annotated[list[Path] | None, typer.Argument(help="Folders or *.test.yaml files (default: flows/).")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Project file whose locale, `derive:` and guardrails to use."),
    ] = None,
) -> None:
    """Run the tests that live next to flows (*.test.yaml)."""
    _guard(_test, paths or [Path("flows")], config)


def _derive(config_path: Path | None) -> Any:
    from flowrun.dryrun.session import Derive

    if config_path is None:
        return None
    return Derive.of(_config(config_path))


def _test(paths: list[Path], config_path: Path | None = None) -> None:
    from flowrun.testing import run_tests

    outcome = run_tests(_existing(paths), _derive(config_path))
    console = _console()
    for case in outcome.cases:
        mark = "[green]PASS[/]" if case.passed else "[red]FAIL[/]"
        console.print(f"{mark} {case.file}::{case.name}")
        for line in case.diff:
            console.print(f"    {line}", markup=False)
    console.print(f"{outcome.passed} passed, {outcome.failed} failed")
    raise typer.Exit(EXIT_PROBLEMS if outcome.failed or not outcome.cases else EXIT_OK)


# -- catalogue, schema, scaffolding ------------------------------------------------------


@app.command()
def events(name: Annotated[str | None, typer.Argument(help="One event type, e.g. order.created.")] = None) -> None:
    """List the canonical event types and their fields."""
    _guard(_events, name)


def _events(name: str | None) -> None:
    from flowrun.errors import UsageError
    from flowrun.events.catalogue import all_types, field_names, lookup_type

    types = all_types() if name is None else [t for t in [lookup_type(name)] if t is not None]
    if not types:
        raise UsageError(f"unknown event type {name!r}; run `flowrun events` for the list")
    for event_type in types:
        print(f"{event_type.name}: {event_type.description}")
        if name is not None:
            for field_name in field_names(event_type):
                print(f"    {field_name}")
        else:
            print(f"    {', '.join(event_type.parts)}")


@app.command()
def schema(
    write: Annotated[
        Path | None, typer.Option(help="Write flow.schema.json and events/*.json into this folder.")
    ] = None,
) -> None:
    """Print the flow JSON Schema (for editors), or write every schema to a folder."""
    _guard(_schema, write)


def _schema(write: Path | None) -> None:
    from flowrun.schemas import render_all

    files = render_all()
    if write is None:
        print(files["flow.schema.json"], end="")
        return
    for relative, text in files.items():
        target = write / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} schema files to {write}")


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the flows repository.")],
    source: Annotated[
        str | None,
        typer.Option(
            help="Where CI installs flowrun from, e.g. git+https://github.com/shop/flowrun@v0.1.0 "
            "(default: flowrun-store pinned to this version)."
        ),
    ] = None,
) -> None:
    """Scaffold a flows repository: a flow, its test, a sample event and a CI snippet."""
    _guard(_init, directory, source)


def _init(directory: Path, source: str | None) -> None:
    from flowrun.scaffold import scaffold

    for path in scaffold(directory, source):
        print(f"created {path}")
