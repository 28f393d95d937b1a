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


_NAMES = {
    "month": {
        m: i
        for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)
    },
    "dow": {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("dow", 0, 7))
_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
CRON_HINT = "five fields: minute hour day-of-month month day-of-week, e.g. '0 8 * * 1-5'"


def _value(token: str, name: str, low: int, high: int) -> int:
    names = _NAMES.get("month" if name == "month" else "dow" if name == "dow" else "", {})
    number = names.get(token.lower()) if token.isalpha() else None
    if number is None:
        if not token.isdigit():
            raise TimeSpecError(f"cron {name} field: {token!r} is not a number", CRON_HINT)
        number = int(token)
    if not low <= number <= high:
        raise TimeSpecError(f"cron {name} field: {number} is outside {low}-{high}", CRON_HINT)
    return number


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise TimeSpecError(f"cron {name} field: bad step {step_text!r}", CRON_HINT)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, last = body.split("-", 1)
            start, end = _value(first, name, low, high), _value(last, name, low, high)
            if start > end:
                raise TimeSpecError(f"cron {name} field: range {body} runs backwards", CRON_HINT)
        else:
            start = _value(body, name, low, high)
            end = high if step else start
        values.update(range(start, end + 1, step or 1))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    tz: ZoneInfo
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, expression: str, tz_name: str = "UTC") -> CronSchedule:
        text = _ALIASES.get(expression.strip(), expression.strip())
        parts = text.split()
        if len(parts) != 5:
            raise TimeSpecError(f"cron expression {expression!r} has {len(parts)} fields, not 5", CRON_HINT)
        minute, hour, dom, month, dow = (_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True))
        return cls(
            expression,
            zone(tz_name),
            minute,
            hour,
            dom,
            month,
            frozenset(d % 7 for d in dow),
            parts[2] != "*",
            parts[4] != "*",
        )

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_dom = day.day in self.days
        in_dow = (day.isoweekday() % 7) in self.weekdays
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
