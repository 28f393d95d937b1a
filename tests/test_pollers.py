"""Pollers against fake store servers on 127.0.0.1; sleeps are recorded, never slept."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from flowrun.serve.engine.leader import store_polled
from flowrun.serve.pollers import (
    OVERLAP,
    PollError,
    call_limit,
    next_cursor,
    parse_link,
    poll_shopify_checkouts,
    poll_shopify_inventory,
    poll_shopify_orders,
    poll_woocommerce_orders,
)
from flowrun.state.inbox import insert_rows
from flowrun.state.schema import inbox, runs
from tests.fakestores import FakeShopify, FakeWooCommerce
from tests.node import Node
from tests.servekit import Clock, config

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def shopify_order(n: int, updated: datetime, **extra: Any) -> dict[str, Any]:
    stamp = updated.isoformat()
    return {
        "id": 5764883652903181000 + n,
        "email": f"c{n}@example.com",
        "created_at": stamp,
        "updated_at": stamp,
        "total_price": "10.00",
        "currency": "USD",
        "financial_status": "pending",
        "customer": {"id": 7000 + n, "email": f"c{n}@example.com"},
        **extra,
    }


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class Sleeps:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


async def _shopify(fake: FakeShopify, token: str, since: datetime, sleep: Sleeps) -> list[Any]:
    async with httpx.AsyncClient() as http:
        return await poll_shopify_orders(http, fake.api, token, since, sleep)


def test_parse_link_against_the_published_cases(fixtures: Path) -> None:
    cases = json.loads((fixtures / "shopify/rest/pagination_and_rate_limit_cases.json").read_text())["pagination"]
    checked = 0
    for case in cases:
        header = next((v for k, v in case.get("response_headers", {}).items() if k.lower() == "link"), None)
        if header is None or "expect" not in case:
            continue
        links = parse_link(header)
        for ours, theirs in (("next", ("nextPage", "next")), ("previous", ("prevPage", "previous"))):
            want = next((case["expect"][k] for k in theirs if k in case["expect"]), None)
            assert (ours in links) == bool(want), case["id"]
            if want:
                token = (want.get("query") or want)["page_info"]
                assert f"page_info={token}" in links[ours], case["id"]
        checked += 1
    assert checked >= 2
    assert parse_link("garbage, <x>; nope") == {}
    assert call_limit("32/40") == (32, 40) and call_limit("junk") is None


def test_shopify_pages_through_429_and_500_with_the_documented_waits() -> None:
    orders = [shopify_order(n, T0 + timedelta(minutes=n)) for n in range(5)]
    fake = FakeShopify("shpat_test", orders, page_cap=2)
    fake.failures = [(429, {"Retry-After": "1.5"}), (500, {})]
    sleeps = Sleeps()
    try:
        polled = run(_shopify(fake, "shpat_test", T0 - timedelta(hours=1), sleeps))
    finally:
        fake.close()
    assert sleeps.seconds[:2] == [1.5, 4.0]  # Retry-After as given (fractional), then backoff
    assert [json.loads(p.body)["id"] for p in polled] == [o["id"] for o in orders]
    assert [p.topic for p in polled] == ["orders/create"] * 5
    first = fake.requests[2]  # after the two scripted failures
    assert first["query"]["status"] == "any" and first["query"]["limit"] == "250"
    assert first["headers"]["X-Shopify-Access-Token"] == "shpat_test"
    assert all(set(r["query"]) == {"limit", "page_info"} for r in fake.requests[3:])
    assert len(fake.requests) == 2 + 3  # three pages


def test_shopify_bad_token_is_an_error_not_a_retry_loop() -> None:
    fake = FakeShopify("right", [])
    try:
        with pytest.raises(PollError, match="HTTP 401"):
            run(_shopify(fake, "wrong", T0, Sleeps()))
    finally:
        fake.close()
    assert len(fake.requests) == 1


def test_shopify_paid_orders_also_poll_as_orders_paid() -> None:
    order = shopify_order(
        1, T0 + timedelta(minutes=10), financial_status="paid", created_at=(T0 - timedelta(days=1)).isoformat()
    )
    fake = FakeShopify("t", [order])
    try:
        polled = run(_shopify(fake, "t", T0 + timedelta(minutes=5), Sleeps()))
    finally:
        fake.close()
    assert [p.topic for p in polled] == ["orders/updated", "orders/paid"]


def test_woocommerce_pages_by_total_pages_with_basic_auth() -> None:
    orders = [
        {
            "id": n,
            "status": "processing",
            "total": "5.00",
            "currency": "EUR",
            "date_created_gmt": "2026-01-05T08:00:00",
            "date_modified_gmt": f"2026-01-05T09:{n // 60:02d}:{n % 60:02d}",
            "billing": {"email": f"w{n}@example.com"},
            "line_items": [],
        }
        for n in range(230)
    ]
    fake = FakeWooCommerce("ck_1", "cs_1", orders)
    sleeps = Sleeps()

    async def go() -> list[Any]:
        async with httpx.AsyncClient() as http:
            return await poll_woocommerce_orders(http, fake.url, "ck_1", "cs_1", T0 - timedelta(hours=2), sleeps)

    try:
        polled = run(go())
    finally:
        fake.close()
    assert len(polled) == 230 and len({p.delivery_id for p in polled}) == 230
    assert [r["query"]["page"] for r in fake.requests] == ["1", "2", "3"]
    assert {r["query"]["per_page"] for r in fake.requests} == {"100"}


def test_overlapping_polls_and_a_webhook_make_one_run_per_order(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows/f.yaml").write_text("flow: confirm\non: order.created\nsteps:\n  - log: {message: hi}\n")
    cfg = config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", tmp_path / "flows")
    node = Node(cfg, Clock(T0))
    engine = node.db
    orders = [shopify_order(n, T0 + timedelta(minutes=n)) for n in range(3)]
    fake = FakeShopify("t", orders)
    try:
        cursor = T0 - timedelta(minutes=1)
        for _ in range(2):  # the second poll overlaps the first completely
            polled = run(_shopify(fake, "t", cursor - OVERLAP, Sleeps()))
            store_polled(engine, "poll:shopify:orders", polled, next_cursor(cursor, polled), T0)
            cursor = next_cursor(cursor, polled)
    finally:
        fake.close()
    with engine.begin() as conn:  # the same order also arrives by webhook
        insert_rows(
            conn,
            [
                {
                    "source": "shopify",
                    "topic": "orders/create",
                    "delivery_id": "webhook-1",
                    "body": json.dumps(orders[0]).encode(),
                    "received_at": T0,
                    "triggered_at": None,
                }
            ],
        )
    node.settle()
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(inbox)).scalar()
        started = conn.execute(select(func.count()).select_from(runs)).scalar()
    assert stored == 4  # three polled once (the overlap deduped), one webhook
    assert started == 3  # one run per order
    assert cursor == T0 + timedelta(minutes=2)
    node.close()


def test_shopify_abandoned_checkouts_poll_as_checkout_updates() -> None:
    checkouts = [
        {
            "id": 900 + n,
            "token": f"tok{n}",
            "email": f"c{n}@example.com",
            "updated_at": (T0 + timedelta(minutes=n)).isoformat(),
            "created_at": T0.isoformat(),
            "completed_at": None,
            "total_price": "20.00",
            "currency": "USD",
            "line_items": [],
        }
        for n in range(3)
    ]
    fake = FakeShopify("t", [], page_cap=2, checkouts=checkouts)

    async def go() -> list[Any]:
        async with httpx.AsyncClient() as http:
            return await poll_shopify_checkouts(http, fake.api, "t", T0 - timedelta(minutes=1), Sleeps())

    try:
        polled = run(go())
    finally:
        fake.close()
    assert [p.topic for p in polled] == ["checkouts/update"] * 3
    assert [json.loads(p.body)["token"] for p in polled] == ["tok0", "tok1", "tok2"]
    assert [r["path"] for r in fake.requests] == ["/admin/api/2025-07/checkouts.json"] * 2  # two pages
    assert next_cursor(T0, polled) == T0 + timedelta(minutes=2)


def test_shopify_inventory_levels_are_polled_per_location_with_their_skus() -> None:
    levels = [
        {
            "inventory_item_id": 808950810 + n,
            "location_id": 655441491 if n < 3 else 1,
            "available": n,
            "updated_at": (T0 + timedelta(minutes=n)).isoformat(),
        }
        for n in range(4)
    ]
    items = [{"id": 808950810 + n, "sku": f"SKU-{n}", "tracked": True} for n in range(4)]
    fake = FakeShopify("t", [], levels=levels, items=items)

    async def go() -> list[Any]:
        async with httpx.AsyncClient() as http:
            return await poll_shopify_inventory(http, fake.api, "t", [655441491], T0 - timedelta(minutes=1), Sleeps())

    try:
        polled = run(go())
    finally:
        fake.close()
    bodies = [json.loads(p.body) for p in polled]
    assert [(b["sku"], b["available"]) for b in bodies] == [("SKU-0", 0), ("SKU-1", 1), ("SKU-2", 2)]
    assert {p.topic for p in polled} == {"inventory_levels/update"}
    levels_call, items_call = fake.requests
    assert levels_call["query"]["location_ids"] == "655441491"
    assert items_call["path"].endswith("/inventory_items.json")
    assert items_call["query"]["ids"] == "808950810,808950811,808950812"


def test_link_headers_are_read_as_rfc_8288_allows_not_only_as_shopify_writes_them() -> None:
    """httpx's `response.links` reads parameters in any order and rel lists; the rel is cut at
    its closing quote (the published Shopify case trails junk after it)."""
    url = "https://shop.example/admin/api/2025-07/orders.json?limit=250&page_info=abc"
    assert parse_link(f'<{url}>; type="application/json"; rel="next"') == {"next": url}
    assert parse_link(f'<{url}>; rel="previous next"')["next"] == url
    assert parse_link(f"<{url}>; rel=next")["next"] == url
    assert parse_link(f'<{url}>; rel="next", This invalid info header will be ignored') == {"next": url}
