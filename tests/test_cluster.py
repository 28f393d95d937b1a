"""Several instances on one PostgreSQL database, in-process: partitions are shared out and taken
over, a unit of work whose partition was taken is refused, an event crosses partitions to reach
waits with `where:`. (tests/test_instances.py does the same with real `flowrun serve` processes.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from flowrun.runtime.records import PARTITIONS, partition_of
from flowrun.serve.cluster import LeaseLost
from flowrun.state.schema import partitions, runs
from tests.conftest import ROOT
from tests.node import Node
from tests.servekit import Clock, Sink, config, database_params, database_url

pytestmark = pytest.mark.parametrize("db", [p for p in database_params() if p.id == "postgresql"])
ORDER = json.loads((ROOT / "examples/events/shopify/orders/create.json").read_bytes())
WAIT_THEN_POST = """
flow: wait-then-post
on: order.created
steps:
  - wait: 1h
  - http: {url: "SINK/hook", json: {order: "{{ order.number }}"}}
"""


def order(n: int) -> bytes:
    customer = {**ORDER["customer"], "id": 100 + n, "email": f"c{n}@example.com"}
    changed = {"id": 7000 + n, "order_number": 3000 + n, "email": customer["email"], "customer": customer}
    return json.dumps({**ORDER, **changed}).encode()


class Cluster:
    def __init__(self, tmp_path: Path, db: str, flow_text: str, sink: Sink) -> None:
        (tmp_path / "flows").mkdir(exist_ok=True)
        (tmp_path / "flows" / "f.yaml").write_text(flow_text.replace("SINK", sink.url))
        # Leases run on the database's clock: long enough that a slow machine settling these
        # nodes (which beat only when a test says) never loses one; die() ages them instead.
        self.config = replace(
            config(tmp_path, database_url(db, tmp_path), tmp_path / "flows"), lease=timedelta(minutes=10)
        )
        self.clock = Clock()
        self.nodes: list[Node] = []

    def add(self) -> Node:
        node = Node(self.config, self.clock)
        self.nodes.append(node)
        self.beat()
        return node

    def beat(self) -> None:
        """Every node beats twice: the first gives back what is over its share, the second takes."""
        for _ in range(2):
            for node in self.nodes:
                node.engine_cluster.beat()

    def settle(self) -> None:
        for _ in range(50):
            if not any([node.step() for node in self.nodes]):
                return
        raise AssertionError("did not settle")

    def deliver(self, via: Node, n: int) -> None:
        via.deliver("shopify", "orders/create", order(n), f"d-{n}")


@pytest.fixture
def cluster(tmp_path: Path, db: str) -> Iterator[Any]:
    made: list[Cluster] = []
    with Sink() as sink:

        def make(flow_text: str = WAIT_THEN_POST) -> Cluster:
            made.append(Cluster(tmp_path, db, flow_text, sink))
            return made[-1]

        make.sink = sink  # type: ignore[attr-defined]
        yield make
    for c in made:
        for node in c.nodes:
            node.db.dispose()


def owners(node: Node) -> dict[str | None, int]:
    with node.db.connect() as conn:
        return dict(conn.execute(select(partitions.c.owner, func.count()).group_by(partitions.c.owner)).all())


def test_partitions_are_shared_out_and_every_event_makes_one_run(cluster, db: str) -> None:
    c = cluster()
    a, b, d = c.add(), c.add(), c.add()
    counts = owners(a)
    assert sorted(counts.values()) == [21, 22, 22] or sorted(counts.values()) == [20, 22, 22]
    assert set(counts) == {a.engine_cluster.id, b.engine_cluster.id, d.engine_cluster.id}
    for n in range(60):
        c.deliver([a, b, d][n % 3], n)  # any instance accepts any webhook
    c.settle()
    with a.db.connect() as conn:
        made = conn.execute(select(runs.c.id, runs.c.part)).all()
    assert len(made) == 60
    for node in (a, b, d):  # each run was made by the owner of its partition
        owned = node.engine_cluster.owned or frozenset()
        assert owned and all(part in owned for _, part in made if part in owned)
    c.clock.advance(timedelta(hours=1))
    c.settle()
    assert len(cluster.sink.requests) == 60


def test_a_dead_instances_partitions_and_timers_are_taken_over(cluster, db: str) -> None:
    c = cluster()
    a, b = c.add(), c.add()
    for n in range(40):
        c.deliver(a, n)
    c.settle()
    b_parts = set(b.engine_cluster.owned or ())
    assert b_parts
    b.die()  # kill -9: its leases run out
    c.nodes.remove(b)
    c.beat()
    assert a.engine_cluster.owned == frozenset(range(PARTITIONS))
    c.clock.advance(timedelta(hours=1))
    c.settle()
    assert sorted(json.loads(r["body"])["order"] for r in cluster.sink.requests) == [str(3000 + n) for n in range(40)]


def test_a_unit_of_work_on_a_partition_taken_meanwhile_is_refused(cluster, db: str) -> None:
    c = cluster()
    a, b = c.add(), c.add()
    n = next(n for n in range(100) if partition_of(f"email:c{n}@example.com") in (b.engine_cluster.owned or ()))
    c.deliver(a, n)
    part = partition_of(f"email:c{n}@example.com")
    with a.db.begin() as conn:  # b is paused past its lease; a takes the partition
        conn.execute(update(partitions).where(partitions.c.part == part).values(owner=a.engine_cluster.id))
    with pytest.raises(LeaseLost):
        b.loop.round()
    assert part not in (b.engine_cluster.owned or ())
    a.engine_cluster._owned = a.engine_cluster._owned | {part}
    c.settle()
    assert a.count(runs) == 1


BACK_IN_STOCK = """
flow: back-in-stock
on: custom.notify_me
steps:
  - wait: {for: custom.restocked, where: "properties.sku == trigger.properties.sku", timeout: 30d}
  - http: {url: "SINK/back", json: {to: "{{ customer.email }}"}}
"""


def custom(kind: str, sku: str, email: str | None = None) -> bytes:
    data: dict[str, Any] = {"properties": {"sku": sku}}
    if email:
        data["customer"] = {"email": email}
    return json.dumps({"type": kind, "id": f"{kind}-{sku}-{email}", "data": data}).encode()


def test_an_event_reaches_waits_with_where_in_every_partition(cluster, db: str) -> None:
    c = cluster(BACK_IN_STOCK)
    a, b = c.add(), c.add()
    shoppers = [f"s{n}@example.com" for n in range(12)]
    spread = {partition_of(f"email:{s}") in (a.engine_cluster.owned or ()) for s in shoppers}
    assert spread == {True, False}  # waiting runs in both instances' partitions
    for s in shoppers:
        a.deliver("custom", None, custom("custom.notify_me", "SKU-1", s), f"n-{s}")
    c.settle()
    assert a.count(runs, runs.c.status == "awaiting_event") == 12
    b.deliver("custom", None, custom("custom.restocked", "SKU-1"), "r-1")
    c.settle()
    assert sorted(json.loads(r["body"])["to"] for r in cluster.sink.requests) == sorted(shoppers)
