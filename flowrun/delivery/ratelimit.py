"""Per-provider rate limits as token buckets: when may the next send to a provider go.

One bucket per (provider, account): a Shopify shop, a Twilio sender, a Slack webhook, a
OneSignal app, a Zendesk subdomain. A bucket holds up to `burst` tokens and gains
`per_second` of them a second; a send takes one. `reserve(key, now)` takes the next token
and says when the send may go: `now` when one is free, else the moment it will be (later
reservations queue behind it). `hold(key, until)` makes the bucket wait for a provider's
`Retry-After`. Time is an argument; nothing here reads a clock or sleeps.

The defaults are what the providers document (read in 2026):

- Shopify REST Admin API, standard plan: a leaky bucket of 40 requests draining 2 a second,
  per app and store (Advanced 4/s, Plus 20/s: raise it in the project file).
- Twilio: a US long code sends 1 message segment a second; Twilio queues the rest for hours
  and fails what waited too long, so sending faster only moves the queue.
- Slack incoming webhooks: 1 message a second per webhook ("short bursts >1 allowed", with
  no guarantee they are kept).
- OneSignal, create message: 150 requests a second per app on free plans (6,000 on paid).
- Zendesk Support API: 200 requests a minute on the Team plan (400 Growth and Professional,
  700 Enterprise); a burst of 1 keeps any minute at 200 or 201.
- Postmark publishes no numeric API limit, WooCommerce's depends on its host, and an SMTP
  relay's on its operator: no default limit (configure one if yours has it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: int = 1

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError(f"a rate needs per_second > 0 and burst >= 1, not {self}")


DEFAULTS: dict[str, Rate | None] = {
    "shopify": Rate(per_second=2, burst=40),
    "twilio": Rate(per_second=1, burst=1),
    "slack": Rate(per_second=1, burst=1),
    "onesignal": Rate(per_second=150, burst=150),
    "zendesk": Rate(per_second=200 / 60, burst=1),
    "postmark": None,
    "woocommerce": None,
    "smtp": None,
}

Key = tuple[str, str]  # (provider, account)


@dataclass
class _Bucket:
    tokens: float
    at: datetime  # when `tokens` was counted (a reservation may move it ahead of now)


class RateLimiter:
    def __init__(self, rates: Mapping[str, Rate | None] = DEFAULTS) -> None:
        self.rates = dict(rates)
        self._buckets: dict[Key, _Bucket] = {}
        self._held: dict[Key, datetime] = {}  # providers without a bucket that said to wait

    def reserve(self, key: Key, now: datetime) -> datetime:
        """Takes a token for one send to `key`; returns when that send may go (>= now)."""
        rate = self.rates.get(key[0])
        if rate is None:
            held = self._held.get(key)
            if held is not None and held <= now:
                del self._held[key]
            return max(now, held) if held is not None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(rate.burst), now)
        start = max(now, bucket.at)
        elapsed = (start - bucket.at).total_seconds()
        bucket.tokens = min(float(rate.burst), bucket.tokens + elapsed * rate.per_second)
        bucket.at = start
        bucket.tokens -= 1
        if bucket.tokens >= 0:
            return start
        return start + timedelta(seconds=-bucket.tokens / rate.per_second)

    def hold(self, key: Key, until: datetime) -> None:
        """The provider said to wait (429 with Retry-After): nothing goes before `until`, and
        the bucket starts again from one token then."""
        if self.rates.get(key[0]) is None:
            self._held[key] = max(until, self._held.get(key, until))
            return
        bucket = self._buckets.get(key)
        if bucket is None or bucket.at < until:
            self._buckets[key] = _Bucket(1.0, until)


def rates_from(overrides: Mapping[str, Rate | None]) -> dict[str, Rate | None]:
    """The defaults with the project file's `limits.rate_limits` on top."""
    return {**DEFAULTS, **overrides}
