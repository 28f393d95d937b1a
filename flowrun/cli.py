"""The command line. Errors are formatted here and nowhere else; imports are lazy so
`flowrun --help` starts fast."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from flowrun.errors import Problem

app = typer.Typer(
    name="flowrun",
    help="Store automation flows as YAML in git: validate them, dry-run them, serve them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: importing rich for it costs ~0.1 s of cold start
)
STATE: dict[str, bool] = {"debug": False}
EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: what `yes | head` reports, so `set -o pipefail` sees the same


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    github = "github"


class RunFormat(StrEnum):
    text = "text"
    json = "json"


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for unexpected errors.")] = False,
) -> None:
    STATE["debug"] = debug


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich would exit 1 itself: leave it to _guard, as for print()
            raise BrokenPipeError

    return _Console(stderr=stderr, highlight=False, soft_wrap=True)


def _problem_line(p: Problem, level: str = "") -> str:
    from flowrun.errors import format_path

    hint = f"\n    fix: {p.hint}" if p.hint else ""
    return f"{p.file}:{p.line}:{p.column}: {level}{p.message} [at {format_path(p.path)}]{hint}"


def _fail(error: BaseException) -> NoReturn:
    from flowrun.errors import SourceError, UsageError

    if isinstance(error, SourceError):
        for problem in error.problems:
            print(_problem_line(problem), file=sys.stderr)
        raise typer.Exit(EXIT_PROBLEMS)
    print(f"error: {error}", file=sys.stderr)
    raise typer.Exit(EXIT_USAGE if isinstance(error, UsageError) else EXIT_PROBLEMS)


def _guard(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from flowrun.errors import FlowrunError

    try:
        try:
            return fn(*args, **kwargs)
        finally:
            sys.stdout.flush()  # a reader that left shows here, not in click's own handler
    except FlowrunError as exc:
        _fail(exc)
    except BrokenPipeError:
        _reader_left()
    except typer.Exit:
        raise
    except Exception as exc:  # the last line of defence: no traceback unless asked
        if STATE["debug"]:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        raise typer.Exit(EXIT_PROBLEMS) from None


def _reader_left() -> NoReturn:
    """The reader of our output went away (`flowrun dry-run ... | head`): stop quietly.

    Later writes, and the interpreter's last flush, go to /dev/null instead of raising again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(EXIT_PIPE_CLOSED)


def _existing(paths: list[Path]) -> list[Path]:
    from flowrun.errors import UsageError

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    return paths


# -- validate ----------------------------------------------------------------------------


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
        _print_report(from_memory(result.messages, min_sample=min_sample), ReportFormat(output.value))
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


# -- serve and inspection -------------------------------------------------------------

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Project file (default: ./flowrun.yaml if present).")
]


def _config(path: Path | None, *, secrets: bool = False) -> Any:
    from flowrun.config import load_config

    if path is None and Path("flowrun.yaml").is_file():
        path = Path("flowrun.yaml")
    return load_config(_existing([path])[0] if path is not None else None, secrets=secrets)


@app.command()
def serve(
    config: ConfigOption = None,
    check: Annotated[
        bool, typer.Option("--check", help="Validate config and flows, reach the database, exit.")
    ] = False,
    port: Annotated[
        int | None, typer.Option("--port", help="Listen on this port instead of the project file's (one per instance).")
    ] = None,
) -> None:
    """Run the service: webhooks, pollers, durable runs, timers, actions."""
    _guard(_serve, config, check, port)


def _serve(config_path: Path | None, check: bool, port: int | None = None) -> None:
    from dataclasses import replace

    from flowrun.serve.check import check as check_service
    from flowrun.serve.supervisor import serve as run_service

    config = _config(config_path, secrets=True)
    if port is not None:
        config = replace(config, port=port)
    if check:
        notes = check_service(config)
        for line in notes:
            print(line)
        raise typer.Exit(EXIT_PROBLEMS if any(n.startswith("error:") for n in notes) else EXIT_OK)
    from flowrun.segments.loader import segments_for

    segments_for([config.flows])  # a broken segment file stops serve here, with its place, not in the engine
    raise typer.Exit(run_service(config))


