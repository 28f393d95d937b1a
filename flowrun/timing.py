"""Time logic as pure functions of `now`: cron schedules and times of day in a zone.

Daylight-saving policy (the same for waits and schedules, documented in the README):
- a local time that does not exist (the hour skipped in spring) is moved forward by
  the length of the gap: 02:30 on a spring-forward day becomes 03:30, and fires once;
- a local time that happens twice (the hour repeated in autumn) fires once, at its
  first occurrence;
- every instant is computed in UTC from the wall-clock time, so a `09:00` wait on the
  day the clocks change still lands at 09:00 local.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


class TimeSpecError(ValueError):
    def __init__(self, message: str, hint: str = "") -> None:
        self.message, self.hint = message, hint
        super().__init__(message)


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, sorted(available_timezones()), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "use an IANA name such as Europe/Berlin or America/New_York"
        raise TimeSpecError(f"unknown time zone {name!r}", hint) from None


def wall_to_utc(day: date, at: time, tz: ZoneInfo) -> datetime:
    """A local wall-clock time to UTC: gaps move forward, repeats take the first occurrence."""
    return datetime.combine(day, at, tzinfo=tz).replace(fold=0).astimezone(UTC)


def parse_time_of_day(text: str) -> time:
    try:
        hours, minutes = text.split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise TimeSpecError(f"{text!r} is not a time of day", "write HH:MM in 24-hour form, e.g. 09:00") from None


def next_time_of_day(now: datetime, at: time, tz: ZoneInfo) -> datetime:
    """The first instant at or after `now` when the local clock in `tz` shows `at`."""
    local_day = now.astimezone(tz).date()
    for offset in range(3):
        candidate = wall_to_utc(local_day + timedelta(days=offset), at, tz)
        if candidate >= now:
            return candidate
    raise AssertionError("unreachable: a time of day recurs within three days")


_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
CRON_HINT = "five fields: minute hour day-of-month month day-of-week, e.g. '0 8 * * 1-5'"
Expanded = tuple[list[list[int | str]], dict[int, set[int | str]]]


def _expand(text: str) -> Expanded:
    """croniter's parse of five fields; any failure of the library becomes a TimeSpecError."""
    from croniter import CroniterError, croniter

    try:
        fields, nth = croniter.expand(text)
    except (CroniterError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise TimeSpecError(str(exc), CRON_HINT) from None
    return fields, nth


def _field_problem(parts: list[str], index: int) -> TimeSpecError | None:
    """Why field `index` alone is not valid cron, or None: the other fields set to `*`."""
    probe = ["*"] * 5
    probe[index] = parts[index]
    try:
        _expand(" ".join(probe))
    except TimeSpecError as exc:
        low, high = _BOUNDS[index]
        name, token = _FIELD_NAMES[index], parts[index]
        why = exc.message
        if "out of range" in why:
            return TimeSpecError(f"cron {name} field: {token!r} is outside {low}-{high}", CRON_HINT)
        if "step" in why:
            return TimeSpecError(f"cron {name} field: {token!r} has a step that is not a positive number", CRON_HINT)
        return TimeSpecError(f"cron {name} field: {token!r} is not a number, a name, a range or a list", CRON_HINT)
    return None


def _backwards_range(parts: list[str]) -> TimeSpecError | None:
    """croniter reads `5-1` as a range that wraps around; classic cron rejects it, and so
    does flowrun: a reversed range is far more often a typo than a wish."""
    for index, part in enumerate(parts):
        for element in part.split(","):
            body = element.split("/", 1)[0]
            if body.count("-") != 1 or body.startswith("-"):
                continue
            first, last = body.split("-")
            probes: list[int | str] = []
            for end in (first, last):
                if end.isascii() and end.isdigit():  # as written: day-of-week 7 is Sunday at the top
                    probes.append(int(end))
                    continue
                probe = ["*"] * 5
                probe[index] = end
                probes.append(_expand(" ".join(probe))[0][index][0])
            if isinstance(probes[0], int) and isinstance(probes[1], int) and probes[0] > probes[1]:
                name = _FIELD_NAMES[index]
                return TimeSpecError(f"cron {name} field: range {body} runs backwards", "write the range low-high")
    return None


@dataclass(frozen=True)
class CronSchedule:
    """A cron expression parsed by croniter, walked by flowrun over wall-clock days in its
    zone (so the daylight-saving rule above holds, which croniter's own iteration does not
    promise). Day-of-month and day-of-week follow classic cron: when both are restricted,
    either may match. Also understood: names (`mon`, `jan`), `@daily` and the other
    aliases, `L` (the month's last day), and `1#2` / `L5` (the 2nd Monday, the last Friday)."""

    expression: str
    tz: ZoneInfo
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool
    last_day: bool = False  # `L` in day-of-month
    nth_weekdays: tuple[tuple[int, int], ...] = ()  # (weekday, n): n = 1..5, or -1 for the last

    @classmethod
    def parse(cls, expression: str, tz_name: str = "UTC") -> CronSchedule:
        text = expression.strip()
        if text.startswith("@"):
            try:
                fields, nth = _expand(text)
            except TimeSpecError:
                fields, nth = [], {}
            if len(fields) != 5:
                raise TimeSpecError(
                    f"cron alias {text!r} is not supported", "use @hourly, @daily, @weekly, @monthly or @yearly"
                )
        else:
            parts = text.split()
            if len(parts) != 5:
                raise TimeSpecError(f"cron expression {expression!r} has {len(parts)} fields, not 5", CRON_HINT)
            for index in range(5):
                problem = _field_problem(parts, index)
                if problem is not None:
                    raise problem
            if "w" in parts[2].lower():
                raise TimeSpecError(
                    f"cron day-of-month field: {parts[2]!r}: W (nearest weekday) is not supported", CRON_HINT
                )
            problem = _backwards_range(parts)
            if problem is not None:
                raise problem
            try:
                fields, nth = _expand(text)
            except TimeSpecError as exc:
                raise TimeSpecError(f"cron expression {expression!r}: {exc.message}", CRON_HINT) from None

        def values(index: int) -> frozenset[int]:
            low, high = _BOUNDS[index]
            found = fields[index]
            if found == ["*"]:
                return frozenset(range(low, min(high, 6 if index == 4 else high) + 1))
            return frozenset(int(v) % 7 if index == 4 else int(v) for v in found if isinstance(v, int))

        nth_pairs = tuple(sorted((int(day) % 7, -1 if n == "l" else int(n)) for day, ns in nth.items() for n in ns))
        return cls(
            expression,
            zone(tz_name),
            values(0),
            values(1),
            values(2),
            values(3),
            values(4),
            fields[2] != ["*"],
            fields[4] != ["*"],
            "l" in fields[2],
            nth_pairs,
        )

    def _weekday_matches(self, day: date) -> bool:
        weekday = day.isoweekday() % 7
        if not self.nth_weekdays:
            return weekday in self.weekdays
        week = (day.day - 1) // 7 + 1
        last = day.month != (day + timedelta(days=7)).month
        return any(d == weekday and (n == week or (n == -1 and last)) for d, n in self.nth_weekdays)

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_dom = day.day in self.days or (self.last_day and (day + timedelta(days=1)).day == 1)
        in_dow = self._weekday_matches(day)
        if self.days_restricted and self.weekdays_restricted:
            return in_dom or in_dow  # classic cron: either field may match
        return in_dom and in_dow

    def next_after(self, now: datetime) -> datetime:
        """The first fire time strictly after `now` (UTC in, UTC out)."""
        day = now.astimezone(self.tz).date() - timedelta(days=1)
        times = sorted(time(h, m) for h in self.hours for m in self.minutes)
        for _ in range(366 * 8 + 2):
            if self._day_matches(day):
                for at in times:
                    candidate = wall_to_utc(day, at, self.tz)
                    if candidate > now:
                        return candidate
            day += timedelta(days=1)
        raise TimeSpecError(f"cron expression {self.expression!r} never fires", CRON_HINT)
