"""Hostile input at a real `flowrun serve`: what the generic endpoint may emit, bodies that
can never become events, values longer than a column, and /healthz when intake stalls."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from flowrun.state.database import make_engine
from flowrun.state.schema import runs
from tests.liveserve import T0, LiveServe, order
from tests.servekit import POSTGRES_URL, database_params, database_url

ORDERS_AND_IMPORTS = """
flow: confirm
on: [order.created, custom.imported]
steps:
  - log: {message: "confirm {{ customer.email }}"}
"""
PAID = """
flow: reward
on: order.paid
steps:
  - log: {message: "reward {{ customer.email }}"}
"""


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def serve(tmp_path: Path):  # type: ignore[no-untyped-def]
    service = LiveServe(tmp_path, _sqlite(tmp_path), {"confirm.yaml": ORDERS_AND_IMPORTS, "reward.yaml": PAID})
    service.start()
    yield service
    service.stop()


def test_the_generic_secret_cannot_mint_a_store_event(serve: LiveServe) -> None:
    paid = {
        "type": "order.paid",
        "id": "forged-1",
        "data": {"customer": {"email": "mallory@example.com"}, "order": {"id": "1", "total_price": 1000000}},
    }
    response = serve.post_custom(paid)
    assert (response.status_code, response.json()["error"]) == (400, "not_custom")
    claimed = serve.post_custom({**paid, "type": "custom.imported", "source": "shopify"})
    assert (claimed.status_code, claimed.json()["error"]) == (400, "reserved_source")
    assert serve.stored() == 0
    good = serve.post_custom({"type": "custom.imported", "id": "i-1", "data": {"customer": {"email": "a@b.co"}}})
    assert good.status_code == 200
    serve.wait_for(lambda: serve.count(select(runs)) == 1, "the custom event's run")
    assert serve.count(select(runs).where(runs.c.flow_id == "reward")) == 0


def test_a_custom_event_cannot_take_a_real_orders_event_id(serve: LiveServe) -> None:
    """Ids are scoped by source: a custom event with a Shopify order's event id starts its own
    run, and the real order's run still starts."""
    taken = "shopify:orders/create:1001"
    squatter = {"type": "custom.imported", "id": taken, "data": {"customer": {"email": "x@y.co"}}}
    assert serve.post_custom(squatter).status_code == 200
    serve.wait_for(lambda: serve.count(select(runs)) == 1, "the custom event's run")
    assert serve.post_shopify(order(1001), "d-1001").status_code == 200
    serve.wait_for(lambda: serve.count(select(runs)) == 2, "the real order's run")
    by_trigger = {r["customer_key"] for r in serve.rows(select(runs))}
    assert by_trigger == {"email:x@y.co", "email:c1001@example.com"}


HOSTILE_BODIES = {
    "nested 5,000 levels": (b"[" * 5000 + b"]" * 5000, "too_deep"),
    "nested objects 100 levels": (b'{"a":' * 100 + b"1" + b"}" * 100, "too_deep"),
    "an integer of 4,301 digits": (b'{"id": ' + b"9" * 4301 + b"}", "number_too_long"),
    "an array": (b"[1, 2, 3]", "not_an_object"),
    "null": (b"null", "not_an_object"),
    "a string": (b'"order"', "not_an_object"),
    "a number": (b"42", "not_an_object"),
    "not JSON": (b"\xff\xfe{", "not_json"),
}


def test_bodies_that_can_never_become_events_are_refused_with_a_4xx_and_stored_nowhere(serve: LiveServe) -> None:
    for name, (body, reason) in HOSTILE_BODIES.items():
        response = serve.post_shopify(body, f"hostile-{len(body)}")
        assert (response.status_code, response.json()["error"]) == (400, reason), name
        custom = serve.post_custom(None, raw=body)
        assert custom.status_code == 400, name
    assert serve.stored() == 0
    assert serve.post_shopify(order(1), "after").status_code == 200  # and the port goes on
    assert "Traceback" not in serve.tail()


