"""Where the report's grouped counts come from: dry-run's in-memory messages, or serve's SQL
tables (one GROUP BY per figure family, so a million messages are counted by the database).
Both hand the same groups to flowrun.attribution.figures.build."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import case, distinct, func, select
from sqlalchemy.engine import Connection

from flowrun.attribution.figures import COUNTS, Key, Report, Unknown, build
from flowrun.runtime.memory_messages import MemoryMessages
from flowrun.state import codec
from flowrun.state.schema import attributions, engagements, messages

EXAMPLES = 5
_FIRSTS = (  # report count -> the message's column that says it happened
    ("delivered", "delivered_at"),
    ("opened", "opened_at"),
    ("opened_human", "human_opened_at"),
    ("clicked", "clicked_at"),
    ("unsubscribed", "unsubscribed_at"),
    ("bounced", "bounced_at"),
    ("complained", "complained_at"),
    ("converted", "converted_at"),
)


def from_memory(
    store: MemoryMessages, *, flow: str | None = None, since: datetime | None = None, min_sample: int = 100
) -> Report:
    chosen = [
        m
        for m in store.messages.values()
        if (flow is None or m.flow_id == flow) and (since is None or m.sent_at >= since)
    ]
    counts: dict[Key, Counter[str]] = defaultdict(Counter)
    arm_runs: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    arm_won: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for m in chosen:
        tally = counts[Key(m.flow_id, m.step, m.split or "", m.arm or "", m.channel)]
        tally["recipients"] += 1
        for name, column in _FIRSTS:
            tally[name] += getattr(m, column) is not None
        if m.split is not None:
            arm = (m.flow_id, m.split, m.arm or "")
            arm_runs[arm].add(m.run_id)
            if m.converted_at is not None:
                arm_won[arm].add(m.run_id)
    money: dict[tuple[Key, str], list[int]] = defaultdict(lambda: [0, 0])
    for a in store.attributions.values():
        if (flow is None or a.flow_id == flow) and (since is None or a.ordered_at >= since):
            entry = money[(Key(a.flow_id, a.step, a.split or "", a.arm or "", a.channel), a.currency)]
            entry[0] += 1
            entry[1] += int(a.amount * Decimal(1_000_000))
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
    return build(
        ((k, dict(v)) for k, v in counts.items()),
        ((k, currency, n, micros) for (k, currency), (n, micros) in money.items()),
        ((f, s, a, len(runs), len(arm_won.get((f, s, a), ()))) for (f, s, a), runs in arm_runs.items()),
        unknown,
        since=since,
        flow=flow,
        min_sample=min_sample,
    )


def from_sql(
    conn: Connection, *, flow: str | None = None, since: datetime | None = None, min_sample: int = 100
) -> Report:
    m, a = messages.c, attributions.c
    split, arm = func.coalesce(m.split, ""), func.coalesce(m.arm, "")
    columns = [func.count().label("recipients")]
    columns += [func.count(getattr(m, column)).label(name) for name, column in _FIRSTS]
    query: Any = select(m.flow_id, m.step, split, arm, m.channel, *columns)
    if flow is not None:
        query = query.where(m.flow_id == flow)
    if since is not None:
        query = query.where(m.sent_at >= codec.utc(since))
    query = query.group_by(m.flow_id, m.step, split, arm, m.channel)
    counts = [
        (Key(r[0], r[1], r[2], r[3], r[4]), {name: int(r[5 + i]) for i, name in enumerate(COUNTS)})
        for r in conn.execute(query)
    ]
    a_split, a_arm = func.coalesce(a.split, ""), func.coalesce(a.arm, "")
    money: Any = select(
        a.flow_id, a.step, a_split, a_arm, a.channel, a.currency, func.count(), func.sum(a.amount_micros)
    )
    if flow is not None:
        money = money.where(a.flow_id == flow)
    if since is not None:
        money = money.where(a.ordered_at >= codec.utc(since))
    money = money.group_by(a.flow_id, a.step, a_split, a_arm, a.channel, a.currency)
    revenue = [(Key(r[0], r[1], r[2], r[3], r[4]), r[5], int(r[6]), int(r[7] or 0)) for r in conn.execute(money)]
    won = func.count(distinct(case((m.converted_at.is_not(None), m.run_id))))
    arms_query: Any = select(m.flow_id, m.split, arm, func.count(distinct(m.run_id)), won).where(m.split.is_not(None))
    if flow is not None:
        arms_query = arms_query.where(m.flow_id == flow)
    if since is not None:
        arms_query = arms_query.where(m.sent_at >= codec.utc(since))
    arms_query = arms_query.group_by(m.flow_id, m.split, arm)
    arms = [(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in conn.execute(arms_query)]
    return build(counts, revenue, arms, _unknown(conn, since), since=since, flow=flow, min_sample=min_sample)


def _unknown(conn: Connection, since: datetime | None) -> Unknown:
    e = engagements.c
    where: list[Any] = [e.send_key.is_(None)]
    if since is not None:
        where.append(e.occurred_at >= codec.utc(since))
    by_kind = {str(k): int(n) for k, n in conn.execute(select(e.kind, func.count()).where(*where).group_by(e.kind))}
    newest = select(e.provider, e.kind, e.message_id).where(*where)
    newest = newest.order_by(e.occurred_at.desc(), e.event_id.desc()).limit(EXAMPLES)
    examples = tuple((str(p), str(k), str(i or "")) for p, k, i in conn.execute(newest))
    return Unknown(sum(by_kind.values()), dict(sorted(by_kind.items())), examples)
