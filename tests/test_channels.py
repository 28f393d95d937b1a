"""Acceptance for the channels: the library's flows deliver, to real peers on 127.0.0.1,
exactly what their dry-run predicted (same steps, same times, same content).

Serve runs in-process (engine loop + dispatcher on SQLite) on a test clock that jumps to each
next due time; dry-run plays the same events with the same project settings."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from flowrun.cli import app
from flowrun.config import load_config
from flowrun.dryrun.session import Derive, load_all_flows, simulate
from flowrun.dryrun.timeline import Scheduled
from flowrun.events.normalise import normalise, parse_json
from flowrun.state.schema import attempts, loyalty_ledger, outbox, runs
from tests.conftest import ROOT
from tests.fakeproviders import FakeSlack, FakeTwilio, SmtpServer
from tests.fakestores import FakeShopify
from tests.node import Node
from tests.servekit import Clock

START = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)
SHOPIFY = ROOT / "examples/events/shopify"
LIBRARY = [
    "order-confirmation",
    "abandoned-checkout",
    "low-stock-purchase-order",
    "vip-tagging",
    "loyalty-points",
    "loyalty-milestone",
]
CUSTOMER_ID = 7362947358123456789


class Peers:
    def __init__(self) -> None:
        self.smtp = SmtpServer()
        self.slack = FakeSlack()
        self.twilio = FakeTwilio("twilio-token")
        self.shopify = FakeShopify("shpat_test", [])
        customer = json.loads((SHOPIFY / "customers/update.json").read_bytes())
        self.shopify.customers[CUSTOMER_ID] = {"id": CUSTOMER_ID, "tags": customer["tags"]}

    def close(self) -> None:
        self.smtp.close()
        for peer in (self.slack, self.twilio, self.shopify):
            peer.close()


@pytest.fixture
def peers() -> Iterator[Peers]:
    p = Peers()
    yield p
    p.close()


def project(tmp_path: Path, peers: Peers, monkeypatch: pytest.MonkeyPatch, extra: dict[str, str]) -> Path:
    flows = tmp_path / "flows"
    flows.mkdir()
    for name, text in extra.items():
        (flows / f"{name}.yaml").write_text(text)
    for name in LIBRARY:
        shutil.copy(ROOT / "flows" / f"{name}.yaml", flows)
    shutil.copytree(ROOT / "flows/templates", flows / "templates")
    for name, value in {
        "SHOPIFY_WEBHOOK_SECRET": "shpss_test",
        "SHOPIFY_API_TOKEN": "shpat_test",
        "TWILIO_AUTH_TOKEN": "twilio-token",
        "SLACK_WEBHOOK_URL": peers.slack.hook,
    }.items():
        monkeypatch.setenv(name, value)
    file = tmp_path / "flowrun.yaml"
    file.write_text(f"""
database: sqlite:///state.db
flows: flows
timezone: Europe/Berlin
sources:
  shopify:
    webhook_secret: {{env: SHOPIFY_WEBHOOK_SECRET}}
    api_token: {{env: SHOPIFY_API_TOKEN}}
    api_url: {peers.shopify.api}
channels:
  email:
    from: "Knit & Co <hello@knit.example>"
    smtp: {{host: 127.0.0.1, port: {peers.smtp.port}, security: none}}
    unsubscribe_url: "https://knit.example/unsubscribe?email={{email}}"
  sms:
    account_sid: {FakeTwilio.SID}
    auth_token: {{env: TWILIO_AUTH_TOKEN}}
    from: "+14155550100"
    api_url: {peers.twilio.url}
  slack:
    webhook_url: {{env: SLACK_WEBHOOK_URL}}
  purchase_order: {{via: email}}
guardrails:
  quiet_hours: {{start: "21:00", end: "08:00", channels: [sms]}}
  caps: {{email: {{max: 2, per: 16h}}}}
