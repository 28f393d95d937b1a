"""Where the report's figures come from: the counters the runtime keeps as messages change
(flowrun.attribution.tie `_store`), in memory for dry-run or in the `figures` table for serve,
so a report over a million messages reads a few hundred rows. `--since` counts whole UTC days
(from the day it falls on). Both hand the same groups to flowrun.attribution.figures.build."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from flowrun.attribution.figures import Key, Report, Unknown, build
from flowrun.attribution.records import COUNTS, FIGURES, FigureKey
from flowrun.runtime.memory_messages import MemoryMessages
from flowrun.state.schema import engagements, figures

EXAMPLES = 5


def _first_day(since: datetime | None) -> str | None:
    return since.astimezone(UTC).date().isoformat() if since is not None else None


def _report(
    rows: Iterable[tuple[FigureKey, Mapping[str, int]]],
    unknown: Unknown,
    flow: str | None,
    since: datetime | None,
    min_sample: int,
) -> Report:
    counts: dict[Key, Counter[str]] = defaultdict(Counter)
    money: dict[tuple[Key, str], list[int]] = defaultdict(lambda: [0, 0])
    arms: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    day = _first_day(since)
    for key, found in rows:
        if (flow is not None and key.flow != flow) or (day is not None and key.day < day):
            continue
        if not key.step:  # a split arm's runs
            entry = arms[(key.flow, key.split, key.arm)]
            entry[0] += int(found.get("arm_runs", 0))
            entry[1] += int(found.get("arm_converted", 0))
            continue
        where = Key(key.flow, key.step, key.split, key.arm, key.channel)
        if key.currency:
            entry = money[(where, key.currency)]
            entry[0] += int(found.get("orders", 0))
            entry[1] += int(found.get("revenue_micros", 0))
        else:
            counts[where].update({name: int(found.get(name, 0)) for name in COUNTS})
    return build(
        ((k, dict(v)) for k, v in counts.items()),
        ((k, currency, n, micros) for (k, currency), (n, micros) in money.items()),
        ((f, s, a, runs, won) for (f, s, a), (runs, won) in arms.items()),
        unknown,
        since=since,
        flow=flow,
        min_sample=min_sample,
    )


def from_memory(
    store: MemoryMessages, *, flow: str | None = None, since: datetime | None = None, min_sample: int = 100
) -> Report:
    unmatched = sorted(
        (e for e in store.engagements.values() if e.send_key is None and (since is None or e.occurred_at >= since)),
        key=lambda e: (e.occurred_at, e.event_id),
        reverse=True,
    )
    unknown = Unknown(
        len(unmatched),
        dict(sorted(Counter(e.kind for e in unmatched).items())),
        tuple((e.provider, e.kind, e.message_id or "") for e in unmatched[:EXAMPLES]),
    )
    return _report(store.figures.items(), unknown, flow, since, min_sample)


def from_sql(
    conn: Connection, *, flow: str | None = None, since: datetime | None = None, min_sample: int = 100
) -> Report:
    f = figures.c
    query: Any = select(figures)
    if flow is not None:
        query = query.where(f.flow_id == flow)
    day = _first_day(since)
    if day is not None:
        query = query.where(f.day >= day)
    rows = [
        (
            FigureKey(r["flow_id"], r["step"], r["split"], r["arm"], r["channel"], r["day"], r["currency"]),
            {name: int(r[name]) for name in FIGURES},
        )
        for r in conn.execute(query).mappings()
    ]
    return _report(rows, _unknown(conn, since), flow, since, min_sample)


def _unknown(conn: Connection, since: datetime | None) -> Unknown:
    e = engagements.c
    where: list[Any] = [e.send_key.is_(None)]
    if since is not None:
        where.append(e.occurred_at >= since.astimezone(UTC))
    by_kind = {str(k): int(n) for k, n in conn.execute(select(e.kind, func.count()).where(*where).group_by(e.kind))}
    newest = select(e.provider, e.kind, e.message_id).where(*where)
    newest = newest.order_by(e.occurred_at.desc(), e.event_id.desc()).limit(EXAMPLES)
    examples = tuple((str(p), str(k), str(i or "")) for p, k, i in conn.execute(newest))
    return Unknown(sum(by_kind.values()), dict(sorted(by_kind.items())), examples)
