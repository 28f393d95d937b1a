"""Customer memory at shop scale, printed (not asserted). Issue 16's performance items.

Builds a SQLite state database directly in SQL: BENCH_CUSTOMERS customers (100,000) with
BENCH_ORDERS orders (1,000,000) spread over the 400 days before T, their profiles and the
due checks of 10 segments (computed by the real profile and segment code). Then measures:

- the profile update cost per event: order.created events applied by the runtime through
  serve's SQL unit of work, with customer memory on (10 segments) and off (the baseline,
  same flow, same events shape), in µs per event and as a share of the event's total apply;
- database size (bytes per order);
- backfill rate: orders/s from a local fake Shopify (tests/fakestores.py, Link pages),
  against a baseline of only paging through the same store;
- a day of time-driven segment changes: serve's engine loop on the built database, its test
  clock stepped through the day after T in BENCH_STEP_S (10 s) steps; how long the day's exits
  take to process, and the delay from each due moment to the commit of its segment event
  (p50/p99/max; the step bounds the lateness from above: serve wakes at the next due time).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from common import report
from sqlalchemy import func, insert, select

from flowrun.dryrun.session import load_all_flows
from flowrun.events import Event
from flowrun.profile.record import OrderRow, Profile, ordered, to_dict
from flowrun.runtime import inputs as i
from flowrun.runtime.records import Check, partition_of
from flowrun.runtime.runtime import Runtime
from flowrun.runtime.settings import Settings
from flowrun.segments.loader import segments_for
from flowrun.segments.model import membership
from flowrun.serve.cluster import Cluster
from flowrun.serve.engine.loop import EngineLoop
from flowrun.state import codec
from flowrun.state.checks import check_row
from flowrun.state.database import make_engine, reading
from flowrun.state.migrations import migrate
from flowrun.state.profiles import order_history_row
from flowrun.state.schema import cursors, order_history, profiles, runs, segment_members
from flowrun.state.uow import SqlUnitOfWork, commit

CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "100000"))
ORDERS = int(os.environ.get("BENCH_ORDERS", "1000000"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "2000"))
BACKFILL = int(os.environ.get("BENCH_BACKFILL", "20000"))
STEP = timedelta(seconds=int(os.environ.get("BENCH_STEP_S", "10")))
T = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SEGMENTS = {
    "vip-30": "spent: {over: 300, currency: USD, within: 30d}",
    "vip-90": "spent: {over: 500, currency: USD, within: 90d}",
    "vip-365": "spent: {over: 1500, currency: USD, within: 365d}",
    "repeat-30": "orders: {at_least: 2, within: 30d}",
    "repeat-90": "orders: {at_least: 3, within: 90d}",
    "lapsed-90": "last_order: {before: 90d}",
    "lapsed-180": "last_order: {before: 180d}",
    "recent-30": "last_order: {after: 30d}",
    "wool": "bought: {product: Wool}",
    "quiet-vip": "all: [{spent: {over: 500, currency: USD, within: 365d}}, {not_engaged: {within: 60d}}]",
}
FLOWS = {
    "tell.yaml": "flow: tell\non: [segment.entered, segment.exited]\nsteps:\n  - log: {message: '{{ segment.name }}'}\n",  # noqa: E501
    "thanks.yaml": "flow: thanks\non: order.created\nsteps:\n  - log: {message: 'thanks {{ customer.email }}'}\n",
}


def project(folder: Path, with_segments: bool, tell: bool = True) -> Path:
    """`tell`: a flow on segment.entered/exited (the day of exits); without it the changes are
    emitted but start nothing, so an order's apply measures the memory itself."""
    flows = folder / "flows"
    (flows / "segments").mkdir(parents=True)
    for name, text in FLOWS.items():
        if name == "thanks.yaml" or (with_segments and tell):  # off: nothing reads memory
            (flows / name).write_text(text)
    if with_segments:
        for name, rule in SEGMENTS.items():
            (flows / "segments" / f"{name}.yaml").write_text(f"segment: {name}\nrule:\n  {rule}\n")
    return flows