""")
    return file


class Serve:
    """The serve path in-process (an engine loop and a dispatcher), its clock jumping to each next due time."""

    def __init__(self, config_file: Path) -> None:
        self.config = load_config(config_file)
        self.clock = Clock(START)
        self.node = Node(self.config, self.clock)
        self.engine = self.node.db

    def deliver(self, kind: str, body: bytes, delivery: str) -> None:
        source, topic = _source(kind)
        self.node.deliver(source, topic or json.loads(body)["type"], body, delivery)

    def run_until(self, horizon: datetime) -> None:
        self.node.run_until(horizon)

    def sent(self) -> set[tuple[str, str, datetime, str]]:
        """(key, action, time, outcome) of every finished attempt: what serve did, and when."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(attempts.c.key, outbox.c.action, attempts.c.at, attempts.c.outcome).join(
                    outbox, outbox.c.key == attempts.c.key
                )
            ).all()
        return {(k, a, at.replace(tzinfo=UTC) if at.tzinfo is None else at, o) for k, a, at, o in rows}


Events = list[tuple[timedelta, str, bytes]]  # offset, "source:topic" (or "custom"), body


def _source(kind: str) -> tuple[str, str | None]:
    source, _, topic = kind.partition(":")
    return source, topic or None


def predicted(config_file: Path, events: Events, horizon: datetime) -> list[Any]:
    config = load_config(config_file)
    derive = Derive.of(config)
    scheduled = [
        Scheduled(
            START + offset,
            tuple(
                normalise(
                    parse_json(body),
                    source=_source(kind)[0],
                    topic=_source(kind)[1],
                    delivery_id=f"d{i}" if kind.startswith("shopify") else None,
                    received_at=START + offset,
                )
            ),
        )
        for i, (offset, kind, body) in enumerate(events)
    ]
    result = simulate(load_all_flows([config.flows]), scheduled, START, horizon, derive)
    return [a for a in result.actions if a.flow_id in LIBRARY or a.flow_id.startswith("promo")]


def play(
    tmp_path: Path,
    peers: Peers,
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
    hours: int,
    flows: dict[str, str] | None = None,
    compare: bool = True,
) -> tuple[list[Any], Serve]:
    config_file = project(tmp_path, peers, monkeypatch, flows or {})
    horizon = START + timedelta(hours=hours)
    expected = predicted(config_file, events, horizon)
    serve = Serve(config_file)
    for i, (offset, kind, body) in enumerate(events):
        serve.run_until(START + offset)
        serve.clock.now = START + offset
        serve.deliver(kind, body, f"d{i}")
    serve.run_until(horizon)
    # Same steps, at the same times: every predicted action was performed once, when predicted.
    performed = {(k, a, at) for k, a, at, outcome in serve.sent() if outcome in ("ok", "skipped")}
    assert not compare or performed == {(f"{x.run_id}/{x.step}", x.type, x.at) for x in expected}
    return expected, serve


def emails(peers: Peers) -> list[tuple[str, str, str]]:
    return [(m["To"], m["Subject"], _lf(m.get_body(("plain",)).get_content())) for m in peers.smtp.messages]


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").strip()


def test_order_confirmation_delivers_what_dry_run_predicted(tmp_path: Path, peers: Peers, monkeypatch) -> None:
    order = (SHOPIFY / "orders/create.json").read_bytes()
    expected, _ = play(tmp_path, peers, monkeypatch, [(timedelta(0), "shopify:orders/create", order)], hours=2)
    [confirmation] = [x for x in expected if x.flow_id == "order-confirmation"]
    assert emails(peers) == [
        (confirmation.params["to"], confirmation.params["subject"], confirmation.params["text"].strip())
    ]
    [message] = peers.smtp.messages
    assert _lf(message.get_body(("html",)).get_content()) == confirmation.params["html"].strip()
    assert "List-Unsubscribe" not in message  # transactional


