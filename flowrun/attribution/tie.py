"""What the runtime does for attribution, through the unit of work's Messages port: record a
delivered send by its provider message id, match a `message.*` event to it (and suppress an
address that bounced hard or complained), credit a run's messages when it reaches its goal,
and attribute an order to the customer's last touch. Pure of clocks: times come from the
send, the event or the caller."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from flowrun.attribution.records import Attributed, Engagement, FigureKey, Message
from flowrun.attribution.steps import StepInfo, step_index
from flowrun.attribution.windows import Attribution
from flowrun.engine.state import RunState
from flowrun.events import Event
from flowrun.flow.model import Flow
from flowrun.runtime.protocols import UnitOfWork
from flowrun.runtime.records import Send

PREFIX = "message."
SUPPRESSING = ("complained", "unsubscribed")  # and a hard bounce
MICROS = Decimal(1_000_000)
TIES = ("run", "flow", "step", "split", "arm")


def reads(event_type: str, flows: Iterable[Flow]) -> bool:
    """While any loaded flow sends customer messages, attribution reads every `message.*` event
    and every order, whether a flow does or not."""
    if not (event_type.startswith(PREFIX) or event_type == "order.created"):
        return False
    return any(getattr(ins, "step", None) is not None and _sends(ins.step) for f in flows for ins in f.program)


def _sends(step: Any) -> bool:
    action = getattr(step, "action", None)
    return getattr(action, "channel", None) is not None


def sent(uow: UnitOfWork, flow: Flow | None, run: RunState, send: Send, result: Mapping[str, Any]) -> None:
    """A delivered customer message with a provider id becomes a Message (once per id)."""
    message_id = result.get("message_id")
    if not isinstance(message_id, str) or not message_id or send.channel is None:
        return
    if uow.messages.get(message_id) is not None:
        return
    info = (step_index(flow).get(send.step) if flow else None) or StepInfo(send.step, None, None)
    to = send.params.get("to")
    message = Message(
        message_id=message_id,
        send_key=send.key,
        run_id=run.id,
        flow_id=run.flow_id,
        step=info.label,
        split=info.split,
        arm=info.arm,
        channel=send.channel,
        customer_key=send.customer_key,
        recipient=str(to) if isinstance(to, str | int) and str(to) else None,
        sent_at=send.updated_at,
        part=send.part,
    )
    for early in uow.messages.unmatched(message_id):  # the webhook came before the outcome was applied
        message = _engaged(message, early)
        uow.messages.note(replace(early, send_key=send.key))
    _store(uow, None, message)


def engagement(uow: UnitOfWork, event: Event, now: datetime) -> Event | None:
    """A `message.*` event matched by message id: kept, its message updated, and returned with
    `message.{run,flow,step,split,arm}` and the send's customer, so goals and waits of that run
    see it. An unknown id is kept and counted, and the event goes on as it came. None: the
    message's partition is another instance's, and the event was handed to it."""
    kind = event.type.removeprefix(PREFIX)
    body = event.data.get("message") or {}
    message_id = body.get("id") if isinstance(body.get("id"), str) else None
    message = uow.messages.get(message_id) if message_id else None
    if message is not None and not uow.owns(message.part):
        uow.fan_out(event, message.part, reach_only=False)
        return None
    kept = Engagement(
        event_id=event.id,
        provider=event.source,
        kind=kind,
        message_id=message_id,
        recipient=body.get("recipient"),
        occurred_at=event.occurred_at,
        machine=bool(body.get("machine_open")),
        send_key=message.send_key if message else None,
    )
    uow.messages.note(kept)
    if message is None:  # what ties it to a run comes from the send alone, never from the event
        untied = {**body, **dict.fromkeys(TIES)}
        return replace(event, data={**event.data, "message": untied})
    _store(uow, message, _engaged(message, kept))
    hard = kind == "bounced" and body.get("bounce_type") == "hard"
    if (hard or kind in SUPPRESSING) and message.customer_key:
        uow.consent.record(message.customer_key, True, f"{event.type} {event.id}", now)
    tied = {
        **body,
        "run": message.run_id,
        "flow": message.flow_id,
        "step": message.step,
        "split": message.split,
        "arm": message.arm,
    }
    return replace(event, data={**event.data, "message": tied}, customer_key=message.customer_key)


def _engaged(message: Message, seen: Engagement) -> Message:
    at, kind = seen.occurred_at, seen.kind
    changes: dict[str, Any] = {}
    first = {"delivered": "delivered_at", "unsubscribed": "unsubscribed_at"}
    first |= {"bounced": "bounced_at", "complained": "complained_at"}
    if kind in first:
        changes[first[kind]] = _earlier(getattr(message, first[kind]), at)
    elif kind == "opened":
        changes["opened_at"] = _earlier(message.opened_at, at)
        changes["last_open_at"] = _later(message.last_open_at, at)
        if not seen.machine:
            changes["human_opened_at"] = _earlier(message.human_opened_at, at)
            changes["last_human_open_at"] = _later(message.last_human_open_at, at)
    elif kind == "clicked":
        changes["clicked_at"] = _earlier(message.clicked_at, at)
        changes["last_click_at"] = _later(message.last_click_at, at)
    return message.evolve(**changes)


def _earlier(old: datetime | None, new: datetime) -> datetime:
    return new if old is None or new < old else old


def _later(old: datetime | None, new: datetime) -> datetime:
    return new if old is None or new > old else old


def converted(uow: UnitOfWork, run: RunState, now: datetime) -> None:
    """The run reached its goal: each of its messages counts as converted."""
    for message in uow.messages.for_run(run.id):
        if message.converted_at is None:
            _store(uow, message, message.evolve(converted_at=now))


def order(uow: UnitOfWork, event: Event, rules: Attribution) -> None:
    """`order.created`: attributed, last touch, to the customer's most recent message touched
    within its channel's window for that touch; the message counts as converted."""
    if event.type != "order.created" or not event.customer_key:
        return
    data = event.data.get("order") or {}
    at = event.occurred_at
    best: tuple[tuple[datetime, datetime, str], Message, str, datetime] | None = None
    for message in uow.messages.touched_since(event.customer_key, at - rules.longest):
        windows = rules.windows.get(message.channel, {})
        for touch, when in _touches(message, rules.machine_opens):
            span = windows.get(touch)
            if span is None or when > at or at - when > span:
                continue
            rank = (when, message.sent_at, message.message_id)
            if best is None or rank > best[0]:
                best = (rank, message, touch, when)
    if best is None:
        return
    _, message, touch, when = best
    amount = _money(data.get("total_price"))
    credited = Attributed(
        order_key=f"{event.source}:{data.get('id') or event.id}",
        order_id=str(data.get("id") or event.id),
        customer_key=event.customer_key,
        ordered_at=at,
        amount=amount,
        currency=str(data.get("currency") or ""),
        message_id=message.message_id,
        run_id=message.run_id,
        flow_id=message.flow_id,
        step=message.step,
        split=message.split,
        arm=message.arm,
        channel=message.channel,
        touch=touch,
        touched_at=when,
    )
    if not uow.messages.attribute(credited):
        return
    micros = int(amount * MICROS)
    uow.messages.count(_key(message, _day(at), credited.currency), {"orders": 1, "revenue_micros": micros})
    if message.converted_at is None:
        _store(uow, message, message.evolve(converted_at=at))


