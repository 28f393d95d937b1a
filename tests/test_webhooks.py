"""The webhook port against the real ASGI app and a real SQLite inbox."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.datastructures import Headers

from flowrun.serve.health import Report
from flowrun.serve.ingest import InboxWriter, SetAside
from flowrun.serve.metrics import Metrics
from flowrun.serve.webhooks import build_app
from flowrun.state.database import make_engine
from flowrun.state.migrations import migrate
from flowrun.state.schema import inbox
from tests.conftest import ROOT
from tests.servekit import config, shopify_headers, woo_headers

ORDER = (ROOT / "examples/events/shopify/orders/create.json").read_bytes()
WOO = (ROOT / "examples/events/woocommerce/order.created.json").read_bytes()


@pytest.fixture
def port(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(engine)
    writer = InboxWriter(engine)
    writer.start()
    metrics = Metrics()

    async def healthy() -> Report:
        return Report(())

    app = build_app(
        config(tmp_path, "unused", ROOT / "flows", max_body_bytes=64 * 1024), writer.store, metrics, healthy
    )

    async def post(path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://flowrun") as client:
            return await client.post(path, content=body, headers=headers)

    def call(path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return asyncio.run(post(path, body, headers))

    def rows() -> list[dict[str, Any]]:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(inbox)).mappings()]

    yield call, rows, metrics, app
    writer.stop()
    engine.dispose()


def test_signed_shopify_webhook_is_stored_before_the_answer(port) -> None:
    call, rows, metrics, _ = port
    response = call("/webhooks/shopify", ORDER, shopify_headers(ORDER, "orders/create", "d-1"))
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "delivery_id": "d-1"}
    [row] = rows()
    assert (row["source"], row["topic"], row["delivery_id"], row["body"]) == ("shopify", "orders/create", "d-1", ORDER)
    assert metrics.value("flowrun_events_accepted_total", source="shopify") == 1


def test_header_names_are_case_insensitive_and_the_old_secret_works(port) -> None:
    call, rows, _, _ = port
    headers = {k.lower(): v for k, v in shopify_headers(ORDER, "orders/create", "d-2", secret="shpss_old").items()}
    assert call("/webhooks/shopify", ORDER, headers).status_code == 200
    assert len(rows()) == 1


def test_replayed_delivery_is_deduplicated(port) -> None:
    call, rows, _, _ = port
    headers = shopify_headers(ORDER, "orders/create", "same")
    assert call("/webhooks/shopify", ORDER, headers).json()["status"] == "accepted"
    assert call("/webhooks/shopify", ORDER, headers).json()["status"] == "duplicate"
    assert len(rows()) == 1


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("forged", 401, "bad_signature"),
        ("missing", 401, "missing_signature"),
        ("truncated", 401, "bad_signature"),
        ("not_json", 400, "not_json"),
        ("unknown_topic", 400, "unknown_topic"),
        ("too_large", 413, "too_large"),
        ("unknown_source", 404, "unknown_source"),
    ],
)
def test_bad_input_gets_a_4xx_and_is_not_stored(port, caplog, case: str, status: int, reason: str) -> None:
    call, rows, metrics, _ = port
    body, path = ORDER, "/webhooks/shopify"
    headers = shopify_headers(ORDER, "orders/create", "d")
    if case == "forged":
        headers["X-Shopify-Hmac-Sha256"] = shopify_headers(ORDER, "orders/create", "d", secret="wrong")[
            "X-Shopify-Hmac-Sha256"
        ]
    elif case == "missing":
        del headers["X-Shopify-Hmac-Sha256"]
    elif case == "truncated":
        body = ORDER[:100]
    elif case == "not_json":
        body = b"<xml>nope</xml>"
        headers = shopify_headers(body, "orders/create", "d")
    elif case == "unknown_topic":
        headers = shopify_headers(ORDER, "orders/exploded", "d")
    elif case == "too_large":
        body = b"{" + b" " * (70 * 1024) + b"}"
        headers = shopify_headers(body, "orders/create", "d")
    elif case == "unknown_source":
        path = "/webhooks/magento"
    response = call(path, body, headers)
    assert response.status_code == status
    assert response.json()["error"] == reason
    assert rows() == []
    assert any(reason in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert metrics.total("flowrun_events_rejected_total") == 1


def test_woocommerce_delivery_and_creation_ping(port) -> None:
    call, rows, _, _ = port
    ping = call("/webhooks/woocommerce", b"webhook_id=17", {"Content-Type": "application/x-www-form-urlencoded"})
    assert (ping.status_code, ping.text) == (200, "ok")
    assert rows() == []
    response = call("/webhooks/woocommerce", WOO, woo_headers(WOO, "order.created", "wc-1"))
    assert response.status_code == 200
    assert [r["delivery_id"] for r in rows()] == ["wc-1"]
    forged = call(
        "/webhooks/woocommerce", WOO, {**woo_headers(WOO, "order.created", "wc-2"), "X-WC-Webhook-Signature": "AAAA"}
    )
    assert forged.status_code == 401


def test_generic_signed_json_with_replay_window(port) -> None:
    import hashlib
    import hmac
    import time

    call, rows, _, _ = port
    body = json.dumps(
        {"type": "custom.product_viewed", "id": "v-1", "data": {"customer": {"email": "a@example.com"}}}
    ).encode()
    stamp = str(int(time.time()))
    signature = hmac.new(b"custom_secret", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    ok = call("/webhooks/custom", body, {"X-Flowrun-Signature": signature, "X-Flowrun-Timestamp": stamp})
    assert ok.status_code == 200 and ok.json()["delivery_id"] == "v-1"
    old = str(int(time.time()) - 3600)
    stale_sig = hmac.new(b"custom_secret", old.encode() + b"." + body, hashlib.sha256).hexdigest()
    replay = call("/webhooks/custom", body, {"X-Flowrun-Signature": stale_sig, "X-Flowrun-Timestamp": old})
    assert replay.status_code == 401 and "window" in replay.json()["detail"]
    assert len(rows()) == 1


def test_healthz_and_metrics(port) -> None:
    _, _, metrics, app = port

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://flowrun") as client:
            return await client.get(path)

    assert asyncio.run(get("/healthz")).json() == {"status": "ok", "parts": {}}
    metrics.count("flowrun_events_rejected_total", source="shopify", reason="bad_signature")
    text = asyncio.run(get("/metrics")).text
    assert 'flowrun_events_rejected_total{reason="bad_signature",source="shopify"} 1' in text
    assert "flowrun_timer_lateness_seconds_max 0" in text


def test_a_database_locked_for_a_moment_delays_the_answer_but_loses_nothing(port, tmp_path: Path) -> None:
    call, rows, _, _ = port
    # another process's view: a connection outside flowrun's in-process writer lock
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.3, other.execute, args=("COMMIT",))
    released.start()
    try:
        response = call("/webhooks/shopify", ORDER, shopify_headers(ORDER, "orders/create", "locked-1"))
    finally:
        released.join()
        other.close()
    assert response.status_code == 200, response.text
    assert [r["delivery_id"] for r in rows()] == ["locked-1"]


def test_a_bug_behind_the_webhook_is_a_logged_500_and_other_methods_a_405(tmp_path: Path, caplog) -> None:
    async def broken_store(row: dict[str, Any]) -> bool:
        raise ValueError("a bug")

    async def healthy() -> Report:
        return Report(())

    app = build_app(config(tmp_path, "unused", ROOT / "flows"), broken_store, Metrics(), healthy)

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://flowrun") as client:
            posted = await client.post(
                "/webhooks/shopify", content=ORDER, headers=shopify_headers(ORDER, "orders/create", "b-1")
            )
            return posted, await client.get("/webhooks/shopify")

    posted, got = asyncio.run(scenario())
    assert (posted.status_code, posted.json()["error"]) == (500, "internal")
    assert "webhook handler failed" in caplog.text and "ValueError: a bug" in caplog.text
    assert got.status_code == 405


def test_the_writer_thread_checkpoints_the_wal_the_event_loop_fills(tmp_path: Path, monkeypatch) -> None:
    from flowrun.serve import ingest

    monkeypatch.setattr(ingest, "CHECKPOINT_BYTES", 5 * len(ORDER))
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(engine)
    writer = InboxWriter(engine)
    writer.start()
    before = (tmp_path / "state.db").stat().st_size

    async def turn() -> None:
        await asyncio.wait_for(asyncio.gather(*(writer.store(_row(f"w-{n}")) for n in range(6))), timeout=10)

    asyncio.run(turn())
    writer.stop()  # the thread checkpoints before it exits
    assert writer.checkpoints == 1
    assert (tmp_path / "state.db").stat().st_size > before + 6 * len(ORDER)  # the rows left the WAL
    engine.dispose()


def test_a_topic_nothing_reads_is_stored_ignored_and_wakes_nobody(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(engine)
    wakes: list[int] = []
    writer = InboxWriter(engine, lambda: wakes.append(1), SetAside(frozenset({("shopify", "orders/create")})))

    async def turn(*rows: dict[str, Any]) -> list[bool]:
        return list(await asyncio.wait_for(asyncio.gather(*(writer.store(r) for r in rows)), timeout=10))

    assert asyncio.run(turn(_row("o-1"), _row("o-2"))) == [True, True]
    assert wakes == []  # the engine has nothing to do
    assert asyncio.run(turn(_row("o-3"), _row("c-1", "customers/create"))) == [True, True]
    assert wakes == [1]
    assert _statuses(engine) == {"o-1": "ignored", "o-2": "ignored", "o-3": "ignored", "c-1": "pending"}
    writer.stop()
    engine.dispose()


def test_after_a_reload_what_was_set_aside_since_is_pending_again_and_new_rows_are_read(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(engine)
    woken = threading.Event()
    writer = InboxWriter(
        engine, woken.set, SetAside(frozenset({("shopify", "orders/create"), ("shopify", "orders/paid")}))
    )

    async def store(*rows: dict[str, Any]) -> None:
        await asyncio.wait_for(asyncio.gather(*(writer.store(r) for r in rows)), timeout=10)

    asyncio.run(store(_row("before")))  # row 1: accepted before the reload began
    asyncio.run(store(_row("between"), _row("paid", "orders/paid")))  # rows 2-3: after, under the old set
    writer.set_aside(SetAside(frozenset({("shopify", "orders/paid")}), since=1))  # a flow on orders now
    writer.start()
    assert woken.wait(timeout=10)  # the thread applied the new set: the engine is woken for "between"
    asyncio.run(store(_row("after")))
    assert _statuses(engine) == {"before": "ignored", "between": "pending", "paid": "ignored", "after": "pending"}
    writer.stop()
    engine.dispose()


def _statuses(engine: Any) -> dict[str, str]:
    with engine.connect() as conn:
        return {d: s for d, s in conn.execute(select(inbox.c.delivery_id, inbox.c.status))}


def _row(delivery: str, topic: str = "orders/create") -> dict[str, Any]:
    from datetime import UTC, datetime

    return {
        "source": "shopify",
        "topic": topic,
        "body": ORDER,
        "delivery_id": delivery,
        "received_at": datetime.now(UTC),
        "triggered_at": None,
    }


def test_with_the_lock_free_a_turns_webhooks_are_committed_on_the_event_loop_together(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(engine)
    writer = InboxWriter(engine)  # its thread never started: only the event loop can write

    async def three() -> list[bool]:
        stores = asyncio.gather(*(writer.store(_row(f"turn-{n}")) for n in range(3)))
        return list(await asyncio.wait_for(stores, timeout=10))

    assert asyncio.run(three()) == [True, True, True]
    assert (writer.batches, writer.rows) == (1, 3)
    assert asyncio.run(three()) == [False, False, False]  # the same deliveries again: stored once
    writer.stop()
    engine.dispose()


def test_with_the_lock_held_elsewhere_the_event_loop_does_not_wait_and_the_thread_stores_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine, other = make_engine(url), make_engine(url)  # two engines: two processes' locks
    migrate(engine)
    writer = InboxWriter(engine)
    writer.start()
    held, loop_turned, released_by_loop = threading.Event(), threading.Event(), []

    def hold() -> None:
        with other.begin():  # the write lock (flock and BEGIN IMMEDIATE) until the loop has turned
            held.set()
            released_by_loop.append(loop_turned.wait(timeout=10))

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(timeout=10)

    async def scenario() -> bool:
        stored = asyncio.ensure_future(writer.store(_row("held-1")))
        for _ in range(20):  # a loop blocked on the lock would not get here before the holder gave up
            await asyncio.sleep(0)
        assert not stored.done()
        loop_turned.set()
        return await asyncio.wait_for(stored, timeout=10)

    assert asyncio.run(scenario()) is True
    holder.join()
    assert released_by_loop == [True]
    with engine.connect() as conn:
        assert [r.delivery_id for r in conn.execute(select(inbox))] == ["held-1"]
    writer.stop()
    engine.dispose()
    other.dispose()


def _asgi(app: Any, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://flowrun") as client:
            return await client.post(path, content=body, headers=headers)

    return asyncio.run(post())


def test_shopifys_unprefixed_headers_are_accepted_like_the_x_shopify_ones(port, fixtures: Path) -> None:
    call, rows, _, _ = port
    unprefixed = {k.removeprefix("X-"): v for k, v in shopify_headers(ORDER, "orders/create", "u-1").items()}
    assert "Shopify-Hmac-Sha256" in unprefixed and "X-Shopify-Topic" not in unprefixed
    unprefixed["Shopify-Triggered-At"] = "2026-01-05T09:00:00Z"
    response = call("/webhooks/shopify", ORDER, unprefixed)
    assert response.status_code == 200, response.text
    [row] = rows()
    assert (row["topic"], row["delivery_id"], row["triggered_at"]) == ("orders/create", "u-1", "2026-01-05T09:00:00Z")
    # the published vector's headers, without their X- prefix, verify too
    vectors = json.loads((fixtures / "shopify/hmac/vectors.json").read_text())["vectors"]
    vector = next(v for v in vectors if v["id"].startswith("shopify-api-ruby/registry-empty-object"))
    from flowrun.serve.signatures import valid_base64
    from flowrun.serve.webhooks import _shopify_header

    headers = Headers({k.removeprefix("x-"): v for k, v in vector["headers"].items()})
    assert valid_base64(vector["body"].encode(), _shopify_header(headers, "hmac-sha256"), [vector["secret"]])
    assert _shopify_header(headers, "shop-domain") == "shop.myshopify.com"


def test_a_delivery_for_another_shop_is_refused(tmp_path: Path) -> None:
    """An app's secret signs every shop's deliveries: only the configured shop's are taken."""
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(engine)
    writer = InboxWriter(engine)
    settings = config(tmp_path, "unused", ROOT / "flows").sources
    shop = {**settings, "shopify": {**settings["shopify"], "shop": "knit-and-co.myshopify.com"}}

    async def healthy() -> Report:
        return Report(())

    app = build_app(config(tmp_path, "unused", ROOT / "flows", sources=shop), writer.store, Metrics(), healthy)
    signed = shopify_headers(ORDER, "orders/create", "s-1")
    other = _asgi(app, "/webhooks/shopify", ORDER, {**signed, "X-Shopify-Shop-Domain": "rival.myshopify.com"})
    assert (other.status_code, other.json()["error"]) == (403, "wrong_shop")
    missing = _asgi(app, "/webhooks/shopify", ORDER, signed)
    assert (missing.status_code, missing.json()["error"]) == (403, "wrong_shop")
    ours = _asgi(app, "/webhooks/shopify", ORDER, {**signed, "Shopify-Shop-Domain": "Knit-and-Co.myshopify.com"})
    assert ours.status_code == 200, ours.text
    writer.stop()
    engine.dispose()