def test_abandoned_checkout_creates_a_real_code_and_respects_quiet_hours(
    tmp_path: Path, peers: Peers, monkeypatch
) -> None:
    checkout = (SHOPIFY / "checkouts/create.json").read_bytes()
    expected, _ = play(tmp_path, peers, monkeypatch, [(timedelta(0), "shopify:checkouts/create", checkout)], hours=48)
    by_type = {x.type: x for x in expected}
    code = by_type["discount"].result["code"]
    assert [c["code"] for c in peers.shopify.codes.values()] == [code]  # made through the Admin API
    [rule] = peers.shopify.price_rules.values()
    assert (rule["value_type"], rule["value"], rule["usage_limit"]) == ("percentage", "-10", 1)
    predicted_mail = [
        (x.params["to"], x.params["subject"], x.params["text"].strip()) for x in expected if x.type == "email"
    ]
    assert emails(peers) == predicted_mail and code in predicted_mail[1][1]
    assert all(m["List-Unsubscribe"] for m in peers.smtp.messages)  # marketing
    sms = by_type["sms"]
    assert peers.twilio.sent == [{"To": sms.params["to"], "From": "+14155550100", "Body": sms.params["text"]}]
    # due at 14:00 UTC the next day, 09:00 in the customer's New York: outside quiet hours
    assert sms.at == by_type["email"].at == START + timedelta(hours=24)


def test_low_stock_raises_a_purchase_order_by_email(tmp_path: Path, peers: Peers, monkeypatch) -> None:
    level = json.loads((SHOPIFY / "inventory_levels/update.json").read_bytes())
    body = json.dumps({**level, "sku": "BEANIE-CHA"}).encode()
    expected, _ = play(tmp_path, peers, monkeypatch, [(timedelta(0), "shopify:inventory_levels/update", body)], hours=1)
    po = next(x for x in expected if x.type == "purchase_order")
    [message] = peers.smtp.messages
    assert message["To"] == po.params["send_to"] and po.result["number"] in message["Subject"]
    files = {part.get_filename(): part.get_content() for part in message.iter_attachments()}
    rows = files[f"{po.result['number']}.csv"].strip().splitlines()
    assert rows == ["sku,title,quantity", *[f"{i['sku']},{i['title']},{i['quantity']}" for i in po.params["items"]]]
    assert "BEANIE-CHA" in files[f"{po.result['number']}.html"]
    assert [p["text"] for p in peers.slack.posts] == [x.params["text"] for x in expected if x.type == "slack"]


def test_vip_tagging_tags_the_customer_in_shopify(tmp_path: Path, peers: Peers, monkeypatch) -> None:
    customer = (SHOPIFY / "customers/update.json").read_bytes()
    expected, _ = play(tmp_path, peers, monkeypatch, [(timedelta(0), "shopify:customers/update", customer)], hours=1)
    assert peers.shopify.customers[CUSTOMER_ID]["tags"] == "newsletter, returning, vip"
    assert [p["text"] for p in peers.slack.posts] == [x.params["text"] for x in expected if x.type == "slack"]
    assert emails(peers) == [
        (x.params["to"], x.params["subject"], x.params["text"].strip()) for x in expected if x.type == "email"
    ]


PROMO_FLOWS = {
    "promo-sms": (
        "flow: promo-sms\non: custom.evening_promo\nsteps:\n"
        '  - sms: {to: "{{ customer.phone }}", text: "Tonight only: 20% off knitwear"}\n'
    ),
    "promo-email": (
        "flow: promo-email\non: custom.promo\nsteps:\n"
        '  - email: {to: "{{ customer.email }}", subject: "New: {{ properties.promo }}",\n'
        '            text: "{{ properties.promo }} are in."}\n'
    ),
}


def custom(kind: str, email: str, n: int = 0, promo: str = "", **customer: Any) -> tuple[str, bytes]:
    data: dict[str, Any] = {"customer": {"email": email, "accepts_marketing": True, **customer}}
    if promo:
        data["properties"] = {"promo": promo}
    return "custom", json.dumps({"type": kind, "id": f"{kind}-{email}-{n}", "data": data}).encode()


