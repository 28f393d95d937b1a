"""Each provider's signature check against the vectors its SDKs publish (../shared/fixtures),
and the replay and freshness rules around them, with time given, never read."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flowrun.config import Secret
from flowrun.engagement import mailgun, postmark, sendgrid, twilio
from flowrun.errors import WebhookRefused
from tests.engagementkit import MAILGUN_KEY, SendGridKeys, fixture_json, mailgun_body, postmark_headers, sendgrid_batch


def _vectors(relative: str) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = fixture_json(relative)["vectors"]
    return vectors


def test_sendgrid_signed_event_webhook_vectors() -> None:
    results = {}
    for vector in _vectors("sendgrid/signature/vectors.json"):
        headers = vector["headers"]
        results[vector["id"]] = sendgrid.valid_signature(
            vector["public_key"],
            headers["X-Twilio-Email-Event-Webhook-Timestamp"],
            vector["body"].encode(),
            headers["X-Twilio-Email-Event-Webhook-Signature"],
        )
        assert results[vector["id"]] is vector["expect"]["valid"], vector["id"]
    assert sorted(k for k, ok in results.items() if ok) == [
        "sendgrid-nodejs/multi-event-valid",
        "sendgrid-sdks/single-event-valid",
    ]


def test_sendgrid_signature_covers_the_raw_bytes_crlf_included() -> None:
    [vector] = [v for v in _vectors("sendgrid/signature/vectors.json") if v["id"] == "sendgrid-sdks/single-event-valid"]
    headers = vector["headers"]
    reencoded = json.dumps(json.loads(vector["body"])).encode()  # what a parse-then-dump would verify
    args = (headers["X-Twilio-Email-Event-Webhook-Timestamp"], headers["X-Twilio-Email-Event-Webhook-Signature"])
    assert not sendgrid.valid_signature(vector["public_key"], args[0], reencoded, args[1])
    assert not sendgrid.valid_signature(vector["public_key"], args[0], vector["body"].encode().rstrip(), args[1])
    assert not sendgrid.valid_signature(vector["public_key"], args[0], vector["body"].encode(), "not base64 !!")
    assert not sendgrid.valid_signature("not a key", args[0], vector["body"].encode(), args[1])


def test_mailgun_hmac_vectors() -> None:
    for vector in _vectors("mailgun/signature/vectors.json"):
        ok = mailgun.valid_signature(vector["signing_key"], vector["timestamp"], vector["token"], vector["signature"])
        assert ok is vector["expect"]["valid"], vector["id"]


def test_twilio_signature_vectors_with_ports_repeated_params_and_body_hash() -> None:
    for vector in _vectors("twilio/signature/vectors.json"):
        params = [
            (name, value)
            for name, values in (vector.get("params") or {}).items()
            for value in (values if isinstance(values, list) else [values])
        ]
        assert twilio.valid(vector["auth_token"], vector["url"], params, vector["expected_signature"]), vector["id"]
        assert not twilio.valid("54321", vector["url"], params, vector["expected_signature"]), vector["id"]
        if params:  # one parameter changed: the signature no longer matches
            changed = [(params[0][0], params[0][1] + "0"), *params[1:]]
            assert not twilio.valid(vector["auth_token"], vector["url"], changed, vector["expected_signature"])


def test_twilio_json_body_must_hash_to_the_signed_bodysha256() -> None:
    [vector] = [v for v in _vectors("twilio/signature/vectors.json") if v["id"] == "twilio-python/json-body-bodySHA256"]
    verifier = twilio.Verifier()
    settings = {"auth_token": Secret(vector["auth_token"], "T")}
    headers = {"x-twilio-signature": vector["expected_signature"]}
    with pytest.raises(WebhookRefused) as tampered:
        verifier.deliveries(settings, headers, vector["url"], vector["body"].encode() + b" ", datetime.now(UTC))
    assert (tampered.value.status, tampered.value.reason) == (401, "bad_signature")
    with pytest.raises(WebhookRefused) as shape:  # signed and hashed, but no status callback
        verifier.deliveries(settings, headers, vector["url"], vector["body"].encode(), datetime.now(UTC))
    assert (shape.value.status, shape.value.reason) == (400, "bad_shape")


def test_postmark_basic_auth_needs_both_the_user_and_the_password() -> None:
    good = postmark_headers()["Authorization"]
    postmark.authorised(good, "postmark-hook", "pm-pass-1")
    wrong = [
        postmark_headers(password="pm-pass-2")["Authorization"],
        postmark_headers(user="other")["Authorization"],
        good.replace("Basic", "Bearer"),
        "Basic " + base64.b64encode(b"postmark-hookpm-pass-1").decode(),  # no colon
        "Basic !!!not-base64",
        "Basic",
    ]
    for header in wrong:
        with pytest.raises(WebhookRefused) as refused:
            postmark.authorised(header, "postmark-hook", "pm-pass-1")
        assert (refused.value.status, refused.value.reason) == (401, "bad_credentials"), header
    with pytest.raises(WebhookRefused) as missing:
        postmark.authorised(None, "postmark-hook", "pm-pass-1")
    assert (missing.value.status, missing.value.reason) == (401, "missing_credentials")


DELIVERED = {
    "event": "delivered",
    "id": "MXcc2gEpS-eN8HfkOnmK2w",
    "timestamp": 1770146431.6585283,
    "recipient": "ada@example.com",
    "message": {"headers": {"message-id": "20260203192030.53383e583ab41f62@mg.knit.example"}},
}
T0 = datetime(2026, 2, 3, 19, 20, 31, tzinfo=UTC)


def _mailgun(verifier: mailgun.Verifier, body: bytes, now: datetime, tolerance: str | None = None) -> list[Any]:
    settings: dict[str, Any] = {"signing_key": Secret(MAILGUN_KEY, "K")}
    if tolerance:
        settings["tolerance"] = tolerance
    return verifier.deliveries(settings, {}, "http://flowrun/webhooks/mailgun", body, now)


def _refusal(call: Any) -> tuple[int, str]:
    with pytest.raises(WebhookRefused) as refused:
        call()
    return refused.value.status, refused.value.reason


def test_mailgun_refuses_a_replayed_token_and_a_stale_or_future_timestamp() -> None:
    verifier = mailgun.Verifier()
    stamp = int(T0.timestamp())
    body = mailgun_body(DELIVERED, stamp, token="t" * 50)
    [delivery] = _mailgun(verifier, body, T0)
    assert delivery.topic == "delivered"
    assert _refusal(lambda: _mailgun(verifier, body, T0 + timedelta(seconds=10))) == (401, "replayed")
    # the same token on another event (the signature does not cover the body) is refused too
    other = mailgun_body({**DELIVERED, "id": "another"}, stamp, token="t" * 50)
    assert _refusal(lambda: _mailgun(verifier, other, T0 + timedelta(seconds=10))) == (401, "replayed")
    fresh = mailgun_body(DELIVERED, stamp, token="u" * 50)
    assert _refusal(lambda: _mailgun(verifier, fresh, T0 + timedelta(minutes=5, seconds=1))) == (401, "stale_timestamp")
    assert _refusal(lambda: _mailgun(verifier, fresh, T0 - timedelta(minutes=6))) == (401, "stale_timestamp")
    assert len(_mailgun(verifier, fresh, T0 + timedelta(minutes=2), tolerance="1h")) == 1


def test_mailgun_forgets_tokens_once_their_window_has_closed() -> None:
    verifier = mailgun.Verifier()
    for n in range(50):
        stamp = int((T0 + timedelta(minutes=n)).timestamp())
        _mailgun(verifier, mailgun_body({**DELIVERED, "id": f"e{n}"}, stamp), T0 + timedelta(minutes=n))
    assert len(verifier.seen) <= 11  # the last ten minutes' worth (now ± 5 minutes), not all 50


def test_mailgun_forged_signatures_and_broken_blocks_are_401() -> None:
    verifier = mailgun.Verifier()
    stamp = int(T0.timestamp())
    forged = mailgun_body(DELIVERED, stamp, key="someone-elses-key")
    assert _refusal(lambda: _mailgun(verifier, forged, T0)) == (401, "bad_signature")
    unsigned = json.dumps({"event-data": DELIVERED}).encode()
    assert _refusal(lambda: _mailgun(verifier, unsigned, T0)) == (401, "missing_signature")
    numbers = json.dumps({"signature": {"timestamp": stamp, "token": 1, "signature": 2}, "event-data": {}}).encode()
    assert _refusal(lambda: _mailgun(verifier, numbers, T0)) == (401, "missing_signature")
    empty = json.dumps({"signature": {"timestamp": "0", "token": "", "signature": ""}, "event-data": {}}).encode()
    assert _refusal(lambda: _mailgun(verifier, empty, T0)) == (401, "bad_signature")
    huge = json.dumps({"signature": {"timestamp": str(stamp), "token": "x" * 10_000, "signature": "0"}}).encode()
    assert _refusal(lambda: _mailgun(verifier, huge, T0)) == (401, "missing_signature")
    assert len(verifier.seen) == 0  # nothing refused used up a token


def test_sendgrid_tolerance_when_configured() -> None:
    keys = SendGridKeys()
    body = sendgrid_batch({"email": "a@example.com", "event": "delivered", "timestamp": 1, "sg_event_id": "e1"})
    stamp = str(int(T0.timestamp()))
    headers = {k.lower(): v for k, v in keys.headers(body, stamp).items()}
    verifier = sendgrid.Verifier()
    later = T0 + timedelta(days=2)
    assert len(verifier.deliveries({"public_key": keys.public}, headers, "", body, later)) == 1  # default: no limit
    limited = {"public_key": keys.public, "tolerance": "1d"}
    assert _refusal(lambda: verifier.deliveries(limited, headers, "", body, later)) == (401, "stale_timestamp")
