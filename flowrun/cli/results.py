"""Commands about customers and results: report, segments, backfill."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from flowrun.cli.base import (
    ConfigOption,
    _config,
    _console,
    _guard,
    app,
)


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
    print_report(found, output)


def print_report(found: Any, output: ReportFormat) -> None:
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