def test_a_dead_inbox_writer_answers_every_waiting_webhook_503_and_stops_the_port(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine, other = make_engine(url), make_engine(url)
    migrate(engine)
    died = threading.Event()

    def broken_wake_up() -> None:  # a bug after a commit, on the writer's thread
        raise RuntimeError("a bug in the wake-up")

    writer = InboxWriter(engine, on_commit=broken_wake_up, on_death=died.set)
    writer.start()
    app = build_app(config(tmp_path, "unused", ROOT / "flows"), writer.store, Metrics(), _healthy)

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://flowrun") as client:

            async def post(n: int) -> int:
                body = ORDER.replace(b'"id"', b'"n": %d, "id"' % n, 1)
                headers = shopify_headers(body, "orders/create", f"dead-{n}")
                return (await client.post("/webhooks/shopify", content=body, headers=headers)).status_code

            with other.begin():  # the lock is held elsewhere: the batch goes to the writer thread
                first = asyncio.ensure_future(post(1))
                for _ in range(20):
                    await asyncio.sleep(0)
            answers = [await asyncio.wait_for(first, timeout=30)]
            assert await asyncio.to_thread(died.wait, 30)
            answers.append(await asyncio.wait_for(post(2), timeout=30))  # after the death: at once
            return answers

    answers = asyncio.run(scenario())
    assert answers[1] == 503
    assert not writer.heartbeat.state(writer.clock()).ok
    writer.stop()
    engine.dispose()
    other.dispose()


async def _healthy() -> Report:
    return Report(())


def test_metrics_cannot_be_written_through_the_webhook_path(port) -> None:
    call, _, metrics, app = port
    for evil in ("evil%22%7D%201%0Aflowrun_runs%7Bstatus%3D%22x", "a%0Ab", "x" * 300, "magento"):
        assert call(f"/webhooks/{evil}", ORDER, {}).status_code == 404

    async def get() -> str:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://flowrun") as client:
            return (await client.get("/metrics")).text

    text = asyncio.run(get())
    assert 'flowrun_events_rejected_total{reason="unknown_source",source="unknown"} 4.0' in text
    assert "evil" not in text and "magento" not in text and "xxxx" not in text
    metrics.count("flowrun_actions_sent_total", 123456789, action="email")
    metrics.count("flowrun_actions_sent_total", action="not-an-action")
    text = asyncio.run(get())
    assert 'flowrun_actions_sent_total{action="email"} 1.23456789e+08' in text  # every digit kept
    assert 'flowrun_actions_sent_total{action="unknown"} 1.0' in text