@app.command()
def runs(
    config: ConfigOption = None,
    flow: Annotated[str | None, typer.Option(help="Only this flow.")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status (waiting, completed, ...).")] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer (email, or key).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
) -> None:
    """List runs, newest first."""
    _guard(_runs, config, flow, status, customer, limit)


def _runs(config_path: Path | None, flow: str | None, status: str | None, customer: str | None, limit: int) -> None:
    from flowrun.inspect import list_runs

    for line in list_runs(_config(config_path), flow, status, customer, limit):
        print(line)


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="A run id from `flowrun runs`.")], config: ConfigOption = None
) -> None:
    """Every step of one run: times, rendered inputs, results, errors, why a condition was false."""
    _guard(_show, config, run_id)


def _show(config_path: Path | None, run_id: str) -> None:
    from flowrun.inspect import show_run

    for line in show_run(_config(config_path), run_id):
        print(line)


@app.command()
def loyalty(
    customer: Annotated[str | None, typer.Argument(help="One customer (email, or key): balance and ledger.")] = None,
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option(help="At most this many lines, newest first.")] = 50,
) -> None:
    """Loyalty balances, or one customer's ledger: every change with its reason and run."""
    _guard(_loyalty, config, customer, limit)


def _loyalty(config_path: Path | None, customer: str | None, limit: int) -> None:
    from flowrun.inspect import loyalty as loyalty_lines

    for line in loyalty_lines(_config(config_path), customer, limit):
        print(line)


class ReportFormat(StrEnum):
    text = "text"
    json = "json"
    csv = "csv"


@app.command()
def report(
    config: ConfigOption = None,
    flow: Annotated[str | None, typer.Option(help="Only this flow.")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only messages sent (and orders placed) since: an ISO time, or an offset back (7d)."),
    ] = None,
    output: Annotated[ReportFormat, typer.Option("--format", help="text, json or csv.")] = ReportFormat.text,
) -> None:
    """Per flow, step and split arm: sent, delivered, opened, clicked, unsubscribed, converted,
    attributed orders and revenue; which arm is ahead; engagement for unknown message ids."""
    _guard(_report, config, flow, since, output)


def _report(config_path: Path | None, flow: str | None, since_text: str | None, output: ReportFormat) -> None:
    from flowrun.attribution.sources import from_sql
    from flowrun.inspect import report_since
    from flowrun.state.database import reading
    from flowrun.state.schema_check import open_current

    config = _config(config_path)
    since = report_since(since_text)
    with reading(open_current(config.database)) as conn:
        found = from_sql(conn, flow=flow, since=since, min_sample=config.attribution.min_sample)
    _print_report(found, output)


def _print_report(found: Any, output: ReportFormat) -> None:
    if output is ReportFormat.json:
        from flowrun.attribution.render import as_json
        from flowrun.jsonout import dumps

        print(dumps(as_json(found)))
    elif output is ReportFormat.csv:
        from flowrun.attribution.render import as_csv

        sys.stdout.write(as_csv(found))
    else:
        from flowrun.attribution.render import render_text

        render_text(found, _console())


@app.command()
def retry(
    keys: Annotated[list[str] | None, typer.Argument(help="Parked action keys (default: list them).")] = None,
    all_parked: Annotated[bool, typer.Option("--all", help="Re-queue every parked action.")] = False,
    config: ConfigOption = None,
) -> None:
    """Show parked actions, or re-queue them."""
    _guard(_retry, config, keys or [], all_parked)


def _retry(config_path: Path | None, keys: list[str], all_parked: bool) -> None:
    from flowrun.inspect import list_parked, requeue

    config = _config(config_path)
    if not keys and not all_parked:
        lines = list_parked(config)
        for line in lines or ["no parked actions"]:
            print(line)
        return
    count, refused = requeue(config, keys or None)
    for key, why in refused:
        print(f"not re-queued: {key}: {why}")
    print(f"re-queued {count} parked action(s)")
    raise typer.Exit(EXIT_OK if count and not refused else EXIT_PROBLEMS)


