"""What only the leader does: schedule ticks and store pollers. Both only put rows in the inbox,
where the owner of each row's partition applies them like any delivery: a tick's delivery id is
its flow and time, so a tick stored twice (a new leader catching up) starts one run.

A schedule's next due tick is a cursor (`schedule:<flow>`). Ticks missed while no leader ran
follow the flow's `missed:`: `skip` resumes at the next tick, `run_once` stores one catch-up tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from flowrun.config import Config
from flowrun.durations import parse_duration
from flowrun.flow.model import Flow, ScheduleTrigger
from flowrun.runtime.records import event_key, partition_of
from flowrun.runtime.runtime import schedule_tick
from flowrun.serve.engine.sources import SCHEDULE_TOPIC
from flowrun.serve.partition import delivery_part
from flowrun.serve.pollers import (
    OVERLAP,
    Polled,
    PollError,
    next_cursor,
    poll_shopify_checkouts,
    poll_shopify_inventory,
    poll_shopify_orders,
    poll_woocommerce_orders,
)
from flowrun.state import codec
from flowrun.state import inbox as inbox_rows
from flowrun.state.cursors import get_cursor, set_cursor

log = logging.getLogger("flowrun.leader")
Poll = Callable[[datetime], Awaitable[list[Polled]]]


def next_tick(trigger: ScheduleTrigger, after: datetime) -> datetime:
    if trigger.cron is not None:
        return trigger.cron.next_after(after)
    assert trigger.every is not None
    return after + trigger.every


def tick_schedules(db: Engine, flows: Sequence[Flow], now: datetime) -> int:
    """Store the ticks due now; the number stored."""
    stored = 0
    for flow in flows:
        trigger = flow.trigger
        if not isinstance(trigger, ScheduleTrigger):
            continue
        name = f"schedule:{flow.id}"
        with db.begin() as conn:
            due = get_cursor(conn, name)
            if due is None:  # first start: the next tick from now
                set_cursor(conn, name, next_tick(trigger, now))
                continue
            if due > now:
                continue
            following = next_tick(trigger, due)
            while following <= now:  # ticks that fell due while no leader ran
                following = next_tick(trigger, following)
            if trigger.missed == "run_once" or next_tick(trigger, due) > now:
                stored += _store_tick(conn, flow, due, now)
            set_cursor(conn, name, following)
    return stored


def _store_tick(conn: Connection, flow: Flow, at: datetime, now: datetime) -> int:
    row = {
        "source": "flowrun",
        "topic": SCHEDULE_TOPIC + flow.id,
        "delivery_id": f"schedule:{flow.id}:{at.isoformat()}",
        "received_at": codec.utc(now),
        "triggered_at": None,
        "body": codec.dumps({"at": at}).encode(),
        "part": partition_of(event_key(schedule_tick(flow, at))),
    }
    return sum(inbox_rows.insert_rows(conn, [row]))


def store_polled(db: Engine, name: str, polled: list[Polled], cursor: datetime, now: datetime) -> int:
    """Polled bodies into the inbox and the cursor forward, in one transaction."""
    rows = [
        {
            "source": p.source,
            "topic": p.topic,
            "body": p.body,
            "delivery_id": p.delivery_id,
            "received_at": codec.utc(now),
            "triggered_at": None,
            "part": delivery_part(p.source, p.topic, p.body, p.delivery_id),
        }
        for p in polled
    ]
    with db.begin() as conn:
        stored = inbox_rows.insert_rows(conn, rows)
        set_cursor(conn, name, cursor)
    return sum(stored)


def pollers(config: Config, http: Any) -> list[tuple[str, timedelta, Poll]]:
    jobs: list[tuple[str, timedelta, Poll]] = []
    shop = config.sources.get("shopify") or {}
    every = shop.get("poll") or {}
    if every and shop.get("api_token") is not None:
        api = shop.get("api_url") or f"https://{shop['shop']}/admin/api/{shop.get('api_version', '2025-07')}"
        token = shop["api_token"].reveal()
        locations = list(shop.get("location_ids") or [])
        shopify_polls: dict[str, Poll] = {
            "orders": lambda since: poll_shopify_orders(http, api, token, since, asyncio.sleep),
            "checkouts": lambda since: poll_shopify_checkouts(http, api, token, since, asyncio.sleep),
            "inventory": lambda since: poll_shopify_inventory(http, api, token, locations, since, asyncio.sleep),
        }
        for what, poll in shopify_polls.items():
            if what in every:
                jobs.append((f"poll:shopify:{what}", parse_duration(every[what]), poll))
    woo = config.sources.get("woocommerce") or {}
    if (woo.get("poll") or {}).get("orders") and woo.get("consumer_key") is not None:
        key, secret = woo["consumer_key"].reveal(), woo["consumer_secret"].reveal()
        jobs.append(
            (
                "poll:woocommerce:orders",
                parse_duration(woo["poll"]["orders"]),
                lambda since: poll_woocommerce_orders(http, woo["url"], key, secret, since, asyncio.sleep),
            )
        )
    return jobs


async def poll_once(db: Engine, name: str, poll: Poll, clock: Callable[[], datetime]) -> int:
    """One poll: from the cursor (minus the overlap) to now; the number of new rows."""

    def read_cursor() -> Any:
        with db.connect() as conn:
            return get_cursor(conn, name)

    cursor = await asyncio.to_thread(read_cursor)
    now = clock()
    if cursor is None:  # first run: start from now, do not replay history
        await asyncio.to_thread(store_polled, db, name, [], now, now)
        return 0
    try:
        polled = await poll(cursor - OVERLAP)
    except PollError as exc:
        log.warning("%s failed, will try again: %s", name, exc)
        raise
    return await asyncio.to_thread(store_polled, db, name, polled, next_cursor(cursor, polled), now)
