"""Each channel against its provider's documented behaviour on 127.0.0.1: what the peer
received, and how its errors surface (fail at once, or retry with Retry-After)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from flowrun.actions import REGISTRY
from flowrun.actions.base import DeliveryContext, PermanentError, RetryableError
from flowrun.config import Secret
from flowrun.serve.dispatcher.deliver import http_client
from tests.fakeproviders import FakeOneSignal, FakeSlack, FakeTwilio, FakeZendesk
from tests.fakestores import FakeStore

KEY = "r_0123456789abcdef0123/steps[0]"


def deliver(action: str, params: dict[str, Any], settings: dict[str, Any], key: str = KEY) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        http = http_client(4)
        try:
            ctx = DeliveryContext(http, settings, logging.getLogger("test"), 5.0)
            return await REGISTRY[action].deliver(params, key, ctx)
        finally:
            await http.aclose()

    return asyncio.run(go())


def test_push_goes_to_onesignal_by_external_id_with_an_idempotency_key() -> None:
    fake = FakeOneSignal("app-1", "os-key", subscribed={"cust-7"})
    settings = {"app_id": "app-1", "api_key": Secret("os-key", "K"), "api_url": fake.url}
    try:
        params = {"to": "cust-7", "title": "Back in stock", "body": "Your beanie is back", "url": "https://x.example/b"}
        first = deliver("push", params, settings)
        again = deliver("push", params, settings)  # a re-send after a crash: OneSignal drops it
        with pytest.raises(PermanentError, match=r"OneSignal sent nothing.*invalid_aliases"):
            deliver("push", {**params, "to": "nobody"}, settings, key="r_other/steps[0]")
    finally:
        fake.close()
    assert first == again
    [sent] = fake.notifications
    assert sent["include_aliases"] == {"external_id": ["cust-7"]} and sent["target_channel"] == "push"
    assert (sent["headings"], sent["contents"], sent["url"]) == (
        {"en": "Back in stock"},
        {"en": "Your beanie is back"},
        "https://x.example/b",
    )


def test_zendesk_ticket_with_token_auth_and_errors_surfaced() -> None:
    fake = FakeZendesk("agent@shop.example", "zd-token")
    settings = {
        "subdomain": "shop",
        "email": "agent@shop.example",
        "api_token": Secret("zd-token", "Z"),
        "api_url": fake.url,
    }
    try:
        made = deliver(
            "support_ticket",
            {"subject": "Return #1042", "body": "Wrong size", "requester": "ada@example.com", "tags": ["return"]},
            settings,
        )
        with pytest.raises(PermanentError, match="Zendesk HTTP 422: RecordInvalid: Record validation errors"):
            deliver("support_ticket", {"subject": "x", "body": ""}, settings)
        fake.failures = [(429, {"Retry-After": "7"})]
        with pytest.raises(RetryableError) as limited:
            deliver("support_ticket", {"subject": "x", "body": "y"}, settings)
    finally:
        fake.close()
    assert made == {"id": "35436", "url": "https://shop.zendesk.com/agent/tickets/35436"}
    assert fake.tickets[0]["requester"] == {"email": "ada@example.com"} and fake.idempotency_keys == [KEY]
    assert limited.value.retry_after == 7.0


def test_twilio_errors_fail_at_once_with_their_code_and_bad_numbers_never_leave() -> None:
    fake = FakeTwilio("tw-token")
    settings = {
        "account_sid": FakeTwilio.SID,
        "auth_token": Secret("tw-token", "T"),
        "from": "+14155550100",
        "api_url": fake.url,
    }
    try:
        with pytest.raises(PermanentError, match=r"error 21211: The 'To' number \+15005550001 is not a valid"):
            deliver("sms", {"to": "+15005550001", "text": "hi"}, settings)
        with pytest.raises(PermanentError, match=r"E\.164"):
            deliver("sms", {"to": "0155 123", "text": "hi"}, settings)
        with pytest.raises(PermanentError, match="error 20003: Authenticate"):
            deliver("sms", {"to": "+14155550123", "text": "hi"}, {**settings, "auth_token": Secret("wrong", "T")})
    finally:
        fake.close()
    assert fake.sent == []


def test_slack_rate_limit_retries_after_and_bad_payload_fails() -> None:
    fake = FakeSlack()
    settings = {"webhook_url": Secret(fake.hook, "S")}
    try:
        fake.failures = [(429, {"Retry-After": "30"})]
        with pytest.raises(RetryableError) as limited:
            deliver("slack", {"text": "hello"}, settings)
        with pytest.raises(PermanentError, match="Slack HTTP 400: no_text"):
            deliver("slack", {"text": ""}, settings)
        deliver("slack", {"text": "hello"}, settings)
    finally:
        fake.close()
    assert limited.value.retry_after == 30.0
    assert fake.posts == [{"text": "hello"}]


class LoyaltyService(FakeStore):
    """An outside loyalty service as flowrun documents its push: JSON POST, bearer token,
    Idempotency-Key; a repeated key answers the first result without applying it again."""

    def __init__(self) -> None:
        self.applied: dict[str, dict[str, Any]] = {}
        super().__init__()

    def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if request["headers"].get("Authorization") != "Bearer loyal-key":
            return 401, {"error": "unauthorised"}, {}
        key = request["headers"]["Idempotency-Key"]
        self.applied.setdefault(key, json.loads(request["body"]))
        return 200, {"ok": True}, {}


def test_loyalty_points_are_pushed_to_an_outside_service_once_per_key() -> None:
    service = LoyaltyService()
    settings = {"api_url": f"{service.url}/points", "api_key": Secret("loyal-key", "L")}
    params = {"points": 120, "reason": "order #1042", "customer": "email:ada@example.com"}
    try:
        first = deliver("loyalty_points", params, settings)
        deliver("loyalty_points", params, settings)
        with pytest.raises(PermanentError, match="loyalty API HTTP 401"):
            deliver("loyalty_points", params, {**settings, "api_key": "other"})
    finally:
        service.close()
    assert first["points"] == 120
    assert service.applied == {KEY: params}


class PurchaseOrderEndpoint(FakeStore):
    def __init__(self) -> None:
        self.orders: list[dict[str, Any]] = []
        super().__init__()

    def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if request["headers"].get("Content-Type") != "application/json":
            return 415, {"error": "JSON only"}, {}
        self.orders.append(json.loads(request["body"]))
        return 201, {"received": True}, {}


def test_purchase_order_by_http_posts_the_items_as_json() -> None:
    endpoint = PurchaseOrderEndpoint()
    params = {"supplier": "Yarn Co", "items": [{"sku": "BEANIE-CHA", "title": "Beanie", "quantity": 40}]}
    try:
        made = deliver("purchase_order", params, {"via": "http", "url": f"{endpoint.url}/po"})
        with pytest.raises(PermanentError, match="channel settings missing: url"):
            deliver("purchase_order", params, {"via": "http"})
    finally:
        endpoint.close()
    [order] = endpoint.orders
    assert order == {"number": made["number"], **params} and made["lines"] == 1
