"""The Messages port over SQL (tables `messages`, `engagements`, `attributions`): reads from the
unit of work's snapshot and what it wrote so far, writes held until its commit."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from flowrun.attribution.records import FIGURES, Attributed, Engagement, FigureKey, Message
from flowrun.state import codec
from flowrun.state.database import _dialect_insert, insert_many_ignore, upsert_many
from flowrun.state.schema import attributions, engagements, figures, messages

TIMES = (
    "sent_at",
    "delivered_at",
    "opened_at",
    "human_opened_at",
    "last_open_at",
    "last_human_open_at",
    "clicked_at",
    "last_click_at",
    "unsubscribed_at",
    "bounced_at",
    "complained_at",
    "converted_at",
)


class SqlMessages:
    def __init__(self, reader: Connection) -> None:
        self.reader = reader
        self.changed: dict[str, Message] = {}
        self.noted: dict[str, Engagement] = {}
        self.credited: dict[str, Attributed] = {}
        self.counted: dict[FigureKey, Counter[str]] = {}

    def get(self, message_id: str) -> Message | None:
        if message_id in self.changed:
            return self.changed[message_id]
        row = self.reader.execute(select(messages).where(messages.c.message_id == message_id)).mappings().first()
        return message_from(row) if row else None

    def put(self, message: Message) -> None:
        self.changed[message.message_id] = message

    def for_run(self, run_id: str) -> list[Message]:
        query = select(messages).where(messages.c.run_id == run_id)
        return self._merged(query, lambda m: m.run_id == run_id)

    def touched_since(self, customer_key: str, since: datetime) -> list[Message]:
        query = select(messages).where(
            messages.c.customer_key == customer_key, messages.c.touched_at >= codec.utc(since)
        )
        return self._merged(query, lambda m: m.customer_key == customer_key and m.touched_at >= since)

    def _merged(self, query: Any, mine: Any) -> list[Message]:
        found = {row["message_id"]: message_from(row) for row in self.reader.execute(query).mappings()}
        for message_id, message in self.changed.items():
            if mine(message):
                found[message_id] = message
            else:
                found.pop(message_id, None)
        return [found[k] for k in sorted(found)]

    def note(self, engagement: Engagement) -> None:
        self.noted[engagement.event_id] = engagement

    def unmatched(self, message_id: str) -> list[Engagement]:
        query = select(engagements).where(engagements.c.message_id == message_id, engagements.c.send_key.is_(None))
        found = {row["event_id"]: engagement_from(row) for row in self.reader.execute(query).mappings()}
        for event_id, kept in self.noted.items():
            if kept.message_id == message_id:
                if kept.send_key is None:
                    found[event_id] = kept
                else:
                    found.pop(event_id, None)
        return sorted(found.values(), key=lambda e: (e.occurred_at, e.event_id))

    def attribute(self, attributed: Attributed) -> bool:
        if attributed.order_key in self.credited:
            return False
        query = select(attributions.c.order_key).where(attributions.c.order_key == attributed.order_key)
        if self.reader.execute(query).first() is not None:
            return False
        self.credited[attributed.order_key] = attributed
        return True

    def count(self, key: FigureKey, deltas: Mapping[str, int]) -> None:
        self.counted.setdefault(key, Counter()).update(deltas)

    def flush(self, conn: Connection) -> None:
        if self.counted:
            rows = [{**_figure_key(k), **{n: int(c.get(n, 0)) for n in FIGURES}} for k, c in self.counted.items()]
            conn.execute(_add_figures(conn.dialect.name), rows)
        upsert_many(conn, messages, [message_row(m) for m in self.changed.values()])
        upsert_many(conn, engagements, [engagement_row(e) for e in self.noted.values()])
        insert_many_ignore(conn, attributions, [attributed_row(a) for a in self.credited.values()])


def _figure_key(key: FigureKey) -> dict[str, str]:
    return {
        "flow_id": key.flow,
        "step": key.step,
        "split": key.split,
        "arm": key.arm,
        "channel": key.channel,
        "day": key.day,
        "currency": key.currency,
    }


@functools.cache
def _add_figures(dialect: str) -> Any:
    """INSERT the counters, or add them to the row already there."""
    statement = _dialect_insert(dialect, figures)
    keys = [c.name for c in figures.primary_key.columns]
    return statement.on_conflict_do_update(
        index_elements=keys, set_={n: figures.c[n] + statement.excluded[n] for n in FIGURES}
    )


def message_row(m: Message) -> dict[str, Any]:
    row: dict[str, Any] = {
        "message_id": m.message_id,
        "send_key": m.send_key,
        "run_id": m.run_id,
        "flow_id": m.flow_id,
        "step": m.step,
        "split": m.split,
        "arm": m.arm,
        "channel": m.channel,
        "customer_key": m.customer_key,
        "recipient": m.recipient,
        "part": m.part,
        "touched_at": codec.utc(m.touched_at),
    }
    row.update({name: codec.utc(getattr(m, name)) for name in TIMES})
    return row


def _time(value: datetime | None) -> datetime | None:
    return codec._aware(value) if value is not None else None


def message_from(row: Any) -> Message:
    times = {name: _time(row[name]) for name in TIMES if name != "sent_at"}
    return Message(
        sent_at=codec._aware(row["sent_at"]),
        message_id=str(row["message_id"]),
        send_key=str(row["send_key"]),
        run_id=str(row["run_id"]),
        flow_id=str(row["flow_id"]),
        step=str(row["step"]),
        split=row["split"],
        arm=row["arm"],
        channel=str(row["channel"]),
        customer_key=row["customer_key"],
        recipient=row["recipient"],
        part=int(row["part"]),
        **times,  # type: ignore[arg-type]
    )


def engagement_row(e: Engagement) -> dict[str, Any]:
    return {
        "event_id": e.event_id,
        "provider": e.provider,
        "kind": e.kind,
        "message_id": e.message_id,
        "recipient": e.recipient,
        "occurred_at": codec.utc(e.occurred_at),
        "machine": int(e.machine),
        "send_key": e.send_key,
    }


def engagement_from(row: Any) -> Engagement:
    return Engagement(
        event_id=str(row["event_id"]),
        provider=str(row["provider"]),
        kind=str(row["kind"]),
        message_id=row["message_id"],
        recipient=row["recipient"],
        occurred_at=codec._aware(row["occurred_at"]),
        machine=bool(row["machine"]),
        send_key=row["send_key"],
    )


def attributed_row(a: Attributed) -> dict[str, Any]:
    return {
        "order_key": a.order_key,
        "order_id": a.order_id,
        "customer_key": a.customer_key,
        "ordered_at": codec.utc(a.ordered_at),
        "amount": str(a.amount),
        "amount_micros": int(a.amount * Decimal(1_000_000)),
        "currency": a.currency,
        "message_id": a.message_id,
        "run_id": a.run_id,
        "flow_id": a.flow_id,
        "step": a.step,
        "split": a.split,
        "arm": a.arm,
        "channel": a.channel,
        "touch": a.touch,
        "touched_at": codec.utc(a.touched_at),
    }
