"""Signature checks against the stores' published test vectors (../shared/fixtures)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flowrun.serve.signatures import hmac_sha256, valid_base64, valid_generic


def test_shopify_vectors(fixtures: Path) -> None:
    vectors = json.loads((fixtures / "shopify/hmac/vectors.json").read_text())["vectors"]
    checked = 0
    for vector in vectors:
        if "secret" not in vector or "headers" not in vector:
            continue
        header = {k.lower(): v for k, v in vector["headers"].items()}.get("x-shopify-hmac-sha256")
        secrets = [vector["secret"], *([vector["old_secret"]] if "old_secret" in vector else [])]
        expect = vector["expect"].get("valid", vector["expect"].get("http_status") == 200)
        assert valid_base64(vector["body"].encode(), header, secrets) is expect, vector["id"]
        checked += 1
    assert checked >= 3


def test_shopify_rotation_needs_the_old_secret(fixtures: Path) -> None:
    vectors = {v["id"]: v for v in json.loads((fixtures / "shopify/hmac/vectors.json").read_text())["vectors"]}
    rotation = vectors["shopify_app/old-secret-rotation"]
    header = rotation["headers"]["X-Shopify-Hmac-Sha256"]
    assert not valid_base64(rotation["body"].encode(), header, [rotation["secret"]])
    assert valid_base64(rotation["body"].encode(), header, [rotation["secret"], rotation["old_secret"]])


def test_woocommerce_vector(fixtures: Path) -> None:
    [vector] = json.loads((fixtures / "woocommerce/webhooks/signature_vectors.json").read_text())["vectors"]
    assert valid_base64(vector["body"].encode(), vector["expected_signature"], [vector["secret"]])
    assert not valid_base64(vector["body"].encode() + b" ", vector["expected_signature"], [vector["secret"]])


def test_missing_header_is_invalid() -> None:
    assert not valid_base64(b"{}", None, ["s"])
    assert not valid_base64(b"{}", "", ["s"])


def test_generic_hex_with_timestamp_window() -> None:
    now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    stamp = str(int(now.timestamp()))
    body = b'{"type": "custom.x", "data": {}}'
    good = hmac_sha256("k", stamp.encode() + b"." + body).hex()
    window = timedelta(minutes=5)
    assert valid_generic(body, good, "k", "hex", stamp, window, now) == (True, "wrong signature")
    assert valid_generic(body, "sha256=" + good, "k", "hex", stamp, window, now)[0]
    later = now + timedelta(minutes=6)
    assert valid_generic(body, good, "k", "hex", stamp, window, later) == (False, "timestamp outside the 300 s window")
    assert valid_generic(body, good, "k", "hex", None, window, now) == (False, "missing or malformed timestamp")
    assert not valid_generic(body + b" ", good, "k", "hex", stamp, window, now)[0]
