"""One flowrun instance in-process: its engine loop and its dispatcher on one database, driven
step by step with a clock the test moves. What `flowrun serve` runs in three processes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from flowrun.config import Config
from flowrun.dryrun.session import load_all_flows
from flowrun.flow.model import Flow
from flowrun.runtime.attempts import Settled
from flowrun.serve.cluster import Cluster
from flowrun.serve.dispatcher import claims
from flowrun.serve.dispatcher.deliver import http_client
from flowrun.serve.dispatcher.loop import Dispatcher
from flowrun.serve.engine.lookups import Lookups
from flowrun.serve.engine.loop import EngineLoop
from flowrun.serve.partition import delivery_part
from flowrun.state import codec
from flowrun.state import inbox as inbox_rows
from flowrun.state.database import make_engine
from flowrun.state.migrations import migrate
from flowrun.state.schema import instances, outbox, partitions
from tests.servekit import Clock


class Node:
    def __init__(self, config: Config, clock: Clock, flows: Sequence[Flow] | None = None) -> None:
        self.config, self.clock = config, clock
        self.db = make_engine(config.database)
        migrate(self.db)
        self.engine_cluster = Cluster(self.db, "engine", config.lease)
        self.engine_cluster.join()
        chosen = list(flows) if flows is not None else load_all_flows([config.flows], locale=config.locale)
        self.lookups = Lookups(self.db, config.sources, lambda: None)
        self.loop = EngineLoop(self.db, chosen, config.settings(), clock, self.engine_cluster, lookups=self.lookups)
        self.dispatch_cluster = Cluster(self.db, "dispatcher", config.lease)
        self.dispatch_cluster.join()
        self.answers: list[Settled] = []
        self.dispatcher = Dispatcher(
            self.db,
            clock,
            self.dispatch_cluster,
            concurrency=config.dispatch_concurrency,
            channels=config.channels,
            sources=config.sources,
            on_outcomes=self.answers.extend,
            rates=config.rate_limits,
        )
        self.taken_back = asyncio.run(self._take_back())

    async def _take_back(self) -> int:
        with self.db.begin() as conn:
            return len(claims.take_back(conn, self.dispatch_cluster.live(conn), self.clock()))

    def deliver(self, source: str, topic: str | None, body: bytes, delivery: str) -> bool:
        """As the webhook port stores it (in its customer's partition on PostgreSQL)."""
        shared = self.db.dialect.name == "postgresql"
        row = {
            "part": delivery_part(source, topic, body, delivery) if shared else 0,
            "source": source,
            "topic": topic,
            "body": body,
            "delivery_id": delivery,
            "received_at": codec.utc(self.clock()),
            "triggered_at": None,
        }
        with self.db.begin() as conn:
            [new] = inbox_rows.insert_rows(conn, [row])
        return new

    def step(self) -> bool:
        moved = self.loop.round()
        if self.lookups.wait_idle():  # the store's answers to lookups asked this round
            moved = True
        sent = asyncio.run(self._dispatch())
        return moved or bool(sent)

    async def _dispatch(self) -> int:
        http = http_client(8)
        try:
            return await self.dispatcher.once(http)
        finally:
            await http.aclose()

    def settle(self) -> None:
        """Engine and dispatcher until neither has anything due now."""
        for _ in range(50):
            if not self.step():
                return
        raise AssertionError("did not settle")

    def next_due(self) -> datetime | None:
        times = [self.loop.next_due()]
        with self.db.connect() as conn:
            times.append(claims.next_ready(conn))
        found = [t for t in times if t is not None]
        return min(found) if found else None

    def run_until(self, horizon: datetime) -> None:
        """Jump the clock to each next due time up to `horizon`, settling at each."""
        for _ in range(1000):
            self.settle()
            due = self.next_due()
            if due is None or due > horizon:
                self.clock.now = max(self.clock.now, horizon)
                self.settle()
                return
            self.clock.now = max(self.clock.now, due)
        raise AssertionError(f"stuck at {self.clock.now}")

    def count(self, table: Any, *where: Any) -> int:
        with self.db.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar() or 0)

    def outbox_rows(self) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            return [dict(r) for r in conn.execute(select(outbox).order_by(outbox.c.created_at)).mappings()]

    def close(self) -> None:
        """A clean stop: gives back its partitions and leaves."""
        self.engine_cluster.leave()
        self.dispatch_cluster.leave()
        self.db.dispose()

    def die(self) -> None:
        """A `kill -9`: nothing given back. Its heartbeats and leases are aged past the lease (the
        database's clock stands in for the seconds a real takeover waits)."""
        age = self.config.lease * 2
        ids = [self.engine_cluster.id, self.dispatch_cluster.id]
        with self.db.begin() as conn:
            conn.execute(
                update(instances).where(instances.c.id.in_(ids)).values(heartbeat_at=instances.c.heartbeat_at - age)
            )
            conn.execute(
                update(partitions).where(partitions.c.owner.in_(ids)).values(lease_until=partitions.c.lease_until - age)
            )
        self.db.dispose()
