"""Providers' documented bodies (../shared/fixtures) to canonical message.* events: the fields
a flow reads, stable ids, and kinds that are kept but become no event."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from flowrun.events import Event
from flowrun.events.normalise import normalise, parse_json, topic_types
from tests.engagementkit import fixture, fixture_json

RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _one(body: Any, source: str) -> Event:
    [event] = normalise(body, source=source, topic="ignored: the body names its kind", received_at=RECEIVED)
    return event


def _message(event: Event) -> dict[str, Any]:
    message: dict[str, Any] = dict(event.data["message"])
    return message


def test_postmark_records_become_their_events() -> None:
    got = {
        name: _one(fixture_json(f"postmark/webhooks/{name}.json"), "postmark")
        for name in ("delivery", "bounce", "spam_complaint", "open", "click")
    }
    assert {n: e.type for n, e in got.items()} == {
        "delivery": "message.delivered",
        "bounce": "message.bounced",
        "spam_complaint": "message.complained",
        "open": "message.opened",
        "click": "message.clicked",
    }
    for event in got.values():
        assert event.source == "postmark" and event.customer_key == "email:john@example.com"
        assert _message(event)["id"] == "883953f4-6105-42a2-a16a-77a8eac79483"
        assert _message(event)["metadata"] == {"customer_id": "12345"}
        assert event.occurred_at == datetime(2025, 4, 5, 16, 33, 54, 907025, tzinfo=UTC)  # 7 digits read
    bounce = _message(got["bounce"])
    assert (bounce["bounce_type"], bounce["reason"]) == (
        "hard",
        "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
    )
    assert _message(got["click"])["url"] == "https://yourdomain.com/pricing"
    assert _message(got["open"])["machine_open"] is False  # "Mozilla/5.0 ..." is not the privacy proxy's bare agent
    assert got["bounce"].id == "postmark:Bounce:42"
    assert got["open"].raw["Geo"]["City"] == "San Francisco"  # the untouched payload


def test_postmark_subscription_change_is_an_unsubscribe_only_when_the_recipient_suppressed() -> None:
    body = fixture_json("postmark/webhooks/subscription_change.json")
    event = _one(body, "postmark")
    assert (event.type, _message(event)["reason"]) == ("message.unsubscribed", "Recipient")
    for other in ({"SuppressSending": False}, {"SuppressionReason": "HardBounce"}):
        assert normalise({**body, **other}, source="postmark", topic="SubscriptionChange") == []
    manual = {**body, "MessageID": None, "Origin": "Customer"}  # suppressed by hand: no message
    assert _message(_one(manual, "postmark"))["id"] is None


def test_postmark_ids_are_stable_and_tell_events_apart() -> None:
    open_ = fixture_json("postmark/webhooks/open.json")
    first, again = _one(open_, "postmark"), _one(json.loads(json.dumps(open_)), "postmark")
    later = _one({**open_, "ReceivedAt": "2025-04-05T17:00:00Z", "FirstOpen": False}, "postmark")
    assert first.id == again.id != later.id


def test_apple_privacy_proxy_open_is_a_machine_open() -> None:
    open_ = {**fixture_json("postmark/webhooks/open.json"), "UserAgent": "Mozilla/5.0"}
    assert _message(_one(open_, "postmark"))["machine_open"] is True


def test_a_sendgrid_batch_is_one_event_per_engagement_and_keeps_the_rest_out() -> None:
    batch = fixture_json("sendgrid/webhooks/event_webhook_reference.all_events.json")
    events = normalise(batch, source="sendgrid", topic="batch", received_at=RECEIVED)
    assert [e.type for e in events] == [
        "message.delivered",
        "message.opened",
        "message.clicked",
        "message.bounced",
        "message.complained",
        "message.unsubscribed",
        "message.unsubscribed",  # group_unsubscribe
    ]  # processed, deferred, dropped and group_resubscribe are no engagement
    assert {e.customer_key for e in events} == {"email:example@test.com"}
    assert all(e.occurred_at == datetime.fromtimestamp(1513299569, UTC) for e in events)


def test_sendgrid_fields_message_id_bounce_and_block() -> None:
    open_ = _one(fixture_json("sendgrid/webhooks/open.json"), "sendgrid")
    assert open_.id == "sendgrid:FOTFFO0ecsBE-zxFXfs6WA=="
    assert _message(open_)["id"] == "14c5d75ce93.dfd.64b469"  # the send's X-Message-Id
    assert _message(open_)["machine_open"] is False
    machine = {**fixture_json("sendgrid/webhooks/open.json")[0], "sg_machine_open": True}
    assert _message(_one(machine, "sendgrid"))["machine_open"] is True
    click = _one(fixture_json("sendgrid/webhooks/click.json"), "sendgrid")
    assert _message(click)["url"] == "http://www.sendgrid.com/"
    bounce = _message(_one(fixture_json("sendgrid/webhooks/bounce.json"), "sendgrid"))
    blocked = _message(_one(fixture_json("sendgrid/webhooks/blocked.json"), "sendgrid"))
    assert (bounce["bounce_type"], bounce["reason"]) == ("hard", "500 unknown recipient")
    assert blocked["bounce_type"] == "soft"


def test_sendgrid_custom_args_come_back_as_metadata() -> None:
    event = {**fixture_json("sendgrid/webhooks/delivered.json")[0], "flowrun_key": "r_1/steps[0]"}
    assert _message(_one(event, "sendgrid"))["metadata"] == {"flowrun_key": "r_1/steps[0]"}


def test_the_signed_vector_batch_reads_as_signed() -> None:
    [vector] = [
        v
        for v in fixture_json("sendgrid/signature/vectors.json")["vectors"]
        if v["id"] == "sendgrid-nodejs/multi-event-valid"
    ]
    [bounce] = normalise(parse_json(vector["body"]), source="sendgrid", topic="x")  # processed is kept out
    assert (bounce.type, _message(bounce)["bounce_type"], _message(bounce)["id"]) == (
        "message.bounced",
        "soft",
        "qNwBLgPQQjW6DJvKQwSAbw",
    )


@pytest.mark.parametrize(
    ("name", "type_", "checks"),
    [
        ("delivered", "message.delivered", {"id": "20260203192030.53383e583ab41f62@sample.mailgun.com"}),
        ("opened", "message.opened", {"machine_open": False}),
        ("clicked", "message.clicked", {"url": "https://sample.mailgun.com"}),
        ("failed_permanent", "message.bounced", {"bounce_type": "hard"}),
        ("failed_temporary", "message.bounced", {"bounce_type": "soft"}),
        ("complained", "message.complained", {}),
        ("unsubscribed", "message.unsubscribed", {}),
    ],
)
def test_mailgun_event_data_becomes_its_event(name: str, type_: str, checks: dict[str, Any]) -> None:
    text = fixture(f"mailgun/webhooks/{name}.event-data.json").read_text()
    body = {"signature": {"timestamp": "1", "token": "t", "signature": "s"}, "event-data": parse_json(text)}
    event = _one(body, "mailgun")
    assert event.type == type_ and event.source == "mailgun"
    assert event.customer_key == "email:" + body["event-data"]["recipient"]
    for key, value in checks.items():
        assert _message(event)[key] == value
    assert event.id.startswith(f"mailgun:{body['event-data']['id']}:")


def test_mailgun_bounce_reason_and_bot_opens() -> None:
    failed = parse_json(fixture("mailgun/webhooks/failed_permanent.event-data.json").read_text())
    assert _message(_one(failed, "mailgun"))["reason"].startswith("5.5.0 Requested action not taken")
    opened = parse_json(fixture("mailgun/webhooks/opened.event-data.json").read_text())
    opened["client-info"]["bot"] = "apple"
    assert _message(_one(opened, "mailgun"))["machine_open"] is True
    # the send's answer has `<id@domain>`; the events' samples have no brackets: both are kept without
    opened["message"]["headers"]["message-id"] = "<20260205213049.8e3a7bf607f78309@sample.mailgun.com>"
    assert _message(_one(opened, "mailgun"))["id"] == "20260205213049.8e3a7bf607f78309@sample.mailgun.com"
    accepted = parse_json(fixture("mailgun/webhooks/accepted.event-data.json").read_text())
    assert normalise(accepted, source="mailgun", topic="accepted") == []


def test_twilio_status_callbacks() -> None:
    documented = {}  # the docs' name/value list of a `sent` callback
    for line in fixture("twilio/webhooks/status_callback_sent.docs_example.txt").read_text().splitlines():
        name, _, value = line.partition(":")
        documented[name.strip().strip('"')] = value.strip().strip('"')
    assert normalise(documented, source="twilio", topic="sent", received_at=RECEIVED) == []  # sent: no engagement
    delivered = _one({**documented, "MessageStatus": "delivered", "To": "+15558675310"}, "twilio")
    assert (delivered.type, delivered.id, delivered.occurred_at) == (
        "message.delivered",
        "twilio:SM1342fe1b2c904d1ab04f0fc7a58abca9:delivered",
        RECEIVED,  # a callback carries no time of its own
    )
    assert delivered.customer_key == "phone:+15558675310"
    assert _message(delivered)["id"] == "SM1342fe1b2c904d1ab04f0fc7a58abca9"
    landline = _message(_one({**documented, "MessageStatus": "undelivered", "ErrorCode": "30006"}, "twilio"))
    offline = _message(_one({**documented, "MessageStatus": "undelivered", "ErrorCode": "30003"}, "twilio"))
    assert (landline["bounce_type"], landline["reason"]) == ("hard", "Twilio error 30006")
    assert offline["bounce_type"] == "soft"
    stop = _one({**documented, "MessageStatus": "failed", "ErrorCode": "21610"}, "twilio")
    assert stop.type == "message.unsubscribed"
    read = _one({**documented, "MessageStatus": "read", "EventType": "READ"}, "twilio")
    assert read.type == "message.opened"


def test_topic_types_are_known_from_the_topic_alone() -> None:
    assert topic_types("sendgrid", "open") == {"message.opened"}
    assert topic_types("sendgrid", "processed") == frozenset()
    assert topic_types("mailgun", "failed") == {"message.bounced"}
    assert topic_types("twilio", "failed") == {"message.bounced", "message.unsubscribed"}
    assert topic_types("postmark", "SomethingNew") == frozenset()


@pytest.mark.parametrize(
    ("source", "body"),
    [
        ("postmark", {"RecordType": "Open", "Recipient": "a@example.com", "ReceivedAt": "yesterday"}),
        ("postmark", {"RecordType": "Click", "Recipient": "a@example.com", "ReceivedAt": "2025-01-01T00:00:00Z"}),
        ("postmark", {"RecordType": "Delivery", "Recipient": ["a@example.com"], "DeliveredAt": "2025-01-01T00:00:00Z"}),
        ("sendgrid", {"event": "open", "email": "a@example.com", "timestamp": "soon"}),
        ("sendgrid", {"event": "open", "email": "a@example.com", "timestamp": 1e300}),
        ("sendgrid", {"event": "click", "email": "a@example.com", "timestamp": 1}),
        ("sendgrid", [1, 2]),
        ("mailgun", {"event-data": {"event": "delivered", "timestamp": 1, "recipient": None}}),
        ("mailgun", {"event-data": {"event": "delivered", "timestamp": 1, "recipient": "a@b", "message": ["x"]}}),
        ("mailgun", {"event-data": {"event": "opened", "timestamp": 1, "recipient": "a@b", "client-info": "x"}}),
        ("mailgun", {"event-data": {"event": "failed", "timestamp": 1, "recipient": "a@b", "delivery-status": 5}}),
        ("twilio", {"MessageStatus": "delivered"}),
    ],
)
def test_bodies_of_the_wrong_shape_are_value_errors(source: str, body: Any) -> None:
    with pytest.raises(ValueError):
        normalise(body, source=source, topic="x", received_at=RECEIVED)
