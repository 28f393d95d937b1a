"""Facts a store's webhook lacks (a stock level's SKU, a refund's customer), looked up in the
store's API before the delivery is normalised (flowrun.events.enrich), by the engine that owns
its partition, outside any write transaction.

The engine's inbox source hands such a row here instead of applying it; this thread asks the
store and writes the answer to the row's `facts`; the next round applies the row with them. A
store that does not answer after the pollers' back-off leaves `{"failed": why}`: the row is
applied without (the looked-up fields stay null) rather than held for ever. The rows behind it
are not held meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine

from flowrun.errors import LookupFailedError
from flowrun.events.enrich import LOOKUPS, ShopifyAdmin, enrich
from flowrun.events.normalise import parse_json
from flowrun.events.values import ENRICHED
from flowrun.serve.partition import delivery_part
from flowrun.state import codec
from flowrun.state.schema import inbox

log = logging.getLogger("flowrun.lookups")
DEFAULT_LOOKUPS = ("inventory_item", "order")


def wanted(sources: Mapping[str, Any]) -> frozenset[str]:
    """The Shopify topics whose deliveries are looked up before they are applied."""
    shop = sources.get("shopify") or {}
    if shop.get("api_token") is None:
        return frozenset()
    kinds = set(shop.get("lookups") or DEFAULT_LOOKUPS)
    return frozenset(topic for topic, kind in LOOKUPS.items() if kind in kinds)


class Lookups:
    def __init__(self, db: Engine, sources: Mapping[str, Any], done: Callable[[], None]) -> None:
        self.db, self.sources, self.done = db, sources, done
        self.topics = wanted(sources)
        self._asked: set[int] = set()
        self._waiting: list[dict[str, Any] | None] = []  # asked before the thread's loop was up
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[dict[str, Any] | None] | None = None
        self._ready = threading.Lock()
        self._thread: threading.Thread | None = None

    def needs(self, row: Mapping[str, Any]) -> bool:
        return row["source"] == "shopify" and row["topic"] in self.topics and row.get("facts") is None

    def ask(self, row: Mapping[str, Any]) -> None:
        if row["seq"] in self._asked:
            return
        self._asked.add(row["seq"])
        if self._thread is None:
            self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="lookups", daemon=True)
            self._thread.start()
        self._put(dict(row))

    def stop(self) -> None:
        self._put(None)

    def _put(self, item: dict[str, Any] | None) -> None:
        # The queue is the thread loop's own, so no worker thread ever blocks on it (one blocked
        # in a get kept the interpreter from exiting).
        with self._ready:
            if self._loop is None or self._queue is None:
                self._waiting.append(item)
                return
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """For driving the engine step by step: wait until every lookup asked is answered;
        whether there were any."""
        if not self._asked:
            return False
        deadline = time.monotonic() + timeout
        while self._asked and time.monotonic() < deadline:
            time.sleep(0.01)
        return True

    async def _serve(self) -> None:
        from flowrun.serve.dispatcher.deliver import http_client

        http = http_client(4)
        admin = ShopifyAdmin.from_source(http, self.sources.get("shopify") or {})
        rows: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        with self._ready:
            self._loop, self._queue = asyncio.get_running_loop(), rows
            for item in self._waiting:
                rows.put_nowait(item)
            self._waiting.clear()
        try:
            while (row := await rows.get()) is not None:
                facts = await self._facts(admin, row)
                await asyncio.to_thread(self._store, row, facts)
                self.done()
        finally:
            await http.aclose()

    async def _facts(self, admin: ShopifyAdmin | None, row: Mapping[str, Any]) -> dict[str, Any]:
        try:
            body = await enrich(row["source"], row["topic"], parse_json(row["body"]), admin)
        except LookupFailedError as exc:
            log.warning("the store did not answer a lookup for inbox %s; applying it without: %s", row["seq"], exc)
            return {"failed": str(exc)[:500]}
        except Exception as exc:  # a body the normaliser will reject anyway
            return {"failed": f"{type(exc).__name__}: {exc}"[:500]}
        return dict(body.get(ENRICHED) or {}) if isinstance(body, dict) else {}

    def _store(self, row: Mapping[str, Any], facts: dict[str, Any]) -> None:
        """The facts; on PostgreSQL also the partition of the customer they name, so that the
        instance moving that customer's runs and profile applies it (this one may not own it)."""
        values: dict[str, Any] = {"facts": codec.dumps(facts)}
        if self.db.dialect.name == "postgresql":
            values["part"] = delivery_part(row["source"], row["topic"], row["body"], row["delivery_id"], facts)
        with self.db.begin() as conn:
            conn.execute(update(inbox).where(inbox.c.seq == row["seq"], inbox.c.facts.is_(None)).values(**values))
        self._asked.discard(row["seq"])