def test_guardrails_defer_in_quiet_hours_cap_and_suppress(tmp_path: Path, peers: Peers, monkeypatch) -> None:
    order = json.loads((SHOPIFY / "orders/create.json").read_bytes())
    bo = {"email": "bo@example.com", "id": 2, "first_name": "Bo"}
    bo_order = json.dumps({**order, "id": 1, "email": bo["email"], "customer": {**order["customer"], **bo}}).encode()
    hour = timedelta(hours=1)
    events: Events = [
        (1 * hour, *custom("custom.promo", "ada@example.com", 1, "Scarves")),
        (2 * hour, *custom("custom.promo", "ada@example.com", 2, "Hats")),
        (3 * hour, *custom("custom.promo", "ada@example.com", 3, "Mittens")),  # over the cap: 2 per 16 h
        (4 * hour, *custom("custom.unsubscribe", "bo@example.com")),
        (5 * hour, *custom("custom.promo", "bo@example.com", 4, "Socks")),  # suppressed
        (6 * hour, "shopify:orders/create", bo_order),  # transactional: passes
        # START + 14 h = 04:00 UTC = 23:00 in New York, inside quiet hours 21:00-08:00 there
        (
            14 * hour,
            *custom("custom.evening_promo", "ny@example.com", phone="+12125550123", timezone="America/New_York"),
        ),
    ]
    expected, serve = play(tmp_path, peers, monkeypatch, events, hours=40, flows=PROMO_FLOWS)
    [sms] = peers.twilio.sent
    assert sms["To"] == "+12125550123"
    [(_, _, sent_at, _)] = [s for s in serve.sent() if s[1] == "sms" and s[3] == "ok"]
    assert sent_at == datetime(2026, 1, 6, 13, 0, tzinfo=UTC)  # 08:00 in New York, not dropped
    assert [(to, subject) for to, subject, _ in emails(peers)] == [
        ("ada@example.com", "New: Scarves"),
        ("ada@example.com", "New: Hats"),
        ("bo@example.com", "Order #1042 confirmed"),
    ]
    skipped = {k: o for k, _, _, o in serve.sent() if o == "skipped"}
    with serve.engine.connect() as conn:
        reasons = dict(
            conn.execute(select(attempts.c.key, attempts.c.detail).where(attempts.c.outcome == "skipped")).all()
        )
    assert len(skipped) == 2
    assert sorted(reasons.values()) == [
        "frequency cap: at most 2 marketing email per 16 h (last sent 2026-01-05T16:00:00+00:00)",
        "suppressed: the customer unsubscribed from marketing",
    ]
    assert sorted(x.skipped for x in expected if x.skipped) == sorted(reasons.values())  # dry-run said so too


