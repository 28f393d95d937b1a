"""Commands for running flowrun: serve, and looking into and mending its state (runs, show,
loyalty, retry, prune, inbox)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flowrun.cli.base import (
    EXIT_OK,
    EXIT_PROBLEMS,
    ConfigOption,
    _config,
    _guard,
    app,
)


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
    from flowrun.dryrun.session import load_all_flows
    from flowrun.segments.loader import project_segments

    # a broken segment file, or a flow naming a segment none defines, stops serve here with its
    # place (as `serve --check` and a SIGHUP refuse them), not in the engine
    project_segments([config.flows], load_all_flows([config.flows], locale=config.locale))
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
