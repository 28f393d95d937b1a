"""Templates on their own: money by currency and locale, event.raw, typed values, the bounds
on one render, and what the parser rejects before anything runs."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from flowrun.errors import RenderError
from flowrun.templating import TemplateSyntax, parse_condition, parse_template
from flowrun.templating.money import format_money


def render(source: str, context: dict[str, Any] | None = None, **options: Any) -> Any:
    template = parse_template(source, "t", **options)
    return template.render_value(context or {})


# -- money ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "expected"),
    [
        (150, "USD", "en_US", "$150.00"),
        (150, "EUR", "de_DE", "150,00\xa0€"),
        (2.675, "USD", "en_US", "$2.68"),  # float 2.675 is 2.67499999... in binary: no float rounding
        (2.665, "USD", "en_US", "$2.67"),  # half-up, as shops round, not banker's rounding
        (Decimal("1500.5"), "JPY", "ja_JP", "￥1,501"),  # JPY has no decimals
        ("1234.5", "GBP", "en_GB", "£1,234.50"),
        (150, "usd", "en_US", "$150.00"),
        (None, "USD", "en_US", ""),
        (19.9, "", "de_DE", "19,90"),
    ],
)
def test_money_follows_currency_and_locale(amount: Any, currency: str, locale: str, expected: str) -> None:
    assert format_money(amount, currency, locale) == expected


def test_money_takes_the_templates_locale_unless_the_call_names_one() -> None:
    context = {"order": {"total_price": Decimal("150"), "currency": "EUR"}}
    assert render("{{ order.total_price | money(order.currency) }}", context, locale="de_DE") == "150,00\xa0€"
    assert render("{{ order.total_price | money(order.currency) }}", context) == "€150.00"
    assert render("{{ order.total_price | money('EUR', locale='fr_FR') }}", context, locale="de_DE") == ("150,00\xa0€")


def test_money_of_text_that_is_not_a_number_fails_the_render_with_its_place() -> None:
    with pytest.raises(RenderError, match=r"^t: template failed: money needs a number, got 'abc'"):
        render("{{ 'abc' | money('USD') }}")


# -- event.raw ------------------------------------------------------------------------------

RAW = {"event": {"raw": {"note_attributes": [{"name": "gift", "value": "yes"}], "total": "12.00"}}}


def test_a_missing_raw_key_reads_as_null_never_an_error() -> None:
    assert render("[{{ event.raw.nope }}]", RAW) == "[]"
    assert render("[{{ event.raw.nope.deeper[3].x }}]", RAW) == "[]"
    assert render("[{{ event.raw.note_attributes[5].name }}]", RAW) == "[]"
    assert render("{{ event.raw.nope | default('fallback') }}", RAW) == "fallback"
    assert render("{{ event.raw.note_attributes[0].value }}", RAW) == "yes"
    for condition, expected in [
        ("event.raw.nope", False),
        ("event.raw.nope is none", True),
        ("event.raw.nope is defined", False),
        ("event.raw.nope > 3", False),
        ("event.raw.nope * 10 > 3", False),
        ("event.raw.total == '12.00'", True),
    ]:
        assert parse_condition(condition, "c").evaluate(RAW) is expected, condition
    assert render("{{ event.raw.nope }}", RAW, typed=True) is None
    assert parse_condition("event.raw.x == 1", "c").evaluate({"event": {"raw": None}}) is False


def test_outside_event_raw_a_missing_field_still_fails() -> None:
    with pytest.raises(RenderError, match="has no attribute 'nope'"):
        render("{{ order.nope }}", {"order": {}})


# -- typed values -----------------------------------------------------------------------------


def test_a_whole_expression_keeps_its_type_in_a_typed_parameter() -> None:
    context = {
        "order": {"total_price": Decimal("150.00"), "paid": True},
        "customer": {"tags": ["vip", "eu"]},
        "event": {"raw": {"id": 7, "lines": [{"sku": "A"}]}},
    }
    assert render("{{ order.total_price * 10 }}", context, typed=True) == 1500
    assert render("{{ order.total_price / 8 }}", context, typed=True) == 18.75
    assert render("{{ customer.tags }}", context, typed=True) == ["vip", "eu"]
    assert render("{{ event.raw }}", context, typed=True) == {"id": 7, "lines": [{"sku": "A"}]}
    assert render("{{ order.paid }}", context, typed=True) is True
    assert render("{{ order.total_price > 100 }}", context, typed=True) is True
    assert render("Total {{ order.total_price }}", context, typed=True) == "Total 150.00"  # mixed text is text
    assert render("{{ order.total_price * 10 }}", context) == "1500.00"  # a text parameter gets text


def test_unknown_filters_and_tests_are_rejected_when_parsed() -> None:
    with pytest.raises(TemplateSyntax) as caught:
        parse_template("Hello\n{{ customer.first_name | uper }}", "t")
    assert (caught.value.message, caught.value.line, caught.value.column) == ("unknown filter 'uper'", 2, 26)
    assert caught.value.hint == "did you mean 'upper'?"
    with pytest.raises(TemplateSyntax, match="unknown test 'evn'"):
        parse_condition("order.number is evn", "c")


# -- bounds on one render -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "steps of work"),
        ("{{ 'a' * 100000000 }}", "repeating a value 100,000,000 times"),
        ("{{ [1] * 10000000 }}", "repeating a value 10,000,000 times"),
        ("{{ 9 ** 999999 }}", "too large a number"),
        ("{{ '%999999999d' % 1 }}", "a format width of 999,999,999"),
        ("{{ '{:>999999999}'.format(1) }}", "a format width of 999,999,999"),
        ("{{ 'x'.ljust(1000000000) }}", "an argument of 1,000,000,000"),
        ("{{ 'x' | center(1000000000) }}", "a filter argument of 1,000,000,000"),
        ("{% for i in range(2000) %}{{ 'x' * 999 }}{% endfor %}", "passed 1,000,000 characters"),
        ("{% set s = 'x' * 900000 %}{{ (s ~ s) | length }}", "a value of 1,800,000 items"),
    ],
)
def test_a_render_is_bounded_in_work_and_size(source: str, message: str) -> None:
    with pytest.raises(RenderError, match="template stopped: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        render(source)


def test_ordinary_loops_stay_well_inside_the_bounds() -> None:
    items = [{"sku": f"S{i}", "quantity": i} for i in range(2000)]
    text = render("{% for line in items %}{{ line.sku }}x{{ line.quantity }};{% endfor %}", {"items": items})
    assert text.count(";") == 2000
    assert render("{{ range(5) | list }}") == "[0, 1, 2, 3, 4]"
    assert render("{{ range(5) | length }}") == "5"


def test_lipsum_is_not_offered() -> None:
    with pytest.raises(RenderError, match="'lipsum' is undefined"):
        render("{{ lipsum(1000) }}")


# -- the facts validate checks with ------------------------------------------------------


def test_field_uses_say_which_reads_are_optional_exposed_or_guarded() -> None:
    uses = {
        u.path: (u.optional, u.exposed, u.guarded)
        for u in parse_template(
            "{{ customer.first_name | default('there') }} {{ order.number }}"
            "{% if customer.phone %}{{ customer.phone }}{% endif %}{{ order.note or '' }}"
            "{{ order.name | upper }}{% if order.tags is defined %}x{% endif %}",
            "t",
        ).uses
    }
    assert uses[("customer", "first_name")] == (True, False, False)
    assert uses[("order", "number")] == (False, True, False)
    assert uses[("customer", "phone")] in ((False, False, False), (False, True, True))
    assert uses[("order", "note")] == (False, False, False)
    assert uses[("order", "name")] == (False, True, False)
    assert uses[("order", "tags")] == (True, False, False)
    assert parse_condition("checkout.total_price >= 20 and customer.email", "c").asserted == {
        ("checkout", "total_price"),
        ("customer", "email"),
    }
    assert parse_condition("customer.email or customer.phone", "c").asserted == frozenset()
    assert parse_condition("customer.phone is not none", "c").asserted == {("customer", "phone")}


def test_a_typed_value_reading_a_missing_field_fails_like_text_does() -> None:
    with pytest.raises(RenderError, match="has no attribute 'b'"):
        render("{{ a.b }}", {"a": {}}, typed=True)
    with pytest.raises(RenderError, match="has no attribute 'b'"):
        render("{{ [a.b] }}", {"a": {}}, typed=True)