def test_loyalty_ledger_balances_and_its_event_start_other_flows(tmp_path: Path, peers: Peers, monkeypatch) -> None:
    order = json.loads((SHOPIFY / "orders/paid.json").read_bytes())
    lin = {**order["customer"], "id": 5, "email": "lin@example.com", "total_spent": "0.00"}

    def paid(n: int, total: str) -> bytes:
        return json.dumps({**order, "id": n, "name": f"#{n}", "total_price": total, "customer": lin}).encode()

    day = timedelta(days=1)
    events: Events = [
        (0 * day, "shopify:orders/paid", paid(1, "320.00")),
        (2 * day, "shopify:orders/paid", paid(2, "250.00")),
        (4 * day, "shopify:orders/paid", paid(3, "90.00")),
    ]
    expected, serve = play(tmp_path, peers, monkeypatch, events, hours=24 * 5)
    assert emails(peers) == [
        (
            "lin@example.com",
            "You have 570 points",
            next(x.params["text"] for x in expected if x.flow_id == "loyalty-milestone"),
        )
    ]
    with serve.engine.connect() as conn:
        ledger = conn.execute(
            select(
                loyalty_ledger.c.points, loyalty_ledger.c.balance, loyalty_ledger.c.reason, loyalty_ledger.c.run_id
            ).order_by(loyalty_ledger.c.at)
        ).all()
        earned = conn.execute(select(outbox.c.key, outbox.c.params).where(outbox.c.action == "loyalty_points")).all()
    assert [(p, b, r) for p, b, r, _ in ledger] == [
        (320, 320, "order #1"),
        (250, 570, "order #2"),
        (90, 660, "order #3"),
    ]
    assert [x.result["balance"] for x in expected if x.type == "loyalty_points"] == [320, 570, 660]
    # An answer applied twice (a re-send after a crash) changes the balance once and starts nothing new.
    key, _ = earned[0]
    with serve.engine.begin() as conn:
        conn.execute(outbox.update().where(outbox.c.key == key).values(applied_at=None))
    serve.run_until(serve.clock() + timedelta(hours=1))
    with serve.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(loyalty_ledger)).scalar() == 3
        assert conn.execute(select(outbox.c.applied_at).where(outbox.c.key == key)).scalar() is not None
        assert (
            conn.execute(select(func.count()).select_from(runs).where(runs.c.flow_id == "loyalty-milestone")).scalar()
            == 3
        )
    result = CliRunner().invoke(app, ["loyalty", "lin@example.com", "--config", str(tmp_path / "flowrun.yaml")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "email:lin@example.com: 660 points"
    assert [line.split()[1:3] for line in lines[2:]] == [["+90", "660"], ["+250", "570"], ["+320", "320"]]
    assert lines[2].split()[3:] == [ledger[2][3], "order", "#3"]


OVERRIDING_FLOWS = {
    **PROMO_FLOWS,
    "promo-flash": (
        "flow: promo-flash\non: custom.flash\n"
        "guardrails: {caps: {email: {max: 5, per: 16h}}, quiet_hours: false}\nsteps:\n"
        '  - email: {to: "{{ customer.email }}", subject: "Flash: {{ properties.promo }}", text: "Today only."}\n'
        '  - if: customer.phone\n    then:\n      - sms: {to: "{{ customer.phone }}", text: "Flash sale now"}\n'
    ),
}


def test_a_flow_overrides_caps_and_quiet_hours_and_sends_still_count(tmp_path: Path, peers: Peers, monkeypatch) -> None:
    hour = timedelta(hours=1)
    events: Events = [
        (1 * hour, *custom("custom.promo", "ada@example.com", 1, "Scarves")),
        (2 * hour, *custom("custom.promo", "ada@example.com", 2, "Hats")),
        (3 * hour, *custom("custom.flash", "ada@example.com", 3, "Gloves")),  # its own cap: 5 per 16 h
        (4 * hour, *custom("custom.promo", "ada@example.com", 4, "Mittens")),  # project cap 2: skipped
        # 23:00 in New York: the project's quiet hours would hold the SMS until 08:00; this flow has none
        (
            14 * hour,
            *custom("custom.flash", "ny@example.com", 5, "Socks", phone="+12125550123", timezone="America/New_York"),
        ),
    ]
    expected, serve = play(tmp_path, peers, monkeypatch, events, hours=30, flows=OVERRIDING_FLOWS)
    assert [subject for _, subject, _ in emails(peers)] == [
        "New: Scarves",
        "New: Hats",
        "Flash: Gloves",
        "Flash: Socks",
    ]
    [sms] = [s for s in serve.sent() if s[1] == "sms" and s[3] == "ok"]
    assert sms[2] == START + 14 * hour  # at once, not at 08:00
    assert [x.params["subject"] for x in expected if x.skipped] == ["New: Mittens"]


def test_a_refused_attempt_is_not_a_send_caps_count_what_the_provider_accepted(
    tmp_path: Path, peers: Peers, monkeypatch
) -> None:
    hour = timedelta(hours=1)
    peers.smtp.refusals = ["550 5.7.1 refused by policy", "451 4.3.0 try again later"]
    events: Events = [
        (1 * hour, *custom("custom.promo", "ada@example.com", 1, "Scarves")),  # refused for good: parked
        (2 * hour, *custom("custom.promo", "ada@example.com", 2, "Hats")),  # refused once, then accepted
        (3 * hour, *custom("custom.promo", "ada@example.com", 3, "Mittens")),  # the cap (2) has room: 1 sent
        (4 * hour, *custom("custom.promo", "ada@example.com", 4, "Socks")),  # over the cap now
    ]
    # dry-run cannot know the SMTP server's refusals: what the peer received is the check
    _, serve = play(tmp_path, peers, monkeypatch, events, hours=20, flows=PROMO_FLOWS, compare=False)
    assert [m["Subject"] for m in peers.smtp.refused] == ["New: Scarves", "New: Hats"]
    assert [subject for _, subject, _ in emails(peers)] == ["New: Hats", "New: Mittens"]
    with serve.engine.connect() as conn:
        rows = conn.execute(select(outbox.c.params, outbox.c.status, outbox.c.attempts, outbox.c.run_id)).all()
        skipped = conn.execute(select(attempts.c.detail).where(attempts.c.outcome == "skipped")).scalars().all()
    by_subject = {json.loads(p)["subject"]: (status, n) for p, status, n, _ in rows}
    [socks_run] = [run for p, _, _, run in rows if json.loads(p)["subject"] == "New: Socks"]
    assert by_subject["New: Scarves"] == ("parked", 1)
    assert by_subject["New: Hats"] == ("delivered", 2)
    assert by_subject["New: Mittens"] == ("delivered", 1)
    assert by_subject["New: Socks"][0] == "skipped"
    [reason] = skipped
    assert reason.startswith("frequency cap: at most 2 marketing email per 16 h")
    config = str(tmp_path / "flowrun.yaml")
    shown = CliRunner().invoke(app, ["show", socks_run, "--config", config])
    assert shown.exit_code == 0, shown.output
    assert "skipped" in shown.output and "frequency cap" in shown.output and "applied" not in shown.output


GOAL_FLOWS = {
    "promo-sms": (
        "flow: promo-sms\non: custom.evening_promo\nuntil: order.created\nsteps:\n"
        '  - sms: {to: "{{ customer.phone }}", text: "Tonight only: 20% off knitwear"}\n'
    ),
}


def test_an_sms_held_for_quiet_hours_is_cancelled_when_its_run_converts_first(
    tmp_path: Path, peers: Peers, monkeypatch
) -> None:
    order = json.loads((SHOPIFY / "orders/create.json").read_bytes())
    ny = {"email": "ny@example.com", "id": 3, "first_name": "Nia"}
    ny_order = json.dumps({**order, "id": 3, "email": ny["email"], "customer": {**order["customer"], **ny}}).encode()
    hour = timedelta(hours=1)
    events: Events = [
        # 23:00 in New York: held until 08:00 there (13:00 UTC the next day)
        (
            14 * hour,
            *custom("custom.evening_promo", "ny@example.com", phone="+12125550123", timezone="America/New_York"),
        ),
        (16 * hour, "shopify:orders/create", ny_order),  # 01:00 in New York: the goal, before the SMS may go
    ]
    expected, serve = play(tmp_path, peers, monkeypatch, events, hours=40, flows=GOAL_FLOWS)
    assert peers.twilio.sent == []
    assert [x for x in expected if x.flow_id == "promo-sms"] == []  # dry-run: nothing sent either
    with serve.engine.connect() as conn:
        [(key, status, error)] = conn.execute(
            select(outbox.c.key, outbox.c.status, outbox.c.last_error).where(outbox.c.action == "sms")
        ).all()
        [run_status] = conn.execute(select(runs.c.status).where(runs.c.flow_id == "promo-sms")).scalars().all()
    assert (status, run_status) == ("cancelled", "converted")
    assert "converted" in (error or "")
    config = str(tmp_path / "flowrun.yaml")
    retried = CliRunner().invoke(app, ["retry", key, "--config", config])
    assert retried.exit_code == 1
    assert f"not re-queued: {key}: " in retried.output and "converted" in retried.output, retried.output
    serve.run_until(serve.clock() + timedelta(days=1))
    assert peers.twilio.sent == []