def build(url: str, flows: Path) -> Settings:
    """Profiles, history, members and due checks, as the runtime would have left them at T."""
    settings = Settings(segments=segments_for([flows]))
    db = make_engine(url)
    migrate(db)
    rng = random.Random(16)
    per = [ORDERS // CUSTOMERS + (1 if n < ORDERS % CUSTOMERS else 0) for n in range(CUSTOMERS)]
    seq = 0
    started = time.perf_counter()
    batch: dict[str, list[dict[str, object]]] = {"orders": [], "profiles": [], "members": [], "checks": []}
    for n in range(CUSTOMERS):
        key = f"email:c{n}@example.com"
        p = Profile(key, customer={"email": f"c{n}@example.com"})
        for _ in range(per[n]):
            at = T - timedelta(seconds=rng.randrange(400 * 86400))
            total = Decimal(rng.randrange(500, 30000)) / 100
            row = OrderRow(f"shopify:{seq}", key, at, total, "USD", ("Wool" if seq % 3 == 0 else "Needles",))
            seq += 1
            p = ordered(p, row)
            batch["orders"].append(order_history_row(row))
        names, due = membership(settings.segments, p, T, settings.checkout_idle)
        p = p.evolve(segments=tuple(names), due_at=due, last_seen_at=p.last_order_at)
        batch["profiles"].append(
            {"customer_key": key, "value": codec.dumps(to_dict(p)), "part": partition_of(key), "updated_at": T}
        )
        batch["members"] += [{"segment": s, "customer_key": key, "since": T} for s in names]
        if due is not None:
            batch["checks"].append(check_row(Check(f"segment:{key}", None, partition_of(key), due)))
        if len(batch["orders"]) >= 50_000 or n == CUSTOMERS - 1:
            with db.begin() as conn:
                for table, name in (
                    (order_history, "orders"),
                    (profiles, "profiles"),
                    (segment_members, "members"),
                    (cursors, "checks"),
                ):
                    if batch[name]:
                        conn.execute(insert(table), batch[name])
                    batch[name] = []
    report(
        "build: customers, orders, profiles and due checks",
        time.perf_counter() - started,
        "s",
        f"{CUSTOMERS:,} customers, {ORDERS:,} orders",
    )
    db.dispose()
    return settings


def order_event(n: int, customer: int) -> Event:
    email = f"c{customer}@example.com"
    data = {
        "customer": {"email": email},
        "order": {
            "id": f"new-{n}",
            "total_price": "42.50",
            "currency": "USD",
            "line_items": [{"title": "Wool", "quantity": 1}],
        },
    }
    return Event("order.created", "shopify", f"ev-{n}", T, data, customer_key=f"email:{email}")


def apply_events(url: str, off_flows: Path, on_flows: Path, settings: Settings) -> dict[str, list[float]]:
    """order.created applied and committed one at a time, as serve's engine does for a quiet
    shop; memory off and on alternate event by event so drift hits both alike. Seconds each:
    the runtime's apply (reads, decisions) and the commit (one write transaction)."""
    db = make_engine(url)
    runtimes = {
        "off": Runtime(load_all_flows([off_flows]), Settings()),
        "on": Runtime(load_all_flows([on_flows]), settings),
    }
    rng = random.Random(7)
    times: dict[str, list[float]] = {"off apply": [], "off commit": [], "on apply": [], "on commit": []}
    for n in range(EVENTS * 2):
        kind = "off" if n % 2 else "on"
        unit = i.EventIn(order_event(n, rng.randrange(CUSTOMERS)))
        with reading(db) as reader, reader.begin():
            uow = SqlUnitOfWork(reader, None, None, T)
            started = time.perf_counter()
            runtimes[kind].apply(uow, unit, T)
            applied = time.perf_counter()
        commit(db, uow)
        times[f"{kind} apply"].append(applied - started)
        times[f"{kind} commit"].append(time.perf_counter() - applied)
    db.dispose()
    return times


def backfill_rate(folder: Path) -> tuple[float, float]:
    import httpx

    from flowrun.backfill import Seeder, shopify_orders
    from tests.fakestores import FakeShopify

    stamp = lambda n: (T - timedelta(minutes=BACKFILL - n)).isoformat()  # noqa: E731
    orders = [
        {"id": 10**12 + n, "email": f"b{n % 5000}@example.com", "created_at": stamp(n), "updated_at": stamp(n),
         "total_price": "12.34", "currency": "USD", "financial_status": "paid",
         "customer": {"id": n % 5000, "email": f"b{n % 5000}@example.com"},
         "line_items": [{"title": "Wool", "quantity": 1, "price": "12.34"}]}
        for n in range(BACKFILL)
    ]  # fmt: skip
    fake = FakeShopify("t", orders)

    async def fetch_only() -> int:
        count = 0
        async with httpx.AsyncClient() as http:
            async for page in shopify_orders(http, fake.api, "t", None, asyncio.sleep):
                count += len(page)
        return count

    async def seed(seeder: Seeder) -> None:
        async with httpx.AsyncClient() as http:
            async for page in shopify_orders(http, fake.api, "t", None, asyncio.sleep):
                seeder.page("shopify", page)

    try:
        started = time.perf_counter()
        asyncio.run(fetch_only())
        paging = BACKFILL / (time.perf_counter() - started)
        db = make_engine(f"sqlite:///{folder / 'backfill.db'}")
        migrate(db)
        seeder = Seeder(db, Settings(segments=segments_for([folder / "with" / "flows"])), lambda: T)
        started = time.perf_counter()
        asyncio.run(seed(seeder))
        seeding = seeder.seeded.orders / (time.perf_counter() - started)
        db.dispose()
    finally:
        fake.close()
    return seeding, paging


def day_of_exits(url: str, flows: Path, settings: Settings) -> None:
    db = make_engine(url)
    with db.connect() as conn:
        query = select(cursors.c.due_at).where(cursors.c.due_at > T, cursors.c.due_at <= T + timedelta(days=1))
        pending = sorted(codec._aware(t) for (t,) in conn.execute(query))
    count = len(pending)
    clock_now = [T]
    cluster = Cluster(db, "engine", timedelta(seconds=30))
    cluster.join()
    loop = EngineLoop(db, load_all_flows([flows]), settings, lambda: clock_now[0], cluster)
    before = _count(db, runs)
    delays: list[float] = []
    busy = idle = 0.0
    while clock_now[0] < T + timedelta(days=1):
        clock_now[0] += STEP
        started = time.perf_counter()
        worked = False
        while loop.round():
            worked = True
        took = time.perf_counter() - started
        if worked:
            busy += took
        else:
            idle += took
        while pending and pending[0] <= clock_now[0]:
            delays.append((clock_now[0] - pending.pop(0)).total_seconds() + took)
    changes = _count(db, runs) - before
    with db.connect() as conn:  # the next day's, all at once: what catching up after downtime costs
        query = select(func.count()).where(cursors.c.due_at > clock_now[0], cursors.c.due_at <= T + timedelta(days=2))
        backlog = int(conn.execute(query.select_from(cursors)).scalar() or 0)
    clock_now[0] = T + timedelta(days=2)
    started = time.perf_counter()
    while loop.round():
        pass
    catch_up = time.perf_counter() - started
    cluster.leave()
    db.dispose()
    report("a day of segment checks falling due (10 segments)", count, "checks", f"{changes:,} segment events (runs)")
    report("  engine time on them (rounds that had work)", busy, "s", f"{busy / max(1, count) * 1e6:,.0f} µs a check")
    report("  baseline: the same rounds with nothing due", idle, "s", f"{int(86400 / STEP.total_seconds())} steps")
    report(
        "  the next day's checks at once (batches of 256)",
        catch_up,
        "s",
        f"{backlog:,} checks, {backlog / max(catch_up, 1e-9):,.0f}/s",
    )
    if len(delays) > 1:
        q = statistics.quantiles(delays, n=100)
        report(
            "  delay due -> segment event committed, p50", statistics.median(delays), "s", f"clock step {STEP.seconds}s"
        )
        report("  delay p99", q[98], "s", "goal < 60 s")
        report("  delay max", max(delays), "s")


def _count(db: object, table: object) -> int:
    with db.connect() as conn:  # type: ignore[attr-defined]
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)  # type: ignore[arg-type]


