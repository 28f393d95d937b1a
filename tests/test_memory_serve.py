"""Customer memory through serve's path (inbox → engine on SQLite and PostgreSQL) and through
dry-run, on the same timeline: the same profiles, order history and segment changes."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from flowrun.config import Secret
from flowrun.dryrun.session import play
from flowrun.profile.record import from_dict
from flowrun.state import codec
from flowrun.state.runs import SqlRuns
from flowrun.state.schema import cursors, order_history, profiles, refund_history, runs, segment_members
from tests.conftest import ROOT
from tests.fakestores import FakeShopify
from tests.node import Node
from tests.servekit import Clock, Sink, config, database_params, database_url

ORDER = json.loads((ROOT / "examples/events/shopify/orders/create.json").read_bytes())
SEGMENT = "segment: high-value\nrule:\n  spent: {over: 500, currency: USD, within: 90d}\n"
FLOW = """
flow: tell
on: [segment.entered, segment.exited]
steps:
  - http:
      url: "SINK/segment"
      json: {change: "{{ event.type }}", segment: "{{ segment.name }}", who: "{{ customer.email }}",
             spent: "{{ profile.spend_90d.USD | default(0) }}", orders: "{{ profile.orders_count }}"}
"""
# (offset, order id, total): 300 + 250.50 passes $500 at +10d; the first order leaves the
# 90-day window at +90d; the replay of order 2 (orders/paid) counts once.
ORDERS = [(timedelta(0), 1, "300.00", "orders/create"), (timedelta(days=10), 2, "250.50", "orders/create"),
          (timedelta(days=11), 2, "250.50", "orders/paid")]  # fmt: skip
HORIZON = timedelta(days=120)


@pytest.fixture(params=database_params())
def db(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _body(n: int, total: str) -> bytes:
    return json.dumps({**ORDER, "id": 7000 + n, "order_number": 3000 + n, "total_price": total}).encode()


def _project(tmp_path: Path, sink_url: str) -> Path:
    folder = tmp_path / "flows"
    (folder / "segments").mkdir(parents=True)
    (folder / "segments" / "high-value.yaml").write_text(SEGMENT)
    (folder / "tell.yaml").write_text(FLOW.replace("SINK", sink_url))
    return folder


def _serve(tmp_path: Path, db: str, folder: Path) -> tuple[Node, list[tuple[Any, ...]]]:
    clock = Clock()
    start = clock.now
    node = Node(config(tmp_path, database_url(db, tmp_path), folder), clock)
    for n, (offset, order_id, total, topic) in enumerate(ORDERS):
        node.run_until(start + offset)
        node.deliver("shopify", topic, _body(order_id, total), f"d-{n}")
        node.settle()
    node.run_until(start + HORIZON)
    with node.db.connect() as conn:
        ids = conn.execute(select(runs.c.id).where(runs.c.flow_id == "tell")).scalars().all()
        found = [SqlRuns(conn, None, None).get(run_id) for run_id in ids]
    changes = sorted(_change(r.started_at, _event(r.trigger)) for r in found if r is not None)
    return node, changes


def _told(orders: int, entered_spent: float, exited_spent: float) -> list[dict[str, Any]]:
    """What the `tell` flow posts when ada@example.com enters high-value, then leaves it."""
    who = {"segment": "high-value", "who": "ada@example.com", "orders": orders}
    return [
        {"change": "segment.entered", **who, "spent": entered_spent},
        {"change": "segment.exited", **who, "spent": exited_spent},
    ]


def _change(at: Any, event: dict[str, Any]) -> tuple[Any, ...]:
    return (at, event["type"], event["data"]["segment"]["name"], event["customer_key"])


def test_serve_keeps_profiles_history_and_segment_changes_as_dry_run_predicts(tmp_path: Path, db: str) -> None:
    with Sink() as sink:
        folder = _project(tmp_path, sink.url)
        node, served = _serve(tmp_path, db, folder)
        try:
            start = Clock().now
            assert served == [
                (start + timedelta(days=10), "segment.entered", "high-value", "email:ada@example.com"),
                (start + timedelta(days=90), "segment.exited", "high-value", "email:ada@example.com"),
            ]
            assert [json.loads(r["body"]) for r in sink.requests] == _told(2, 550.5, 250.5)
            with node.db.connect() as conn:
                history = conn.execute(select(order_history.c.order_id, order_history.c.total_e4)).all()
                [value] = conn.execute(select(profiles.c.value)).scalars().all()
                members = conn.execute(select(segment_members)).all()
                due = conn.execute(select(cursors.c.name).where(cursors.c.name.like("segment:%"))).all()
            assert sorted(history) == [("shopify:7001", 3000000), ("shopify:7002", 2505000)]
            profile = from_dict(codec.loads(value))
            assert profile.order_count == 2 and profile.spend == {"USD": Decimal("550.50")}
            assert profile.segments == () and members == [] and due == []  # nothing left to wait for
        finally:
            node.close()

    timeline = tmp_path / "timeline.yaml"
    entries = []
    for n, (offset, order_id, total, topic) in enumerate(ORDERS):
        event = tmp_path / f"order-{n}.json"
        event.write_bytes(_body(order_id, total))
        entries.append(
            {"at": f"{int(offset.total_seconds())}s", "event": str(event), "source": "shopify", "topic": topic}
        )
    timeline.write_text(json.dumps(entries))
    played = play([folder], [], timeline, None, None, Clock().now.isoformat(), "120d")
    predicted = sorted(_change(r.started_at, _event(r.trigger)) for r in played.result.runs if r.flow_id == "tell")
    assert predicted == served


def _event(event: Any) -> dict[str, Any]:
    return {"type": event.type, "data": event.data, "customer_key": event.customer_key}


REFUND = json.loads((ROOT / "examples/events/shopify/refunds/create.json").read_bytes())  # 66.95 of order 121.74
# dry-run's copy carries the store's answer to the order lookup that serve makes itself
LOOKED_UP = json.loads((ROOT / "examples/scenarios/shopify/refunds/create/enriched.json").read_bytes())
SMALL_SPENDER = "segment: high-value\nrule:\n  spent: {over: 100, currency: USD, within: 90d}\n"
# the order, its refund a day later (its customer looked up), and the store's retry of the
# refund under a new delivery id
REFUNDED = [(timedelta(0), "orders/create", ORDER, "d-order"),
            (timedelta(days=1), "refunds/create", REFUND, "d-refund"),
            (timedelta(days=2), "refunds/create", REFUND, "d-refund-again")]  # fmt: skip


def test_a_refund_lowers_spend_and_the_order_history_once_in_serve_as_dry_run_predicts(tmp_path: Path, db: str) -> None:
    shop = FakeShopify("shpat_refund", [ORDER])
    with Sink() as sink, contextlib.closing(shop):
        folder = _project(tmp_path, sink.url)
        (folder / "segments" / "high-value.yaml").write_text(SMALL_SPENDER)
        clock = Clock()
        start = clock.now
        cfg = config(tmp_path, database_url(db, tmp_path), folder)
        token = {"api_token": Secret("shpat_refund", "T"), "api_url": shop.api}
        node = Node(replace(cfg, sources={**cfg.sources, "shopify": {**cfg.sources["shopify"], **token}}), clock)
        try:
            for offset, topic, body, delivery in REFUNDED:
                node.run_until(start + offset)
                node.deliver("shopify", topic, json.dumps(body).encode(), delivery)
                node.settle()
            node.run_until(start + timedelta(days=3))
            assert [json.loads(r["body"]) for r in sink.requests] == _told(1, 121.74, 54.79)
            with node.db.connect() as conn:
                history = conn.execute(select(order_history.c.order_id, order_history.c.total_e4)).all()
                refunds = conn.execute(select(refund_history.c.refund_id, refund_history.c.amount_e4)).all()
                [value] = conn.execute(select(profiles.c.value)).scalars().all()
            assert history == [(f"shopify:{ORDER['id']}", 547900)]  # 121.74 - 66.95, once
            assert refunds == [(f"shopify:refund:{REFUND['id']}", 669500)]
            assert from_dict(codec.loads(value)).spend == {"USD": Decimal("54.79")}
            with node.db.connect() as conn:
                ids = conn.execute(select(runs.c.id).where(runs.c.flow_id == "tell")).scalars().all()
                found = [SqlRuns(conn, None, None).get(run_id) for run_id in ids]
            served = sorted(_change(r.started_at, _event(r.trigger)) for r in found if r is not None)
        finally:
            node.close()

    entries = []
    for n, (offset, topic, body, _) in enumerate(REFUNDED):
        event = tmp_path / f"event-{n}.json"
        event.write_text(json.dumps(LOOKED_UP if body is REFUND else body))
        entries.append(
            {"at": f"{int(offset.total_seconds())}s", "event": str(event), "source": "shopify", "topic": topic}
        )
    timeline = tmp_path / "timeline.yaml"
    timeline.write_text(json.dumps(entries))
    played = play([folder], [], timeline, None, None, start.isoformat(), "3d")
    predicted = sorted(_change(r.started_at, _event(r.trigger)) for r in played.result.runs if r.flow_id == "tell")
    assert predicted == served and [c[1] for c in served] == ["segment.entered", "segment.exited"]