@pytest.mark.parametrize("database", database_params())
def test_no_header_value_can_stop_intake(tmp_path: Path, database: str) -> None:
    """Unsigned headers longer than their column (or with a NUL) are refused one by one;
    intake goes on. On PostgreSQL a 300-character webhook id used to kill the inbox writer."""
    serve = LiveServe(tmp_path, database_url(database, tmp_path), {"confirm.yaml": ORDERS_AND_IMPORTS}).start()
    try:
        body = order(7)
        long_id = serve.post_shopify(body, "w" * 300)
        assert (long_id.status_code, long_id.json()["error"]) == (400, "bad_header")
        stamp = serve.post_shopify(body, "d-stamp", **{"X-Shopify-Triggered-At": "2026-01-05T09:00:00Z" + "0" * 80})
        assert stamp.status_code == 400
        nul = serve.post_custom({"type": "custom.imported", "id": "a\u0000b", "data": {}})
        assert (nul.status_code, nul.json()["error"]) == (400, "bad_header")
        long_type = serve.post_custom({"type": "custom." + "x" * 200, "data": {}})
        assert long_type.status_code == 400
        for n in range(20):
            assert serve.post_shopify(order(100 + n), f"d-{n}").status_code == 200
        assert serve.stored() == 20
        assert serve.health()[0] == 200
    finally:
        assert serve.stop() == 0


HEALTHY = {"status": "ok", "parts": {"inbox_writer": "idle", "database": "ok", "engine": "idle", "dispatcher": "idle"}}


def test_a_stalled_inbox_writer_turns_healthz_503_on_postgresql(tmp_path: Path) -> None:
    if not POSTGRES_URL:
        pytest.skip("needs FLOWRUN_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)")
    serve = LiveServe(tmp_path, database_url("postgresql", tmp_path), {"confirm.yaml": ORDERS_AND_IMPORTS}).start()
    blocker = make_engine(POSTGRES_URL)
    answers: list[int] = []
    try:
        assert serve.health() == (200, HEALTHY)
        with blocker.connect() as conn:
            locked = conn.begin()
            conn.execute(text("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE"))
            sender = threading.Thread(target=lambda: answers.append(serve.post_shopify(order(1), "d-1").status_code))
            sender.start()
            serve.wait_for(lambda: serve.health()[1]["parts"]["inbox_writer"] == "busy", "the writer to wait")
            assert serve.health()[0] == 200  # waiting, but not for long yet
            serve.set_time(T0 + timedelta(seconds=11))  # stall_after is 10 s by default
            status, report = serve.health()
            assert status == 503 and report["parts"]["inbox_writer"].startswith("no progress since"), report
            locked.rollback()
        sender.join(timeout=30)
        assert answers == [200]
        assert serve.health() == (200, HEALTHY)
    finally:
        blocker.dispose()
        assert serve.stop() == 0


def test_healthz_is_503_while_postgresql_takes_no_write_and_webhooks_are_not_acknowledged(tmp_path: Path) -> None:
    if not POSTGRES_URL:
        pytest.skip("needs FLOWRUN_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)")
    serve = LiveServe(tmp_path, database_url("postgresql", tmp_path), {"confirm.yaml": ORDERS_AND_IMPORTS}).start()
    admin = make_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")

    def read_only(on: bool) -> None:
        with admin.connect() as conn:
            conn.execute(text(f"ALTER SYSTEM SET default_transaction_read_only = {'on' if on else 'off'}"))
            conn.execute(text("SELECT pg_reload_conf()"))

    try:
        read_only(True)
        serve.wait_for(lambda: serve.health()[0] == 503, "/healthz to see the read-only database")
        assert "read-only" in serve.health()[1]["parts"]["database"]
        refused = serve.post_shopify(order(1), "d-ro")
        assert refused.status_code == 503  # not acknowledged: Shopify sends it again
        read_only(False)
        serve.wait_for(lambda: serve.health()[0] == 200, "/healthz to recover")
        assert serve.post_shopify(order(1), "d-ro").status_code == 200
    finally:
        read_only(False)
        admin.dispose()
        assert serve.stop() == 0
