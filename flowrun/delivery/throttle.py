"""Holding sends to their provider's rate, the same way in serve's dispatcher and in dry-run's
recording deliverer (so a dry-run shows the second Slack message a second after the first).

A send its bucket does not admit yet goes back to wait for its turn, with no attempt spent; the
turn reserved for it is kept, so it is not counted twice when it comes back. A provider's own
429 with Retry-After holds the bucket.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from flowrun.actions import REGISTRY
from flowrun.actions.base import DeliveryContext
from flowrun.delivery.ratelimit import DEFAULTS, Rate, RateLimiter
from flowrun.runtime.attempts import Outcome, RateLimited
from flowrun.runtime.records import Send

log = logging.getLogger("flowrun.dispatch")


class Throttle:
    def __init__(
        self,
        rates: Mapping[str, Rate | None] = DEFAULTS,
        channels: Mapping[str, Any] | None = None,
        sources: Mapping[str, Any] | None = None,
    ) -> None:
        self.limiter = RateLimiter(rates)
        self.channels, self.sources = channels or {}, sources or {}
        self._reserved: dict[str, datetime] = {}  # sends sent back to wait: the turn kept for each

    def key(self, send: Send) -> tuple[str, str] | None:
        settings = self.channels.get(send.action, {})
        ctx = DeliveryContext(None, settings, log, send.timeout_s, self.sources, self.channels)
        return REGISTRY[send.action].rate_key(send.params, ctx)

    def admit(self, send: Send, now: datetime) -> Outcome | None:
        """None: send it now. Otherwise the outcome that puts it back until its turn."""
        key = self.key(send)
        if key is None:
            return None
        at = self._reserved.pop(send.key, None) or self.limiter.reserve(key, now)
        if at <= now:
            return None
        self._reserved[send.key] = at
        return RateLimited((at - now).total_seconds(), f"waiting for its turn under {key[0]}'s rate limit")

    def heard(self, send: Send, outcome: Outcome, now: datetime) -> None:
        """A provider's 429 with Retry-After: nothing more goes to it before then."""
        if isinstance(outcome, RateLimited) and send.key not in self._reserved:
            key = self.key(send)
            if key is not None:
                self.limiter.hold(key, now + timedelta(seconds=outcome.retry_after))
