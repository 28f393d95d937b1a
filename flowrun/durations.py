"""Durations such as `30m`, `24h`, `3d`, `1h30m`, `2w`."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")
_WHOLE = re.compile(r"^(?:\d+[smhdw])+$")

DURATION_PATTERN = r"^(?:[0-9]+[smhdw])+$"
DURATION_HINT = "write a number and a unit, e.g. 30m, 24h, 3d, 1h30m (units: s m h d w)"


class DurationSyntaxError(ValueError):
    pass


def parse_duration(text: str) -> timedelta:
    text = text.strip()
    if not _WHOLE.match(text):
        raise DurationSyntaxError(f"{text!r} is not a duration; {DURATION_HINT}")
    try:
        return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _PART.findall(text)))
    except OverflowError:  # more days than a timedelta holds
        raise DurationSyntaxError(f"{text!r} is longer than any duration flowrun can count") from None


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + "".join(out)
