"""The ports the runtime works through. Dry-run and `flowrun test` give it the in-memory
adapters (flowrun.runtime.memory); serve gives it a unit of work over SQL (flowrun.state.uow).
Every method acts inside the caller's unit of work: all of an input's effects, or none."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from flowrun.attribution.records import Attributed, Engagement, FigureKey, Message
from flowrun.engine.state import RunState
from flowrun.events import Event
from flowrun.loyalty import Ledger
from flowrun.profile.record import OrderRow, Profile, RefundRow
from flowrun.runtime.records import Attempt, Check, Send


class Entered(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...


class Runs(Protocol):
    def get(self, run_id: str) -> RunState | None: ...

    def save(self, run: RunState) -> None: ...

    def active_for_customer(self, customer_key: str, flow_ids: Collection[str]) -> list[RunState]: ...

    def active_for_key(self, flow_id: str, concurrency_key: str) -> list[RunState]: ...

    def last_started(self, flow_id: str, customer_key: str) -> Entered | None:
        """When this customer last entered this flow (its newest run that was not skipped): kept
        for re-entry rules even after the run itself is pruned."""
        ...

    def awaiting(self, event_type: str) -> list[RunState]:
        """Runs in a `wait: {for:}` on this type, in the partitions this unit of work owns."""
        ...


class Outbox(Protocol):
    def add(self, send: Send) -> bool:
        """False when a row with this key exists (a replayed transition): one send."""
        ...

    def get(self, key: str) -> Send | None: ...

    def put(self, send: Send) -> None:
        """Write back a row read with `get` (its status, times, result)."""
        ...

    def cancel_unsent(self, run_id: str, reason: str, now: datetime) -> list[str]:
        """Rows of this run not sent yet (pending, ready, parked) become cancelled; their keys."""
        ...

    def note(self, attempt: Attempt) -> None: ...


class SendLog(Protocol):
    """Marketing sends per customer and channel, for frequency caps. A send counts from the
    moment it is decided until it fails for good (so two cannot both pass a cap)."""

    def recent(self, customer_key: str, channel: str, since: datetime) -> list[datetime]: ...

    def reserve(self, key: str, customer_key: str, channel: str, at: datetime) -> None: ...

    def release(self, key: str) -> None: ...


class Consent(Protocol):
    def suppressed(self, customer_key: str) -> bool: ...

    def record(self, customer_key: str, suppressed: bool, reason: str, at: datetime) -> None: ...


class Checks(Protocol):
    def get(self, name: str) -> Check | None: ...

    def put(self, check: Check) -> None: ...

    def delete(self, name: str) -> None: ...


class Profiles(Protocol):
    """One profile per customer key (flowrun.profile.record)."""

    def get(self, customer_key: str) -> Profile | None: ...

    def put(self, profile: Profile) -> None: ...


class Orders(Protocol):
    """The order history: one row per order id, what `orders.count(…)`/`orders.revenue(…)` read."""

    def add(self, row: OrderRow) -> bool:
        """False when this order id is in the history already (a replay, order.paid after order.created)."""
        ...

    def refund(self, row: RefundRow) -> tuple[OrderRow, OrderRow] | None:
        """Take a refund off its order, once per refund id: the order before and after. None for
        a refund seen before, of an order the history lacks, or in another currency."""
        ...

    def count(self, since: datetime | None, until: datetime | None, customer_key: str | None = None) -> int:
        """Orders with since <= time < until (either bound open when None)."""
        ...

    def revenue(
        self, since: datetime | None, until: datetime | None, customer_key: str | None = None
    ) -> dict[str, Decimal]: ...


class Messages(Protocol):
    """Delivered sends by provider message id (attribution): recorded in the unit of work that
    settles the send's outcome, matched by `message.*` events, credited with orders."""

    def get(self, message_id: str) -> Message | None: ...

    def put(self, message: Message) -> None: ...

    def for_run(self, run_id: str) -> list[Message]: ...

    def touched_since(self, customer_key: str, since: datetime) -> list[Message]:
        """The customer's messages last sent, delivered, opened or clicked at or after `since`."""
        ...

    def note(self, engagement: Engagement) -> None:
        """Keep a `message.*` event (matched or not); a second note of an event id replaces it."""
        ...

    def unmatched(self, message_id: str) -> list[Engagement]:
        """Events kept for this id before its send was recorded (the webhook won the race)."""
        ...

    def attribute(self, attributed: Attributed) -> bool:
        """False when this order is attributed already (a replayed order event)."""
        ...

    def count(self, key: FigureKey, deltas: Mapping[str, int]) -> None:
        """Add to the report's counters (flowrun.attribution.records.FIGURES) for this key."""
        ...


class UnitOfWork(Protocol):
    @property
    def runs(self) -> Runs: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def sends(self) -> SendLog: ...
    @property
    def consent(self) -> Consent: ...
    @property
    def checks(self) -> Checks: ...
    @property
    def ledger(self) -> Ledger: ...
    @property
    def profiles(self) -> Profiles: ...
    @property
    def orders(self) -> Orders: ...
    @property
    def messages(self) -> Messages: ...

    def owns(self, part: int) -> bool:
        """Whether this instance moves partition `part` in this unit of work."""
        ...

    def fan_out(self, event: Event, part: int, *, reach_only: bool) -> None:
        """Hand an event to partition `part`'s owner: applied there in full, or (`reach_only`)
        only to the waits with `where:` of runs there."""
        ...


__all__ = ["Checks", "Consent", "Messages", "Orders", "Outbox", "Profiles", "Runs", "SendLog", "UnitOfWork"]
