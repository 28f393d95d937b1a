"""Fake-but-faithful store APIs on 127.0.0.1, written from Shopify's and WooCommerce's
public REST documentation: auth, filters, pagination headers, rate limiting, errors."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx


class _Server(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True


class FakeStore:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.failures: list[tuple[int, dict[str, str]]] = []  # scripted answers for the next requests
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                store.requests.append(
                    {"path": url.path, "query": query, "headers": httpx.Headers(list(self.headers.items()))}
                )
                if store.failures:
                    status, headers = store.failures.pop(0)
                    self._send(status, {"errors": "scripted failure"}, headers)
                    return
                status, body, headers = store.handle(url.path, query, dict(self.headers))
                self._send(status, body, headers)

            def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, path: str, query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeShopify(FakeStore):
    """Admin REST lists, as documented: X-Shopify-Access-Token; `orders.json` (status,
    updated_at_min), `checkouts.json` (abandoned checkouts, updated_at_min),
    `inventory_levels.json` (needs location_ids or inventory_item_ids; updated_at_min) and
    `inventory_items.json?ids=` (at most 100 ids). limit at most 250; cursor pagination by
    `page_info` in a `Link` header (a page_info request accepts only `limit` and `fields`);
    X-Shopify-Shop-Api-Call-Limit on every answer."""

    def __init__(
        self,
        token: str,
        orders: list[dict[str, Any]],
        page_cap: int = 250,
        checkouts: list[dict[str, Any]] | None = None,
        levels: list[dict[str, Any]] | None = None,
        items: list[dict[str, Any]] | None = None,
    ) -> None:
        self.token, self.page_cap, self.calls = token, page_cap, 0
        self.lists = {"orders": orders, "checkouts": checkouts or [], "inventory_levels": levels or []}
        self.items = {item["id"]: item for item in items or []}
        super().__init__()
        self.api = f"{self.url}/admin/api/2025-07"

    @property
    def orders(self) -> list[dict[str, Any]]:
        return self.lists["orders"]

    def handle(self, path: str, query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        self.calls += 1
        limit_header = {"X-Shopify-Shop-Api-Call-Limit": f"{min(self.calls, 40)}/40"}
        if headers.get("X-Shopify-Access-Token") != self.token:
            return 401, {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}, {}
        name = path.removeprefix("/admin/api/2025-07/").removesuffix(".json")
        if name == "inventory_items":
            ids = [int(i) for i in query.get("ids", "").split(",") if i]
            if not ids or len(ids) > 100:
                return 422, {"errors": {"ids": ["must name 1 to 100 inventory items"]}}, limit_header
            return 200, {"inventory_items": [self.items[i] for i in ids if i in self.items]}, limit_header
        if name not in self.lists:
            return 404, {"errors": "Not Found"}, {}
        limit = min(int(query.get("limit", 50)), 250, self.page_cap)
        if "page_info" in query:
            extra = set(query) - {"page_info", "limit", "fields"}
            if extra:
                return 400, {"errors": {"page_info": [f"cannot be combined with {sorted(extra)}"]}}, {}
            start, since, where = json.loads(base64.urlsafe_b64decode(query["page_info"]))
        else:
            if name == "inventory_levels" and not ({"location_ids", "inventory_item_ids"} & set(query)):
                return 422, {"errors": {"base": ["location_ids or inventory_item_ids is required"]}}, {}
            start, since, where = 0, query.get("updated_at_min", ""), query.get("location_ids", "")
        wanted = {int(i) for i in where.split(",") if i}
        matching = sorted(
            (
                o
                for o in self.lists[name]
                if o["updated_at"] >= since and (not wanted or o.get("location_id", 0) in wanted)
            ),
            key=lambda o: (o["updated_at"], o.get("id", o.get("inventory_item_id"))),
        )
        page = matching[start : start + limit]
        links = []
        if start + limit < len(matching):
            token = base64.urlsafe_b64encode(json.dumps([start + limit, since, where]).encode()).decode()
            links.append(f'<{self.api}/{name}.json?{urlencode({"limit": limit, "page_info": token})}>; rel="next"')
        return 200, {name: page}, {**limit_header, **({"Link": ", ".join(links)} if links else {})}


class FakeWooCommerce(FakeStore):
    """`GET /wp-json/wc/v3/orders`: basic auth with consumer key and secret, modified_after,
    per_page (max 100), page, X-WP-Total and X-WP-TotalPages."""

    def __init__(self, key: str, secret: str, orders: list[dict[str, Any]]) -> None:
        self.auth = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
        self.orders = orders
        super().__init__()

    def handle(self, path: str, query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if headers.get("Authorization") != self.auth:
            return (
                401,
                {
                    "code": "woocommerce_rest_cannot_view",
                    "message": "Sorry, you cannot list resources.",
                    "data": {"status": 401},
                },
                {},
            )
        per_page = int(query.get("per_page", 10))
        if per_page > 100:
            return 400, {"code": "rest_invalid_param", "message": "Invalid parameter(s): per_page"}, {}
        since = query.get("modified_after", "")
        matching = sorted(
            (o for o in self.orders if o["date_modified_gmt"] > since), key=lambda o: (o["date_modified_gmt"], o["id"])
        )
        pages = max(1, -(-len(matching) // per_page))
        page = int(query.get("page", 1))
        chunk = matching[(page - 1) * per_page : page * per_page]
        return 200, chunk, {"X-WP-Total": str(len(matching)), "X-WP-TotalPages": str(pages)}
