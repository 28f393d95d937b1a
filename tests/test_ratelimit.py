"""Token buckets per provider and account, on a simulated clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flowrun.delivery.ratelimit import DEFAULTS, Rate, RateLimiter, rates_from
from tests.helpers import T0


def seconds(times: list, start=T0) -> list[float]:  # type: ignore[no-untyped-def]
    return [(t - start).total_seconds() for t in times]


def test_shopify_standard_plan_bursts_40_then_drains_2_a_second() -> None:
    limiter = RateLimiter()
    shop = ("shopify", "knit-and-co.myshopify.com")
    times = [limiter.reserve(shop, T0) for _ in range(44)]
    assert seconds(times[:40]) == [0.0] * 40
    assert seconds(times[40:]) == [0.5, 1.0, 1.5, 2.0]


def test_buckets_are_per_account_and_refill_up_to_the_burst_only() -> None:
    limiter = RateLimiter()
    first, second = ("slack", "https://hooks.slack.com/a"), ("slack", "https://hooks.slack.com/b")
    assert seconds([limiter.reserve(first, T0), limiter.reserve(first, T0), limiter.reserve(first, T0)]) == [0, 1, 2]
    assert limiter.reserve(second, T0) == T0  # another webhook: its own bucket
    later = T0 + timedelta(hours=1)  # idle for an hour: one token (the burst), not 3,600
    assert seconds([limiter.reserve(first, later), limiter.reserve(first, later)], later) == [0, 1]


def test_a_reservation_made_later_in_time_waits_only_for_what_is_still_queued() -> None:
    limiter = RateLimiter({"twilio": Rate(per_second=1)})
    sender = ("twilio", "+14155550100")
    assert seconds([limiter.reserve(sender, T0) for _ in range(3)]) == [0, 1, 2]
    assert seconds([limiter.reserve(sender, T0 + timedelta(seconds=1.5))]) == [3]
    assert seconds([limiter.reserve(sender, T0 + timedelta(seconds=10))]) == [10]


def test_a_retry_after_holds_the_bucket() -> None:
    limiter = RateLimiter()
    zendesk = ("zendesk", "knit-and-co")
    assert limiter.reserve(zendesk, T0) == T0
    limiter.hold(zendesk, T0 + timedelta(seconds=30))
    assert seconds([limiter.reserve(zendesk, T0 + timedelta(seconds=1)) for _ in range(2)]) == [30, 30 + 60 / 200]
    postmark = ("postmark", "server")  # no limit of its own, but it said to wait
    assert limiter.reserve(postmark, T0) == T0
    limiter.hold(postmark, T0 + timedelta(seconds=5))
    assert seconds([limiter.reserve(postmark, T0), limiter.reserve(postmark, T0 + timedelta(seconds=6))]) == [5, 6]


def test_providers_without_a_documented_limit_send_at_once_unless_configured() -> None:
    limiter = RateLimiter()
    assert {limiter.reserve(("smtp", "relay"), T0) for _ in range(1000)} == {T0}
    configured = RateLimiter(rates_from({"smtp": Rate(per_second=10, burst=5), "slack": None}))
    assert seconds([configured.reserve(("smtp", "relay"), T0) for _ in range(7)]) == [0, 0, 0, 0, 0, 0.1, 0.2]
    assert {configured.reserve(("slack", "hook"), T0) for _ in range(10)} == {T0}


def test_the_documented_defaults_and_bad_rates() -> None:
    assert DEFAULTS["shopify"] == Rate(2, 40) and DEFAULTS["slack"] == Rate(1, 1) and DEFAULTS["twilio"] == Rate(1, 1)
    assert DEFAULTS["onesignal"] == Rate(150, 150) and DEFAULTS["postmark"] is None
    zendesk = RateLimiter()
    minute = [zendesk.reserve(("zendesk", "x"), T0) for _ in range(250)]
    assert sum(t < T0 + timedelta(minutes=1) for t in minute) <= 201  # Team plan: 200 a minute
    with pytest.raises(ValueError):
        Rate(per_second=0)


def test_the_project_file_overrides_a_default_or_turns_it_off(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from flowrun.config import load_config
    from flowrun.errors import ConfigError

    project = tmp_path / "flowrun.yaml"
    project.write_text("limits:\n  rate_limits: {shopify: {per_second: 20, burst: 400}, slack: false}\n")
    rates = load_config(project).rate_limits
    assert rates["shopify"] == Rate(20, 400) and rates["slack"] is None and rates["twilio"] == Rate(1, 1)
    project.write_text("limits:\n  rate_limits: {shopfy: {per_second: 4}}\n")
    with pytest.raises(ConfigError, match="shopfy"):
        load_config(project)
