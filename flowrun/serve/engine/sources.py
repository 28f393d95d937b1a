"""Where the engine's work comes from, read in one snapshot that takes no lock: action outcomes,
the inbox (store deliveries, polled rows, schedule ticks, events handed over by another
partition's owner), due timers, due derivation checks and sends due for a guardrail decision.
Bodies are parsed and normalised here, before any write transaction begins."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from flowrun.errors import FlowrunError
from flowrun.events.enrich import with_facts
from flowrun.events.normalise import known_topics, normalise, parse_json, topic_types
from flowrun.runtime import inputs as i
from flowrun.runtime.records import SendStatus
from flowrun.runtime.runtime import Runtime
from flowrun.serve.engine.lookups import Lookups
from flowrun.serve.engine.work import Work
from flowrun.state import codec
from flowrun.state import inbox as inbox_rows
from flowrun.state.checks import check_from_row
from flowrun.state.schema import cursors, outbox, runs
from flowrun.state.uow import HANDED_OVER, REACH_ONLY, SqlUnitOfWork

log = logging.getLogger("flowrun.engine")
SCHEDULE_TOPIC = "schedule:"  # inbox topic of a schedule tick: schedule:<flow id>


class Sources:
    def __init__(self, runtime: Runtime, batch: int, lookups: Lookups | None = None) -> None:
        self.runtime, self.batch, self.lookups = runtime, batch, lookups
        self._reads: dict[tuple[str, str | None], bool] = {}

    def reloaded(self) -> None:
        self._reads.clear()

    def collect(self, reader: Connection, parts: frozenset[int] | None, now: datetime) -> list[Work]:
        return [
            *self.outcomes(reader, parts),
            *self.inbox(reader, parts),
            *self.timers(reader, parts, now),
            *self.checks(reader, parts, now),
            *self.sends_due(reader, parts, now),
        ]

    def _within(self, query: Any, column: Any, parts: frozenset[int] | None) -> Any:
        return query if parts is None else query.where(column.in_(sorted(parts)))

    # -- action outcomes ------------------------------------------------------------------

    def outcomes(self, reader: Connection, parts: frozenset[int] | None) -> list[Work]:
        query = select(outbox.c.key, outbox.c.run_id).where(
            outbox.c.applied_at.is_(None), outbox.c.status.in_([SendStatus.DELIVERED.value, SendStatus.FAILED.value])
        )
        query = self._within(query, outbox.c.part, parts).order_by(outbox.c.updated_at).limit(self.batch)
        found = []
        for key, run_id in reader.execute(query):
            found.append(
                Work(f"outcome {key}", [i.OutcomeDue(key)], quarantine=self._fail_outcome(key, run_id), run_id=run_id)
            )
        return found

    def _fail_outcome(self, key: str, run_id: str) -> Any:
        def quarantine(uow: SqlUnitOfWork, error: str) -> None:
            send = uow.outbox.get(key)
            if send is not None:
                uow.outbox.put(send.evolve(applied=True))
            self.runtime.fail_run(uow, run_id, f"applying the result of {key} failed: {error}", uow.now)  # type: ignore[arg-type]

        return quarantine

    # -- the inbox ------------------------------------------------------------------------

    def inbox(self, reader: Connection, parts: frozenset[int] | None) -> list[Work]:
        found = []
        for row in inbox_rows.pending(reader, parts, self.batch):
            if self.lookups is not None and self.lookups.needs(row) and self.reads(row["source"], row["topic"]):
                self.lookups.ask(row)  # applied once the store has answered
            else:
                found.append(self._row(row))
        return found

    def _row(self, row: dict[str, Any]) -> Work:
        seq, part, label = row["seq"], row["part"], f"inbox {row['source']}/{row['delivery_id']}"

        def mark(status: str, error: str | None = None) -> Any:
            return lambda uow: uow.mark_inbox(seq, part, status, error)

        quarantine = lambda uow, error: uow.mark_inbox(seq, part, "failed", error)  # noqa: E731
        if row["source"] == "flowrun":
            return Work(label, self._internal(row), mark("done"), quarantine, kind="inbox")
        if not self.reads(row["source"], row["topic"]):
            return Work(label, [], mark("ignored"), kind="inbox")
        try:
            body = parse_json(row["body"])
            if row.get("facts"):
                body = with_facts(body, codec.loads(row["facts"]))
            events = normalise(
                body,
                source=row["source"],
                topic=row["topic"] if row["source"] != "custom" else None,
                delivery_id=row["delivery_id"] if row["source"] == "shopify" else None,
                received_at=codec._aware(row["received_at"]),
            )
        except (FlowrunError, ValueError, KeyError, TypeError, RecursionError) as exc:
            log.warning("%s cannot become an event: %s", label, exc)
            return Work(label, [], mark("rejected", str(exc)[:2000]), kind="inbox")
        except Exception as exc:  # a bug in a normaliser: kept with the error, replayable after a fix
            log.exception("%s broke its normaliser", label)
            return Work(label, [], mark("failed", f"{type(exc).__name__}: {exc}"[:2000]), kind="inbox")
        return Work(label, [i.EventIn(e) for e in events], mark("done"), quarantine, kind="inbox", events=len(events))

    def _internal(self, row: dict[str, Any]) -> list[i.Input]:
        topic = str(row["topic"])
        if topic.startswith(SCHEDULE_TOPIC):
            return [i.TickDue(topic[len(SCHEDULE_TOPIC) :], codec.loads(row["body"])["at"])]
        event = codec.event_from_dict(codec.loads(row["body"]))
        return [i.EventIn(event, reach_only=topic == REACH_ONLY)] if topic in (HANDED_OVER, REACH_ONLY) else []

    def reads(self, source: str, topic: str | None) -> bool:
        """Whether anything could read an event of this topic; True when only the body can tell."""
        known = self._reads.get((source, topic))
        if known is None:
            types = topic_types(source, topic)
            known = types is None or any(self.runtime.reads(t) for t in types)
            self._reads[(source, topic)] = known
        return known

    def unread_topics(self) -> frozenset[tuple[str, str]]:
        """The (source, topic) pairs nothing reads: the webhook port stores them as `ignored`."""
        return frozenset(
            (source, topic)
            for source, topics in known_topics().items()
            for topic in topics
            if not self.reads(source, topic)
        )

    # -- time-driven ----------------------------------------------------------------------

    def timers(self, reader: Connection, parts: frozenset[int] | None, now: datetime) -> list[Work]:
        query = select(runs.c.id, runs.c.wake_at).where(runs.c.wake_at <= codec.utc(now))
        query = self._within(query, runs.c.part, parts).order_by(runs.c.wake_at).limit(self.batch)
        found = []
        for run_id, wake_at in reader.execute(query):
            due = codec._aware(wake_at)
            found.append(
                Work(
                    f"timer {run_id}",
                    [i.TimerDue(run_id, due)],
                    quarantine=self._fail(run_id),
                    run_id=run_id,
                    kind="timer",
                )
            )
        return found

    def checks(self, reader: Connection, parts: frozenset[int] | None, now: datetime) -> list[Work]:
        query = select(cursors).where(cursors.c.due_at <= codec.utc(now))
        query = self._within(query, cursors.c.part, parts).order_by(cursors.c.due_at).limit(self.batch)
        found = []
        for row in reader.execute(query).mappings():
            check = check_from_row(row)

            def shelve(uow: SqlUnitOfWork, error: str, c: Any = check) -> None:
                log.error("check %s broke the runtime and will not fire again: %s", c.name, error)
                uow.checks.put(c.__class__(c.name, {"quarantined": error, "value": c.value}, c.part, None))

            found.append(Work(f"check {check.name}", [i.CheckDue(check)], quarantine=shelve, kind="check"))
        return found

    def sends_due(self, reader: Connection, parts: frozenset[int] | None, now: datetime) -> list[Work]:
        query = select(outbox.c.key, outbox.c.run_id).where(
            outbox.c.status == SendStatus.PENDING.value, outbox.c.next_attempt_at <= codec.utc(now)
        )
        query = self._within(query, outbox.c.part, parts).order_by(outbox.c.next_attempt_at).limit(self.batch)
        return [
            Work(f"send {key}", [i.SendDue(key)], quarantine=self._fail(run_id), run_id=run_id, kind="send")
            for key, run_id in reader.execute(query)
        ]

    def _fail(self, run_id: str) -> Any:
        def quarantine(uow: SqlUnitOfWork, error: str) -> None:
            self.runtime.fail_run(uow, run_id, error, uow.now)  # type: ignore[arg-type]

        return quarantine
