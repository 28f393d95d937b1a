"""Time is a pure function of `now`: cron, times of day, daylight saving."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta

import pytest

from flowrun.timing import CronSchedule, TimeSpecError, next_time_of_day, zone

BERLIN = zone("Europe/Berlin")
NEW_YORK = zone("America/New_York")


def fires(expr: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    cron, out, at = CronSchedule.parse(expr, tz), [], start
    while (at := cron.next_after(at)) <= end:
        out.append(at)
    return out


def test_wait_until_0900_lands_on_0900_local_on_spring_forward_day() -> None:
    evening_before = datetime(2026, 3, 28, 20, 0, tzinfo=UTC)  # Sat 21:00 CET
    due = next_time_of_day(evening_before, time(9), BERLIN)
    assert due.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M %Z") == "2026-03-29 09:00 CEST"
    assert due == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)


def test_wait_until_0900_on_fall_back_day_new_york() -> None:
    due = next_time_of_day(datetime(2026, 11, 1, 3, 0, tzinfo=UTC), time(9), NEW_YORK)
    assert due.astimezone(NEW_YORK).strftime("%H:%M %Z") == "09:00 EST"
    assert due == datetime(2026, 11, 1, 14, 0, tzinfo=UTC)


def test_wait_until_a_time_already_passed_today_is_tomorrow() -> None:
    due = next_time_of_day(datetime(2026, 1, 5, 12, 0, tzinfo=UTC), time(9), BERLIN)
    assert due == datetime(2026, 1, 6, 8, 0, tzinfo=UTC)


def test_wait_until_now_exactly_is_now() -> None:
    now = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    assert next_time_of_day(now, time(9), BERLIN) == now


def test_cron_0230_fires_once_on_spring_forward_day_shifted_past_the_gap() -> None:
    got = fires(
        "30 2 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 30, 12, tzinfo=UTC)
    )
    local = [g.astimezone(BERLIN).strftime("%m-%d %H:%M") for g in got]
    assert local == ["03-29 03:30", "03-30 02:30"]


def test_cron_0230_fires_once_on_fall_back_day() -> None:
    got = fires(
        "30 2 * * *", "Europe/Berlin", datetime(2026, 10, 24, 12, tzinfo=UTC), datetime(2026, 10, 26, 12, tzinfo=UTC)
    )
    assert got == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]


def test_hourly_cron_on_spring_forward_day_has_no_double_fire() -> None:
    got = fires(
        "0 * * * *", "Europe/Berlin", datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 3, tzinfo=UTC)
    )
    assert len(got) == len(set(got)) == 4
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(got))


def test_weekday_mornings() -> None:
    got = fires("0 8 * * mon-fri", "Europe/Berlin", datetime(2026, 1, 4, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC))
    assert [g.strftime("%a %H:%M") for g in got] == ["Mon 07:00", "Tue 07:00", "Wed 07:00", "Thu 07:00", "Fri 07:00"]


def test_day_of_month_or_day_of_week() -> None:
    got = fires("0 0 1 * 1", "UTC", datetime(2026, 6, 1, 0, 30, tzinfo=UTC), datetime(2026, 7, 1, 12, tzinfo=UTC))
    assert [g.day for g in got] == [8, 15, 22, 29, 1]  # Mondays, and the 1st


def test_steps_ranges_and_aliases() -> None:
    assert sorted(CronSchedule.parse("*/15 9-10 * * *").minutes) == [0, 15, 30, 45]
    assert CronSchedule.parse("@daily").hours == frozenset({0})
    assert CronSchedule.parse("0 0 * * 7").weekdays == frozenset({0})


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 25 * * *", "cron hour field: '25' is outside 0-23"),
        ("0 8 * *", "has 4 fields, not 5"),
        ("0 8 * * * *", "has 6 fields, not 5"),
        ("x 8 * * *", "cron minute field: 'x' is not a number, a name"),
        ("\u00b25 * * * *", "cron minute field: '\u00b25' is not a number"),  # superscript two: isdigit() says yes
        ("\u0663 * * * *", "cron minute field: '\u0663' is not a number"),  # an Arabic-Indic three
        ("*/0 * * * *", "cron minute field: '\\*/0' has a step"),
        ("0 8 5-1 * *", "range 5-1 runs backwards"),
        ("0 8 * * fri-mon", "range fri-mon runs backwards"),
        ("0 0 15W * *", "W \\(nearest weekday\\) is not supported"),
        ("@reboot", "cron alias '@reboot' is not supported"),
        ("0 0 * * 1#6", "cron day-of-week field"),
        ("0 0 31 2 *", "never fires"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_bad_cron(expr: str, message: str) -> None:
    with pytest.raises(TimeSpecError, match=message):
        CronSchedule.parse(expr).next_after(datetime(2026, 1, 1, tzinfo=UTC))


def test_day_of_week_7_is_sunday_also_at_the_top_of_a_range() -> None:
    assert CronSchedule.parse("0 0 * * 5-7").weekdays == frozenset({5, 6, 0})


def test_last_day_of_month() -> None:
    got = fires("0 9 L * *", "Europe/Berlin", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    assert [g.astimezone(BERLIN).strftime("%m-%d %H:%M") for g in got] == ["01-31 09:00", "02-28 09:00", "03-31 09:00"]


def test_nth_and_last_weekday_of_month() -> None:
    second_monday = fires("0 9 * * 1#2", "UTC", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
    assert [g.strftime("%m-%d %a") for g in second_monday] == ["01-12 Mon", "02-09 Mon"]
    last_friday = fires("0 9 * * L5", "UTC", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
    assert [g.strftime("%m-%d %a") for g in last_friday] == ["01-30 Fri", "02-27 Fri"]


def test_hostile_cron_fields_are_errors_not_crashes() -> None:
    for expr in ["\x00 * * * *", "1-- * * * *", "0,,5 * * * *", "-1 * * * *", "H * * * *", "0 0 L-2 * *", "9" * 400]:
        with pytest.raises(TimeSpecError):
            CronSchedule.parse(expr)


def test_zones_come_from_the_tzdata_package_where_the_system_has_none() -> None:
    import zoneinfo

    zoneinfo.reset_tzpath(to=[])  # as on a machine without /usr/share/zoneinfo
    try:
        zone.cache_clear()
        zoneinfo.ZoneInfo.clear_cache()
        assert zone("Europe/Berlin").utcoffset(datetime(2026, 7, 1)) == timedelta(hours=2)
    finally:
        zoneinfo.reset_tzpath()
        zone.cache_clear()


def test_zone_suggestion() -> None:
    with pytest.raises(TimeSpecError) as info:
        zone("America/New_Yrok")
    assert info.value.hint == "did you mean 'America/New_York'?"
