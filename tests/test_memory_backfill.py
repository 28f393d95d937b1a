"""`flowrun backfill` against 127.0.0.1 stores that page as Shopify (Link page_info) and
WooCommerce (X-WP-TotalPages) document: history and profiles seeded, exact money, no flows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from flowrun.profile.record import from_dict
from flowrun.state import codec
from flowrun.state.database import make_engine
from flowrun.state.schema import cursors, order_history, profiles, runs, segment_members
from tests.fakestores import FakeShopify, FakeWooCommerce

T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
FLOW = "flow: thanks\non: [order.created, segment.entered]\nsteps:\n  - log: {message: hi}\n"
SEGMENT = "segment: big\nrule: {spent: {over: 30, currency: USD}}\n"


def _project(tmp_path: Path, source: str) -> Path:
    (tmp_path / "flows" / "segments").mkdir(parents=True)
    (tmp_path / "flows" / "thanks.yaml").write_text(FLOW)
    (tmp_path / "flows" / "segments" / "big.yaml").write_text(SEGMENT)
    file = tmp_path / "flowrun.yaml"
    file.write_text(f"database: sqlite:///{tmp_path / 'state.db'}\nflows: flows\nsources:\n{source}")
    return file


def _shopify_order(n: int) -> dict[str, Any]:
    stamp = (T0 + timedelta(hours=n)).isoformat()
    who = n % 20
    return {
        "id": 6000000000000000000 + n,
        "email": f"c{who}@example.com",
        "created_at": stamp,
        "updated_at": stamp,
        "total_price": "3.33",
        "currency": "USD",
        "financial_status": "paid",
        "customer": {"id": 9000 + who, "email": f"c{who}@example.com", "first_name": f"C{who}"},
        "line_items": [{"title": "Wool" if n % 2 else "Needles", "quantity": 1, "price": "3.33", "product_id": 1}],
    }


def _state(tmp_path: Path) -> dict[str, Any]:
    db = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with db.connect() as conn:
        found = {
            "history": conn.execute(select(func.count()).select_from(order_history)).scalar(),
            "revenue": conn.execute(select(func.sum(order_history.c.total_e4))).scalar(),
            "profiles": {
                k: from_dict(codec.loads(v)) for k, v in conn.execute(select(profiles.c.customer_key, profiles.c.value))
            },
            "runs": conn.execute(select(func.count()).select_from(runs)).scalar(),
            "members": conn.execute(select(func.count()).select_from(segment_members)).scalar(),
            "due": conn.execute(select(func.count()).select_from(cursors)).scalar(),
        }
    db.dispose()
    return found


def test_shopify_backfill_follows_link_pages_and_starts_no_flow(tmp_path: Path, cli: Any, monkeypatch: Any) -> None:
    fake = FakeShopify("shpat_backfill", [_shopify_order(n) for n in range(600)], page_cap=250)
    monkeypatch.setenv("SHOP_TOKEN", "shpat_backfill")
    try:
        config = _project(tmp_path, f"  shopify:\n    api_url: {fake.api}\n    api_token: {{env: SHOP_TOKEN}}\n")
        result = cli("backfill", "--source", "shopify", "-c", str(config))
        again = cli("backfill", "--source", "shopify", "-c", str(config))
    finally:
        fake.close()
    assert result.exit_code == 0, result.output
    assert "backfilled 600 order(s) of 20 customer(s) from shopify in 3 page(s)" in result.stdout
    assert again.exit_code == 0 and "backfilled 0 order(s)" in again.stdout and "600 already known" in again.stdout
    pages = [r["query"] for r in fake.requests if r["path"].endswith("/orders.json")]
    assert len(pages) == 6 and "page_info" in pages[1] and set(pages[1]) == {"limit", "page_info"}
    state = _state(tmp_path)
    assert state["history"] == 600 and state["revenue"] == 600 * 33300  # exact: 3.33 x 600 = 1998.00
    assert state["runs"] == 0  # a backfill is history: no order.created, no segment.entered runs
    ada = state["profiles"]["email:c0@example.com"]
    assert ada.order_count == 30 and ada.spend == {"USD": Decimal("99.90")}
    assert ada.first_order_at == T0 and ada.last_order_at == T0 + timedelta(hours=580)  # the store's times
    assert ada.products == ("Needles",) and ada.segments == ("big",)
    assert state["members"] == 20 and state["due"] == 0  # spend ever: nothing for time to change


def test_woocommerce_backfill_reads_every_total_page(tmp_path: Path, cli: Any) -> None:
    orders = [
        {
            "id": n + 1,  # WooCommerce ids start at 1
            "status": "processing",
            "total": "5.10",
            "currency": "EUR",
            "date_created_gmt": f"2026-01-0{1 + n // 100}T08:{n % 60:02d}:00",
            "date_modified_gmt": f"2026-01-05T09:{n // 60:02d}:{n % 60:02d}",
            "billing": {"email": f"w{n % 7}@example.com"},
            "line_items": [{"name": "Beans", "quantity": 1, "total": "5.10", "product_id": 3}],
        }
        for n in range(230)
    ]
    fake = FakeWooCommerce("ck_1", "cs_1", orders)
    try:
        keys = "    consumer_key: {env: WC_KEY}\n    consumer_secret: {env: WC_SECRET}\n"
        woo = f"  woocommerce:\n    url: {fake.url}\n{keys}"
        with pytest.MonkeyPatch.context() as env:
            env.setenv("WC_KEY", "ck_1")
            env.setenv("WC_SECRET", "cs_1")
            result = cli("backfill", "--source", "woocommerce", "-c", str(_project(tmp_path, woo)))
    finally:
        fake.close()
    assert result.exit_code == 0, result.output
    assert "backfilled 230 order(s) of 7 customer(s) from woocommerce in 3 page(s)" in result.stdout
    assert [r["query"]["page"] for r in fake.requests] == ["1", "2", "3"]
    state = _state(tmp_path)
    assert state["history"] == 230 and state["revenue"] == 230 * 51000 and state["runs"] == 0
    assert state["profiles"]["email:w0@example.com"].spend == {"EUR": Decimal("168.30")}  # 33 orders x 5.10


def test_backfill_refuses_a_source_it_cannot_read(tmp_path: Path, cli: Any) -> None:
    config = _project(tmp_path, "  custom: {secret: {env: NOPE_NOT_SET}}\n")
    result = cli("backfill", "--source", "magento", "-c", str(config))
    assert result.exit_code != 0
    assert "magento" in result.output or "NOPE_NOT_SET" in result.output


def test_segments_lists_sizes_and_members_as_text_and_csv(tmp_path: Path, cli: Any, monkeypatch: Any) -> None:
    fake = FakeShopify("shpat_backfill", [_shopify_order(n) for n in range(40)] + [_big(41)], page_cap=250)
    monkeypatch.setenv("SHOP_TOKEN", "shpat_backfill")
    try:
        config = _project(tmp_path, f"  shopify:\n    api_url: {fake.api}\n    api_token: {{env: SHOP_TOKEN}}\n")
        assert cli("backfill", "--source", "shopify", "-c", str(config)).exit_code == 0
    finally:
        fake.close()
    sizes = cli("segments", "-c", str(config))
    assert sizes.exit_code == 0
    assert sizes.stdout.splitlines()[1].split() == ["big", "1"]  # only the customer who spent over $30
    members = cli("segments", "big", "--csv", "-c", str(config))
    assert members.exit_code == 0
    assert members.stdout.splitlines() == [
        "customer_key,email,member_since,orders,spend",
        members.stdout.splitlines()[1],
    ]
    key, email, _, orders, spend = members.stdout.splitlines()[1].split(",")
    assert (key, email, orders, spend) == ("email:big@example.com", "big@example.com", "1", "USD 31.00")
    typo = cli("segments", "bgi", "-c", str(config))
    assert typo.exit_code != 0 and "no segment 'bgi'" in typo.output and "did you mean 'big'?" in typo.output


def _big(n: int) -> dict[str, Any]:
    order = _shopify_order(n)
    customer = {"id": 1, "email": "big@example.com"}
    return {**order, "email": "big@example.com", "total_price": "31.00", "customer": customer}