MARKS = (  # report counter -> the message's time that says it happened
    ("delivered", "delivered_at"),
    ("opened", "opened_at"),
    ("opened_human", "human_opened_at"),
    ("clicked", "clicked_at"),
    ("unsubscribed", "unsubscribed_at"),
    ("bounced", "bounced_at"),
    ("complained", "complained_at"),
    ("converted", "converted_at"),
)


def _day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


def _key(message: Message, day: str | None = None, currency: str = "") -> FigureKey:
    day = day or _day(message.sent_at)
    return FigureKey(
        message.flow_id, message.step, message.split or "", message.arm or "", message.channel, day, currency
    )


def _store(uow: UnitOfWork, old: Message | None, new: Message) -> None:
    """Write a message and count what changed in the report's counters, in the same unit of
    work: a new recipient, each first delivery, open, click... and, per split arm, a run's first
    message there and its conversion (counted on the day of that first message)."""
    deltas = {"recipients": 1} if old is None else {}
    for name, column in MARKS:
        if getattr(new, column) is not None and (old is None or getattr(old, column) is None):
            deltas[name] = 1
    if new.split is not None:
        same = [
            m
            for m in uow.messages.for_run(new.run_id)
            if m.message_id != new.message_id and m.split == new.split and m.arm == new.arm
        ]
        first = min([new, *same], key=lambda m: (m.sent_at, m.message_id))
        arm = FigureKey(new.flow_id, "", new.split, new.arm or "", "", _day(first.sent_at))
        changes = {"arm_runs": 1} if old is None and not same else {}
        if "converted" in deltas and not any(m.converted_at for m in same):
            changes["arm_converted"] = 1
        if changes:
            uow.messages.count(arm, changes)
    uow.messages.put(new)
    if deltas:
        uow.messages.count(_key(new), deltas)


def _touches(message: Message, machine_opens: bool) -> Iterator[tuple[str, datetime]]:
    opened = message.last_open_at if machine_opens else message.last_human_open_at
    for touch, when in (
        ("sent", message.sent_at),
        ("delivered", message.delivered_at),
        ("opened", opened),
        ("clicked", message.last_click_at),
    ):
        if when is not None:
            yield touch, when


def _money(value: Any) -> Decimal:
    """An order total as an exact Decimal, quantized to micro-units (what the report sums)."""
    try:
        amount = Decimal(str(value)) if value is not None and not isinstance(value, bool) else Decimal(0)
    except InvalidOperation:
        return Decimal(0)
    if not amount.is_finite() or abs(amount) >= Decimal(10) ** 12:
        return Decimal(0)
    return (amount * MICROS).to_integral_value() / MICROS
