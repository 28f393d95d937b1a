"""A value with the right meaning in the wrong shape, and the shape that would be right:
`7 days` is `7d`, `concurrency: single` is `concurrency: {mode: single}`."""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator

_UNIT_WORDS = {
    "s": "s",
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "m": "m",
    "min": "m",
    "mins": "m",
    "minute": "m",
    "minutes": "m",
    "h": "h",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "d": "d",
    "day": "d",
    "days": "d",
    "w": "w",
    "wk": "w",
    "wks": "w",
    "week": "w",
    "weeks": "w",
}
_LONG_UNITS = {"month": 30, "months": 30, "year": 365, "years": 365}  # in days
_NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "twelve": 12,
    "fourteen": 14,
    "thirty": 30,
}
_ADVERBS = {"hourly": "1h", "daily": "1d", "weekly": "1w", "fortnightly": "2w", "monthly": "30d"}
_PAIR = re.compile(r"(\d+|[a-z]+)\s*([a-z]+)")


def duration_from_words(text: str) -> str | None:
    """`7 days` -> `7d`, `1 hour 30 minutes` -> `1h30m`, `once a week` -> `1w`; None if it is not that."""
    words = text.strip().lower().replace(",", " ").replace(" and ", " ")
    words = re.sub(r"^(?:once\s+)?(?:every|per|a|an)\s+(?=[a-z]+$)", "1 ", words)
    words = re.sub(r"^once\s+", "", words)
    if words in _ADVERBS:
        return _ADVERBS[words]
    out, rest = [], words
    for match in _PAIR.finditer(words):
        number, unit = match[1], match[2]
        count = int(number) if number.isdigit() else _NUMBER_WORDS.get(number)
        if count is None:
            return None
        if unit in _LONG_UNITS:
            out.append(f"{count * _LONG_UNITS[unit]}d")
        elif unit in _UNIT_WORDS:
            out.append(f"{count}{_UNIT_WORDS[unit]}")
        else:
            return None
        rest = rest.replace(match[0], "", 1)
    if not out or rest.strip():
        return None
    return "".join(out)


def as_object(key: str, value: Any, schema: dict[str, Any]) -> str | None:
    """`single` where `concurrency` wants an object: `concurrency: {mode: single}`; None if no
    single property of the object takes the value."""
    if isinstance(value, (dict, list)):
        return None
    fits = [
        name
        for name, sub in (schema.get("properties") or {}).items()
        if isinstance(sub, dict) and Draft202012Validator(sub).is_valid(value)
    ]
    if len(fits) != 1 and isinstance(value, str):
        fits = [n for n in fits if "enum" in schema["properties"][n]] or fits
    if len(fits) != 1:
        return None
    shown = "true" if value is True else "false" if value is False else value
    return f"{key}: {{{fits[0]}: {shown}}}"
