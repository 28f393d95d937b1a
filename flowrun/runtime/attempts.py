"""What one delivery attempt does to its outbox row: a pure function of the row, the attempt's
outcome and `now`. Serve's dispatcher and dry-run's recording deliverer both use it.

Retries back off exponentially with full jitter and never come sooner than the provider's
`Retry-After`. A 429 with `Retry-After` waits that long without spending an attempt. After the
last attempt the row is parked (the run waits for `flowrun retry`), or with `on_error:
continue` it fails and the run is handed the failure.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Union

from flowrun.runtime.records import Attempt, Send, SendStatus


@dataclass(frozen=True)
class Delivered:
    result: Mapping[str, Any]


@dataclass(frozen=True)
class Retryable:
    message: str
    retry_after: float | None = None


@dataclass(frozen=True)
class RateLimited:
    """The provider said "slow down" and when to come back: not a failed attempt."""

    retry_after: float
    message: str = "rate limited"


@dataclass(frozen=True)
class Permanent:
    message: str


Outcome = Union[Delivered, Retryable, RateLimited, Permanent]


@dataclass(frozen=True)
class Settled:
    send: Send
    attempt: Attempt
    gives_back_cap: bool  # failed for good: its place under a frequency cap is released


def backoff_delay(
    attempt: int, base_s: float, max_s: float, retry_after: float | None, rand: Callable[[], float] = random.random
) -> float:
    """Full jitter on an exponential curve; never sooner than the provider's Retry-After."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    delay = ceiling * (0.5 + rand() / 2)
    return float(max(delay, retry_after or 0.0))


def after_attempt(send: Send, outcome: Outcome, now: datetime, rand: Callable[[], float] = random.random) -> Settled:
    if isinstance(outcome, Delivered):
        done = send.evolve(
            status=SendStatus.DELIVERED, result=dict(outcome.result), attempts=send.attempts + 1, updated_at=now
        )
        return Settled(done, Attempt(send.key, now, "ok"), False)
    if isinstance(outcome, RateLimited):
        later = now + timedelta(seconds=outcome.retry_after)
        waiting = send.evolve(status=SendStatus.READY, next_attempt_at=later, updated_at=now, claimed_by=None)
        detail = f"{outcome.message}; the provider asked for {outcome.retry_after:g} s"
        return Settled(waiting, Attempt(send.key, now, "rate_limited", detail), False)
    attempt = send.attempts + 1
    if isinstance(outcome, Retryable) and attempt < send.max_attempts:
        delay = backoff_delay(attempt, send.backoff_s, send.max_backoff_s, outcome.retry_after, rand)
        again = send.evolve(
            status=SendStatus.READY,
            attempts=attempt,
            last_error=outcome.message,
            next_attempt_at=now + timedelta(seconds=delay),
            updated_at=now,
            claimed_by=None,
        )
        detail = f"attempt {attempt}: {outcome.message}; next in {delay:.1f} s"
        return Settled(again, Attempt(send.key, now, "retry", detail), False)
    message = (
        f"permanent: {outcome.message}"
        if isinstance(outcome, Permanent)
        else f"gave up after {attempt} attempts: {outcome.message}"
    )
    status = SendStatus.FAILED if send.on_error == "continue" else SendStatus.PARKED
    final = send.evolve(status=status, attempts=attempt, last_error=message, updated_at=now, claimed_by=None)
    return Settled(final, Attempt(send.key, now, status.value, message), True)
