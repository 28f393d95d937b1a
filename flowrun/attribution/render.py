"""`flowrun report` output: a JSON document, CSV (one line per flow, step and arm), or rich
tables in the terminal. Money stays exact: Decimal text in JSON and CSV."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

from flowrun.attribution.figures import Figures, Report
from flowrun.attribution.records import COUNTS
from flowrun.jsonout import iso

CSV_HEAD = ["flow", "step", "split", "arm", "channel", *COUNTS, "orders", "revenue"]


def _revenue(figures: Figures) -> dict[str, str]:
    return {c: str(a) for c, a in sorted(figures.revenue.items())}


def _revenue_text(revenue: dict[str, Decimal]) -> str:
    return " ".join(f"{amount:f} {currency}".strip() for currency, amount in sorted(revenue.items())) or "-"


def as_json(report: Report) -> dict[str, Any]:
    return {
        "since": iso(report.since) if report.since else None,
        "flow": report.flow,
        "flows": [{"flow": flow, **f.counts, "orders": f.orders, "revenue": _revenue(f)} for flow, f in report.flows],
        "steps": [
            {
                "flow": k.flow,
                "step": k.step,
                "split": k.split or None,
                "arm": k.arm or None,
                "channel": k.channel,
                **f.counts,
                "orders": f.orders,
                "revenue": _revenue(f),
            }
            for k, f in report.steps
        ],
        "splits": [
            {
                "flow": c.flow,
                "split": c.split,
                "test": "two-proportion z-test on conversion per run, |z| >= 1.96",
                "min_sample": report.min_sample,
                "arms": [{"arm": a.arm, "runs": a.runs, "converted": a.converted, "rate": a.rate} for a in c.arms],
                "ahead": c.ahead,
                "z": c.z,
                "verdict": c.verdict,
            }
            for c in report.comparisons
        ],
        "unknown_engagement": {
            "count": report.unknown.count,
            "by_kind": report.unknown.by_kind,
            "examples": [{"provider": p, "kind": k, "message_id": i} for p, k, i in report.unknown.examples],
        },
    }


def as_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEAD)
    for k, f in report.steps:
        revenue = ";".join(f"{a} {c}".strip() for c, a in _revenue(f).items())
        writer.writerow([k.flow, k.step, k.split, k.arm, k.channel, *f.counts.values(), f.orders, revenue])
    return out.getvalue()


def render_text(report: Report, console: Any) -> None:
    from rich.table import Table

    title = "flowrun report" + (f" for {report.flow}" if report.flow else "")
    title += f" since {iso(report.since)}" if report.since else ""
    if not console.is_terminal:
        console.width = max(console.width, 140)  # a file or a pipe: no wrapping inside the tables
    if not report.steps:
        console.print(f"{title}: no messages sent yet.")
    else:
        console.print(_table(report, f"{title}: engagement", ENGAGEMENT, _engagement))
        console.print(_table(report, f"{title}: results (last-touch attribution)", RESULTS, _results))
    for c in report.comparisons:
        arms = Table(title=f"split {c.flow} / {c.split}", title_justify="left")
        for name in ("arm", "runs", "converted", "rate"):
            arms.add_column(name, justify="left" if name == "arm" else "right")
        for a in c.arms:
            mark = " [green]ahead[/]" if a.arm == c.ahead else ""
            arms.add_row(a.arm + mark, str(a.runs), str(a.converted), f"{a.rate:.1%}")
        console.print(arms)
        console.print(f"  {c.verdict}", markup=False)
        console.print(
            f"  (two-proportion z-test on conversion per run; ahead: |z| >= 1.96, {report.min_sample} runs an arm)",
            markup=False,
        )
    unknown = report.unknown
    if unknown.count:
        kinds = ", ".join(f"{n} {k}" for k, n in unknown.by_kind.items())
        console.print(
            f"engagement for unknown message ids: {unknown.count} ({kinds}); kept, not attributed", markup=False
        )
        for provider, kind, message_id in unknown.examples:
            console.print(f"  {provider} {kind} {message_id}", markup=False)


ENGAGEMENT = ("sent", "delivered", "opened", "(no machine)", "clicked", "unsub.", "bounced", "complained")
RESULTS = ("sent", "converted", "rate", "orders", "revenue")


def _table(report: Report, title: str, heads: tuple[str, ...], cells: Any) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in ("flow / step", "arm", "channel"):
        table.add_column(name)
    for name in heads:
        table.add_column(name, justify="right")
    for flow, total in report.flows:
        table.add_row(flow, "", "", *cells(total), style="bold")
        for k, f in report.steps:
            if k.flow == flow:
                table.add_row(f"  {k.step}", k.arm, k.channel, *cells(f))
        table.add_section()
    return table


def _engagement(f: Figures) -> list[str]:
    c = f.counts
    names = ("recipients", "delivered", "opened", "opened_human", "clicked", "unsubscribed", "bounced", "complained")
    return [str(c[n]) for n in names]


def _results(f: Figures) -> list[str]:
    c = f.counts
    rate = f"{c['converted'] / c['recipients']:.1%}" if c["recipients"] else "-"
    return [str(c["recipients"]), str(c["converted"]), rate, str(f.orders), _revenue_text(f.revenue)]
