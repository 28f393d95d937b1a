"""Webhook signatures: HMAC-SHA256 of the raw body, compared in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime, timedelta


def hmac_sha256(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def valid_base64(body: bytes, header: str | None, secrets: Sequence[str]) -> bool:
    """Shopify (`X-Shopify-Hmac-Sha256`) and WooCommerce (`X-WC-Webhook-Signature`):
    base64 of HMAC-SHA256 of the raw body. Several secrets: accepted during a rotation."""
    if not header:
        return False
    given = header.strip().encode()
    ok = False
    for secret in secrets:  # check every secret: the time taken does not say which matched
        ok |= hmac.compare_digest(base64.b64encode(hmac_sha256(secret, body)), given)
    return ok


def valid_generic(
    body: bytes,
    header: str | None,
    secret: str,
    encoding: str,
    timestamp: str | None,
    tolerance: timedelta | None,
    now: datetime,
) -> tuple[bool, str]:
    """`<timestamp>.<body>` is signed when a timestamp header is configured (replay window)."""
    if not header:
        return False, "missing signature"
    message = body
    if tolerance is not None:
        if not timestamp or not timestamp.strip().isdigit():
            return False, "missing or malformed timestamp"
        age = abs(now.timestamp() - int(timestamp))
        if age > tolerance.total_seconds():
            return False, f"timestamp outside the {int(tolerance.total_seconds())} s window"
        message = timestamp.strip().encode() + b"." + body
    digest = hmac_sha256(secret, message)
    expected = digest.hex().encode() if encoding == "hex" else base64.b64encode(digest)
    given = header.strip().removeprefix("sha256=").encode()
    return hmac.compare_digest(expected, given), "wrong signature"
