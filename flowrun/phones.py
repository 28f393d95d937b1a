"""Phone numbers, through Google's libphonenumber (the `phonenumbers` package): whether a
number is E.164, and a national number made international with the customer's country."""

from __future__ import annotations

import re

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
E164_HINT = "write it with its country code, e.g. +14155550123 or +49 171 1234567"


def international(text: str, country: str | None = None) -> str | None:
    """`text` in E.164 form (+14155550123), or None when it is not a valid number. A number
    without its country code is read as a number of `country` (ISO 3166-1 alpha-2)."""
    import phonenumbers

    region = country.upper() if country and len(country) == 2 and country.isalpha() else None
    try:
        number = phonenumbers.parse(text, None if text.strip().startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def literal_problem(text: str) -> tuple[str, str] | None:
    """(why, fix) when a phone number written into a flow is not one an SMS can go to."""
    if international(text) is not None:
        return None
    if not text.strip().startswith("+"):
        return f"{text!r} is not a phone number in E.164 form: it has no country code", E164_HINT
    return (
        f"{text!r} is not a valid phone number",
        "check the digits: + country code, then the number, e.g. +14155550123",
    )


def sendable(text: str) -> bool:
    """The check at delivery: E.164 in shape and a possible number for its country (a range
    newer than the library's data still goes out; the provider has the last word)."""
    import phonenumbers

    if not E164.match(text):
        return False
    try:
        return bool(phonenumbers.is_possible_number(phonenumbers.parse(text, None)))
    except phonenumbers.NumberParseException:
        return False
