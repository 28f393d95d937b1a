"""`money`: an amount as a shop writes it, by currency and locale (Babel's CLDR data).

`{{ 150 | money('USD') }}` is `$150.00` in en_US, `{{ 150 | money('EUR') }}` is `150,00 €` in
de_DE. Amounts are rounded half-up to the currency's own digits (USD 2, JPY 0) from their
decimal text, never through a float: 2.675 USD is $2.68.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.numbers import format_currency, format_decimal, get_currency_precision

DEFAULT_LOCALE = "en_US"


class MoneyError(ValueError):
    pass


def locale_problem(name: str) -> tuple[str, str] | None:
    """None if Babel knows the locale; else (message, hint)."""
    try:
        _locale(name)
    except MoneyError as exc:
        return str(exc), "a locale is language_TERRITORY, e.g. en_US, de_DE, fr_FR, en_GB, ja_JP"
    return None


@lru_cache(maxsize=64)
def _locale(name: str) -> Locale:
    try:
        return Locale.parse(name.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        raise MoneyError(f"unknown locale {name!r}") from None


def _amount(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise MoneyError(f"money needs a number, got {value!r}")
    try:
        # str() of a float is its shortest round-trip text: 2.675 stays 2.675, not 2.67499...
        return Decimal(value if isinstance(value, Decimal) else str(value).strip())
    except (InvalidOperation, ValueError):
        raise MoneyError(f"money needs a number, got {value!r}") from None


def format_money(value: Any, currency: Any = "", locale: str = DEFAULT_LOCALE) -> str:
    """The filter itself; a null amount prints as nothing (stores send null for unknown)."""
    if value is None:
        return ""
    amount = _amount(value)
    where = _locale(locale)
    code = str(currency or "").strip().upper()
    if not code:
        return str(format_decimal(amount.quantize(Decimal("0.01"), ROUND_HALF_UP), format="#,##0.00", locale=where))
    digits = get_currency_precision(code)
    rounded = amount.quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP)
    return str(format_currency(rounded, code, locale=where))
