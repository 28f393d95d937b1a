"""Phone numbers by libphonenumber: literal numbers in flows are checked at validate,
national numbers from customer records are made international with the customer's country."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowrun.actions import REGISTRY
from flowrun.actions.base import PermanentError
from flowrun.config import Secret
from flowrun.dryrun.session import simulate
from flowrun.dryrun.timeline import Scheduled
from flowrun.phones import international, literal_problem, sendable
from tests.fakeproviders import FakeTwilio
from tests.helpers import T0, event, flow_from
from tests.test_providers import deliver


@pytest.mark.parametrize(
    ("given", "country", "expected"),
    [
        ("+14155550123", None, "+14155550123"),
        ("+1 (415) 555-0123", None, "+14155550123"),
        ("0171 1234567", "DE", "+491711234567"),
        ("0171 1234567", "de", "+491711234567"),
        ("00491711234567", "DE", "+491711234567"),
        ("(415) 555-0123", "US", "+14155550123"),
        ("07911 123456", "GB", "+447911123456"),
        ("0171 1234567", None, None),  # national, no country to read it with
        ("0171 1234567", "Germany", None),  # not an ISO code
        ("+49 171", None, None),
        ("not a number", "US", None),
        ("+" + "9" * 300, None, None),
        ("", "US", None),
    ],
)
def test_international(given: str, country: str | None, expected: str | None) -> None:
    assert international(given, country) == expected


def test_literal_problems_say_what_is_wrong() -> None:
    assert literal_problem("+49 171 1234567") is None
    no_code = literal_problem("0171 1234567")
    assert no_code is not None and no_code[0].endswith("is not a phone number in E.164 form: it has no country code")
    invalid = literal_problem("+1 555")
    assert invalid == ("'+1 555' is not a valid phone number", invalid[1] if invalid else "")


SMS_FLOW = """
flow: text-me
on: order.created
steps:
  - sms: {to: "{{ customer.phone }}", text: "Thanks!", category: transactional}
"""


def _sent_to(tmp_path: Path, customer: dict[str, Any]) -> str:
    order = event("order.created", id_="o-1", order={"id": "1"})
    order = type(order)(**{**order.__dict__, "data": {**order.data, "customer": customer}})
    [action] = simulate([flow_from(tmp_path, SMS_FLOW)], [Scheduled(T0, (order,))], T0).actions
    return str(action.params["to"])


def test_a_national_number_is_made_international_with_the_customers_country(tmp_path: Path) -> None:
    assert _sent_to(tmp_path, {"email": "a@example.com", "phone": "0171 1234567", "country": "DE"}) == "+491711234567"
    assert (
        _sent_to(tmp_path, {"email": "a@example.com", "phone": "+44 7911 123456", "country": "DE"}) == "+447911123456"
    )
    assert _sent_to(tmp_path, {"email": "a@example.com", "phone": "0171 1234567", "country": None}) == "01711234567"


def test_twilio_receives_the_international_number_and_a_national_one_without_country_never_leaves() -> None:
    fake = FakeTwilio("tw-token")
    settings = {
        "account_sid": FakeTwilio.SID,
        "auth_token": Secret("tw-token", "T"),
        "from": "+14155550100",
        "api_url": fake.url,
    }
    sms = REGISTRY["sms"]
    try:
        params = sms.finish_params({"to": "0171 1234567", "text": "hi"}, {"customer": {"country": "DE"}})
        deliver("sms", params, settings)
        unknown = sms.finish_params({"to": "0171 1234567", "text": "hi"}, {"customer": {}})
        with pytest.raises(PermanentError, match=r"E\.164"):
            deliver("sms", unknown, settings)
        with pytest.raises(PermanentError, match=r"E\.164"):
            deliver("sms", {"to": "+4917", "text": "hi"}, settings)  # E.164-shaped, too short for Germany
    finally:
        fake.close()
    assert [m["To"] for m in fake.sent] == ["+491711234567"]


def test_sendable() -> None:
    assert sendable("+14155550123") and sendable("+15005550001")  # Twilio's test range: the provider judges
    assert not sendable("+4917") and not sendable("4155550123") and not sendable("+1 415 555 0123")
