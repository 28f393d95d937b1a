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
                status, body, headers = store.handle(url.path, query, httpx.Headers(list(self.headers.items())))
                self._send(status, body, headers)

            def do_POST(self) -> None:
                self._write("POST")

            def do_PUT(self) -> None:
                self._write("PUT")

            def _write(self, method: str) -> None:
                url = urlparse(self.path)
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = {
                    "method": method,
                    "path": url.path,
                    "query": {k: v[-1] for k, v in parse_qs(url.query).items()},
                    "headers": httpx.Headers(list(self.headers.items())),
                    "body": raw,
                }
                store.requests.append(request)
                if store.failures:
                    status, headers = store.failures.pop(0)
                    self._send(status, {"errors": "scripted failure"}, headers)
                    return
                status, body, headers = store.write(request)
                self._send(status, body, headers)

            def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
                text = isinstance(body, str)  # Slack answers plain text ("ok", "invalid_payload")
                payload = body.encode() if text else json.dumps(body).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, path: str, query: dict[str, str], headers: Any) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        return 405, {"errors": "method not allowed"}, {}

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
        products: list[dict[str, Any]] | None = None,
        collections: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        self.token, self.page_cap, self.calls = token, page_cap, 0
        self.lists = {
            "orders": orders,
            "checkouts": checkouts or [],
            "inventory_levels": levels or [],
            "products": products or [],
        }
        self.collections = collections or {}  # custom_collections / smart_collections, each with product_ids
        self.items = {item["id"]: item for item in items or []}
        self.customers: dict[int, dict[str, Any]] = {}
        self.price_rules: dict[int, dict[str, Any]] = {}
        self.codes: dict[int, dict[str, Any]] = {}
        super().__init__()
        self.api = f"{self.url}/admin/api/2025-07"

    @property
    def orders(self) -> list[dict[str, Any]]:
        return self.lists["orders"]

    def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        """Customers (PUT tags), price rules and their discount codes (POST), as the Admin REST docs."""
        if request["headers"].get("X-Shopify-Access-Token") != self.token:
            return 401, {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}, {}
        path = request["path"].removeprefix("/admin/api/2025-07/").removesuffix(".json")
        body = json.loads(request["body"] or b"{}")
        parts = path.split("/")
        if parts[0] == "orders" and len(parts) == 2 and request["method"] == "PUT":
            order = next((o for o in self.orders if str(o["id"]) == parts[1]), None)
            if order is None:
                return 404, {"errors": "Not Found"}, {}
            order.update({k: v for k, v in body["order"].items() if k in ("note", "tags", "email")})
            return 200, {"order": order}, {}
        if path in ("inventory_levels/set", "inventory_levels/adjust") and request["method"] == "POST":
            return self._inventory(path.rsplit("/", 1)[1], body)
        if parts[0] == "customers" and len(parts) == 2 and request["method"] == "PUT":
            customer = self.customers.get(int(parts[1]))
            if customer is None:
                return 404, {"errors": "Not Found"}, {}
            customer.update(body["customer"])
            return 200, {"customer": customer}, {}
        if path == "price_rules" and request["method"] == "POST":
            rule = body["price_rule"]
            missing = [k for k in ("title", "target_type", "value_type", "value", "allocation_method") if k not in rule]
            if missing or not str(rule.get("value", "")).startswith("-"):
                return 422, {"errors": {k: ["can't be blank"] for k in missing} or {"value": ["must be negative"]}}, {}
            rule = {**rule, "id": 507328175 + len(self.price_rules)}
            self.price_rules[rule["id"]] = rule
            return 201, {"price_rule": rule}, {}
        if parts[0] == "price_rules" and parts[2:] == ["discount_codes"] and request["method"] == "POST":
            code = body["discount_code"]["code"]
            if any(c["code"] == code for c in self.codes.values()):
                return 422, {"errors": {"code": ["must be unique. Please try a different code."]}}, {}
            entry = {"id": 1054381139 + len(self.codes), "price_rule_id": int(parts[1]), "code": code}
            self.codes[entry["id"]] = entry
            return 201, {"discount_code": entry}, {}
        return 404, {"errors": "Not Found"}, {}

    def _inventory(self, verb: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        """inventory_levels/set (`available`) and /adjust (`available_adjustment`)."""
        field = "available" if verb == "set" else "available_adjustment"
        missing = [k for k in ("location_id", "inventory_item_id", field) if k not in body]
        if missing:
            return 422, {"errors": {k: ["is required"] for k in missing}}, {}
        level = next(
            (
                lv
                for lv in self.lists["inventory_levels"]
                if (lv["inventory_item_id"], lv["location_id"]) == (body["inventory_item_id"], body["location_id"])
            ),
            None,
        )
        if level is None:
            return 422, {"errors": ["Inventory item is not stocked at the location"]}, {}
        level["available"] = body[field] if verb == "set" else level["available"] + body[field]
        return 200, {"inventory_level": level}, {}

    def handle(self, path: str, query: dict[str, str], headers: Any) -> tuple[int, Any, dict[str, str]]:
        self.calls += 1
        limit_header = {"X-Shopify-Shop-Api-Call-Limit": f"{min(self.calls, 40)}/40"}
        if headers.get("X-Shopify-Access-Token") != self.token:
            return 401, {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}, {}
        name = path.removeprefix("/admin/api/2025-07/").removesuffix(".json")
        if name.startswith("orders/"):
            order = next((o for o in self.orders if str(o["id"]) == name.split("/")[1]), None)
            return (200, {"order": order}, {}) if order else (404, {"errors": "Not Found"}, {})
        if name.startswith("customers/"):
            customer = self.customers.get(int(name.split("/")[1]))
            return (200, {"customer": customer}, {}) if customer else (404, {"errors": "Not Found"}, {})
        if name == "discount_codes/lookup":
            found = next((c for c in self.codes.values() if c["code"] == query.get("code")), None)
            if found is None:
                return 404, {"errors": "Not Found"}, {}
            location = f"{self.api}/price_rules/{found['price_rule_id']}/discount_codes/{found['id']}.json"
            return 303, {}, {"Location": location}
        if name == "inventory_items":
            ids = [int(i) for i in query.get("ids", "").split(",") if i]
            if not ids or len(ids) > 100:
                return 422, {"errors": {"ids": ["must name 1 to 100 inventory items"]}}, limit_header
            return 200, {"inventory_items": [self.items[i] for i in ids if i in self.items]}, limit_header
        if name in ("custom_collections", "smart_collections"):  # `product_id`: those containing it
            product = int(query["product_id"]) if query.get("product_id") else None
            found = [c for c in self.collections.get(name, []) if product is None or product in c["product_ids"]]
            return 200, {name: [_fields(c, query) for c in found]}, limit_header
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
        ids = {int(i) for i in query.get("ids", "").split(",") if i}  # orders.json / products.json `ids`
        matching = sorted(
            (
                o
                for o in self.lists[name]
                if o["updated_at"] >= since
                and (not wanted or o.get("location_id", 0) in wanted)
                and (not ids or o.get("id") in ids)
            ),
            key=lambda o: (o["updated_at"], o.get("id", o.get("inventory_item_id"))),
        )
        page = matching[start : start + limit]
        links = []
        if start + limit < len(matching):
            token = base64.urlsafe_b64encode(json.dumps([start + limit, since, where]).encode()).decode()
            links.append(f'<{self.api}/{name}.json?{urlencode({"limit": limit, "page_info": token})}>; rel="next"')
        page = [_fields(o, query) for o in page]
        return 200, {name: page}, {**limit_header, **({"Link": ", ".join(links)} if links else {})}


def _fields(resource: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
    """Shopify's `fields=a,b`: only those top-level fields of each resource."""
    wanted = [f for f in query.get("fields", "").split(",") if f]
    return {k: v for k, v in resource.items() if k in wanted} if wanted else resource


def _woo_error(status: int, code: str, message: str) -> tuple[int, Any, dict[str, str]]:
    return status, {"code": code, "message": message, "data": {"status": status}}, {}


class FakeWooCommerce(FakeStore):
    """WooCommerce REST v3 as documented: basic auth with consumer key and secret;
    `GET orders` (modified_after, per_page at most 100, page; X-WP-Total, X-WP-TotalPages);
    order notes (`GET|POST orders/{id}/notes`, type any|customer|internal); coupons
    (`GET coupons?code=`, `POST coupons`, codes unique); products (`GET products?sku=`,
    `PUT products/{id}`); customers (`GET|PUT customers/{id}`, meta_data merged by key).
    Errors are `{code, message, data: {status}}`."""

    def __init__(self, key: str, secret: str, orders: list[dict[str, Any]]) -> None:
        self.auth = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
        self.orders = orders
        self.notes: dict[int, list[dict[str, Any]]] = {}
        self.coupons: list[dict[str, Any]] = []
        self.products: list[dict[str, Any]] = []
        self.customers: dict[int, dict[str, Any]] = {}
        super().__init__()

    def _unauthorised(self, headers: Any) -> tuple[int, Any, dict[str, str]] | None:
        if headers.get("Authorization") != self.auth:
            return _woo_error(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
        return None

    def handle(self, path: str, query: dict[str, str], headers: Any) -> tuple[int, Any, dict[str, str]]:
        if denied := self._unauthorised(headers):
            return denied
        parts = path.removeprefix("/wp-json/wc/v3/").split("/")
        if parts[0] == "orders" and parts[2:] == ["notes"]:
            if int(parts[1]) not in {o["id"] for o in self.orders}:
                return _woo_error(404, "woocommerce_rest_order_invalid_id", "Invalid order ID.")
            wanted = query.get("type", "any")
            notes = self.notes.get(int(parts[1]), [])
            return 200, [n for n in notes if wanted == "any" or n["customer_note"] == (wanted == "customer")], {}
        if parts == ["coupons"]:
            return 200, [c for c in self.coupons if "code" not in query or c["code"] == query["code"].lower()], {}
        if parts == ["products"]:
            skus = set(query.get("sku", "").split(",")) - {""}
            return 200, [p for p in self.products if not skus or p["sku"] in skus], {}
        if parts[0] == "customers" and len(parts) == 2:
            customer = self.customers.get(int(parts[1]))
            if customer is None:
                return _woo_error(404, "woocommerce_rest_invalid_id", "Invalid resource ID.")
            return 200, customer, {}
        if parts != ["orders"]:
            return _woo_error(404, "rest_no_route", "No route was found matching the URL and request method.")
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

    def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if denied := self._unauthorised(request["headers"]):
            return denied
        parts = request["path"].removeprefix("/wp-json/wc/v3/").split("/")
        body = json.loads(request["body"] or b"{}")
        method = request["method"]
        if method == "POST" and parts[0] == "orders" and parts[2:] == ["notes"]:
            if int(parts[1]) not in {o["id"] for o in self.orders}:
                return _woo_error(404, "woocommerce_rest_order_invalid_id", "Invalid order ID.")
            if not body.get("note"):
                return _woo_error(400, "rest_missing_callback_param", "Missing parameter(s): note")
            notes = self.notes.setdefault(int(parts[1]), [])
            note = {"id": 281 + len(notes), "note": body["note"], "customer_note": bool(body.get("customer_note"))}
            notes.append(note)
            return 201, note, {}
        if method == "POST" and parts == ["coupons"]:
            code = str(body.get("code", "")).lower()  # WooCommerce stores coupon codes in lower case
            if not code:
                return _woo_error(400, "woocommerce_rest_empty_coupon_code", "The coupon code cannot be empty.")
            if any(c["code"] == code for c in self.coupons):
                return _woo_error(400, "woocommerce_rest_coupon_code_already_exists", "The coupon code already exists")
            coupon = {**body, "id": 719 + len(self.coupons), "code": code}
            self.coupons.append(coupon)
            return 201, coupon, {}
        if method == "PUT" and parts[0] == "products" and len(parts) == 2:
            product = next((p for p in self.products if p["id"] == int(parts[1])), None)
            if product is None:
                return _woo_error(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")
            product.update({k: v for k, v in body.items() if k in ("stock_quantity", "manage_stock")})
            return 200, product, {}
        if method == "PUT" and parts[0] == "customers" and len(parts) == 2:
            customer = self.customers.get(int(parts[1]))
            if customer is None:
                return _woo_error(404, "woocommerce_rest_invalid_id", "Invalid resource ID.")
            meta = {m["key"]: m for m in customer.setdefault("meta_data", [])}
            for entry in body.get("meta_data", []):
                meta.setdefault(entry["key"], {"id": 900 + len(meta), "key": entry["key"]})["value"] = entry["value"]
            customer["meta_data"] = list(meta.values())
            return 200, customer, {}
        return _woo_error(404, "rest_no_route", "No route was found matching the URL and request method.")