@app.command()
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; change nothing.")] = False,
    config: ConfigOption = None,
) -> None:
    """Apply the project's `retention:` now (serve's leader does it on its own every 10 minutes)."""
    _guard(_prune, config, dry_run)


def _prune(config_path: Path | None, dry_run: bool) -> None:
    from flowrun.dryrun.session import load_all_flows
    from flowrun.inspect import state_engine
    from flowrun.pruning import prune_command

    config = _config(config_path)
    flows = load_all_flows([config.flows], locale=config.locale) if config.flows.is_dir() else []
    for line in prune_command(state_engine(config), config, flows, dry_run):
        print(line)


@app.command()
def segments(
    name: Annotated[str | None, typer.Argument(help="One segment: its members.")] = None,
    config: ConfigOption = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV out (a segment's members, or every size).")] = False,
    limit: Annotated[int, typer.Option(help="At most this many members as text (CSV has them all).")] = 100,
) -> None:
    """Segments (segments/*.yaml beside the flows) and their sizes, or one segment's members."""
    _guard(_segments, config, name, as_csv, limit)


def _segments(config_path: Path | None, name: str | None, as_csv: bool, limit: int) -> None:
    from flowrun.segments.listing import segment_lines

    for line in segment_lines(_config(config_path), name, as_csv, limit):
        print(line)


@app.command()
def backfill(
    source: Annotated[str, typer.Option("--source", help="shopify or woocommerce: whose order list to read.")],
    config: ConfigOption = None,
    since: Annotated[str | None, typer.Option(help="Only orders changed since this ISO time.")] = None,
) -> None:
    """Seed customer profiles and the order history from the store's orders; starts no flow."""
    _guard(_backfill, config, source, since)


def _backfill(config_path: Path | None, source: str, since_text: str | None) -> None:
    import asyncio

    from flowrun.backfill import backfill as seed
    from flowrun.errors import UsageError
    from flowrun.events.values import timestamp
    from flowrun.state.database import make_engine
    from flowrun.state.migrations import migrate

    since = timestamp(since_text) if since_text else None
    if since_text and since is None:
        raise UsageError(f"--since {since_text!r} is not an ISO 8601 time")
    cfg = _config(config_path, secrets=True)
    db = make_engine(cfg.database)
    migrate(db)
    try:
        done = asyncio.run(seed(db, cfg.settings(), cfg.sources, source, since, asyncio.sleep))
    finally:
        db.dispose()
    print(
        f"backfilled {done.orders} order(s) of {done.customers} customer(s) from {source} in {done.pages} page(s)"
        f" ({done.rate:,.0f} orders/s); {done.known} already known, {done.skipped} not usable"
    )


@app.command()
def inbox(
    replay: Annotated[
        list[int] | None, typer.Option("--replay", help="Make this rejected or failed delivery pending again.")
    ] = None,
    replay_all: Annotated[bool, typer.Option("--replay-all", help="Make every one of them pending again.")] = False,
    config: ConfigOption = None,
) -> None:
    """Deliveries that were accepted but did not become events (rejected) or broke the runtime
    (failed), with their error; replay them after a fix."""
    _guard(_inbox, config, replay or [], replay_all)


def _inbox(config_path: Path | None, seqs: list[int], replay_all: bool) -> None:
    from flowrun.inspect import inbox_problems, replay_inbox

    config = _config(config_path)
    if not seqs and not replay_all:
        lines = inbox_problems(config)
        for line in lines or ["no rejected or failed deliveries"]:
            print(line)
        return
    count = replay_inbox(config, seqs or None)
    print(f"{count} deliver{'y' if count == 1 else 'ies'} pending again: `flowrun serve` reads them next")
    raise typer.Exit(EXIT_OK if count else EXIT_PROBLEMS)


def run() -> None:
    app()


if __name__ == "__main__":
    run()