def main() -> None:
    print(f"customers {CUSTOMERS:,}, orders {ORDERS:,}, events {EVENTS:,}, backfill {BACKFILL:,} (env BENCH_*)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        on_flows, off_flows = project(folder / "with", True), project(folder / "without", False)
        quiet_flows = project(folder / "quiet", True, tell=False)
        url = f"sqlite:///{folder / 'state.db'}"
        settings = build(url, on_flows)
        size = (folder / "state.db").stat().st_size
        report("database size", size / 1e6, "MB", f"{size / max(1, ORDERS):,.0f} bytes per order")
        t = apply_events(url, off_flows, quiet_flows, settings)
        med = {k: statistics.median(v) * 1e6 for k, v in t.items()}
        off, on = med["off apply"] + med["off commit"], med["on apply"] + med["on commit"]
        report("order.created apply, memory off (baseline), median", med["off apply"], "µs/event")
        report("order.created apply, memory on (10 segments), median", med["on apply"], "µs/event")
        report("  commit (one write transaction), off / on", med["off commit"], "µs", f"on: {med['on commit']:,.0f} µs")
        extra = med["on apply"] - med["off apply"]
        report("  memory's share of the apply", extra, "µs/event", f"{extra / med['on apply']:.0%} of the apply")
        report("  memory's share of apply+commit", on - off, "µs/event", f"{(on - off) / on:.0%} of apply+commit")
        seeding, paging = backfill_rate(folder)
        report("backfill from a local fake Shopify", seeding, "orders/s", f"{BACKFILL:,} orders, 250 a page")
        report("  baseline: paging through the same store only", paging, "orders/s")
        day_of_exits(url, on_flows, settings)


if __name__ == "__main__":
    main()
