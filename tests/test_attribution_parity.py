"""A dry-run and the serve path (inbox, engine, dispatcher on SQLite and on PostgreSQL, with
real HTTP peers for Postmark and OneSignal) play the same timeline — Shopify customers, Postmark
opens, orders — and come to the same messages, attributions and `flowrun report`."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from flowrun.attribution.render import as_csv, as_json
from flowrun.attribution.sources import from_memory, from_sql
from flowrun.config import Secret
from flowrun.dryrun.simulator import Simulator
from flowrun.dryrun.stubs import Stub, Stubs
from flowrun.events.normalise import normalise
from flowrun.flow.loader import load_flow
from flowrun.state.schema import attributions, engagements, messages
from tests.conftest import ROOT
from tests.fakeproviders import FakeOneSignal, FakePostmark
from tests.node import Node
from tests.servekit import Clock, config, database_params, database_url

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
FLOWS = [ROOT / "flows/welcome-not-opened-push.yaml", ROOT / "flows/ab-welcome-offer.yaml"]
PEOPLE = [(f"c{n}@example.com", f"Name{n}", 800 + n) for n in range(6)]


def pm_id(to: str, subject: str) -> str:
    """What our Postmark answers: an id that is a function of the message (not of send order)."""
    return "pm-" + hashlib.sha256(f"{to}\0{subject}".encode()).hexdigest()[:16]


class Postmark(FakePostmark):
    def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        status, answer, headers = super().write(request)
        if status == 200:
            body = json.loads(request["body"])
            answer = {**answer, "MessageID": pm_id(body["To"], body["Subject"])}
        return status, answer, headers


class OneSignal(FakeOneSignal):
    def write(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        status, answer, headers = super().write(request)
        if status == 200 and answer.get("id"):
            [alias] = json.loads(request["body"])["include_aliases"]["external_id"]
            answer = {**answer, "id": f"os-{alias}"}
        return status, answer, headers


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def shopify(topic: str, at: datetime, **fields: Any) -> tuple[str, str, bytes]:
    sample = "customers/create" if topic.startswith("customers") else "orders/create"
    body = json.loads((ROOT / f"examples/events/shopify/{sample}.json").read_text())
    body.update(created_at=_iso(at), updated_at=_iso(at), **fields)
    if topic == "orders/create":
        body["customer"] = {**body["customer"], "email": fields["email"]}
    return "shopify", topic, json.dumps(body).encode()


def postmark(
    record: str, at: datetime, message_id: str, to: str, agent: str = "Mozilla/5.0 (Macintosh) Gecko"
) -> tuple[str, str, bytes]:
    body = {
        "RecordType": record,
        "MessageID": message_id,
        "Recipient": to,
        "ReceivedAt": _iso(at),
        "UserAgent": agent,
        "MessageStream": "outbound",
    }
    if record == "Click":
        body["OriginalLink"] = "https://shop.example/new"
    return "postmark", record, json.dumps(body).encode()


def timeline(plain_or_discount: dict[str, str]) -> list[tuple[datetime, tuple[str, str, bytes]]]:
    """Everyone signs up; c0 opens the welcome email (a person), c1 only by a machine; c0 and c3
    order; a click on a message nobody sent."""
    out = []
    for email, first, n in PEOPLE:
        out.append((T0, shopify("customers/create", T0, id=n, email=email, first_name=first, accepts_marketing=True)))
    welcome = {email: pm_id(email, f"Welcome, {first}") for email, first, _ in PEOPLE}
    out.append(
        (
            T0 + timedelta(hours=3),
            postmark("Open", T0 + timedelta(hours=3), welcome["c0@example.com"], "c0@example.com"),
        )
    )
    out.append(
        (
            T0 + timedelta(hours=4),
            postmark("Open", T0 + timedelta(hours=4), welcome["c1@example.com"], "c1@example.com", "Mozilla/5.0"),
        )
    )
    ab = plain_or_discount.get("c4@example.com", "")
    out.append((T0 + timedelta(hours=5), postmark("Click", T0 + timedelta(hours=5), ab, "c4@example.com")))
    out.append(
        (T0 + timedelta(hours=6), postmark("Click", T0 + timedelta(hours=6), "pm-nobody-sent-this", "x@example.com"))
    )
    at = T0 + timedelta(days=1)
    out.append((at, shopify("orders/create", at, id=7001, email="c0@example.com", total_price="10.00", currency="EUR")))
    at = T0 + timedelta(days=2, hours=3)
    out.append((at, shopify("orders/create", at, id=7003, email="c3@example.com", total_price="25.50", currency="EUR")))
    at = T0 + timedelta(days=1, hours=1)
    out.append((at, shopify("orders/create", at, id=7004, email="c4@example.com", total_price="99.99", currency="USD")))
    return sorted(out, key=lambda item: item[0])


SUBJECTS = {"welcome-plain": "Welcome to the shop", "welcome-discount": "Welcome: 10% off your first order"}


def _stubs() -> list[Stub]:
    stubs = []
    for email, first, n in PEOPLE:
        stubs.append(Stub({"message_id": pm_id(email, f"Welcome, {first}")}, step="welcome-1", to=email))
        stubs.append(Stub({"message_id": f"os-{n}", "id": f"os-{n}"}, step="welcome-push", to=str(n)))
        for step, subject in SUBJECTS.items():
            stubs.append(Stub({"message_id": pm_id(email, subject)}, step=step, to=email))
    return stubs


def _dry_run(tmp_path: Path) -> tuple[dict[str, Any], str, list[tuple[str, str, str]]]:
    flows = [load_flow(p) for p in FLOWS]
    probe = Simulator(flows, T0, stubs=Stubs(tuple(_stubs())).with_flows(flows))
    plan = timeline({})
    for at, (source, topic, body) in plan[: len(PEOPLE)]:
        for event in normalise(json.loads(body), source=source, topic=topic, received_at=at):
            probe.add_event(at, event)
    probe.run(T0 + timedelta(minutes=1))
    arm_of = {
        m.recipient: m.message_id for m in probe.uow.messages.messages.values() if m.flow_id == "ab-welcome-offer"
    }
    sim = Simulator(flows, T0, stubs=Stubs(tuple(_stubs())).with_flows(flows))
    played = timeline({k: v for k, v in arm_of.items() if k})
    for at, (source, topic, body) in played:
        for event in normalise(json.loads(body), source=source, topic=topic, received_at=at):
            sim.add_event(at, event)
    sim.run(T0 + timedelta(days=8))
    report = from_memory(sim.uow.messages)
    credited = sorted((a.order_id, a.message_id, a.touch) for a in sim.uow.messages.attributions.values())
    return as_json(report), as_csv(report), credited


@pytest.fixture(params=database_params())
def db(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_dry_run_and_serve_of_one_timeline_give_the_same_attributions_and_report(tmp_path: Path, db: str) -> None:
    expected_json, expected_csv, expected_credit = _dry_run(tmp_path)
    mail, push = Postmark("pm-token"), OneSignal("app-1", "os-key", {str(n) for _, _, n in PEOPLE})
    try:
        channels = {
            "email": {
                "from": "hello@shop.example",
                "postmark": {"server_token": Secret("pm-token", "PM"), "api_url": mail.url},
            },
            "push": {"app_id": "app-1", "api_key": Secret("os-key", "OS"), "api_url": push.url},
        }
        folder = tmp_path / "flows"
        folder.mkdir()
        for path in FLOWS:
            (folder / path.name).write_text(path.read_text())
        clock = Clock(T0)
        node = Node(config(tmp_path, database_url(db, tmp_path), folder, channels=channels), clock)
        try:
            for n, (_, (source, topic, body)) in enumerate(timeline({})[: len(PEOPLE)]):  # the signups
                node.deliver(source, topic, body, f"d-{n}")
            node.run_until(T0 + timedelta(minutes=1))  # the arms are known once the signups are applied
            ab = {m["To"]: pm_id(m["To"], m["Subject"]) for m in mail.sent if m["Subject"] in SUBJECTS.values()}
            for n, (at, (source, topic, body)) in enumerate(timeline(ab)[len(PEOPLE) :]):
                node.run_until(at)
                node.deliver(source, topic, body, f"e-{n}")
            node.run_until(T0 + timedelta(days=8))
            with node.db.connect() as conn:
                report = from_sql(conn)
                credited = sorted(
                    (r.order_id, r.message_id, r.touch)
                    for r in conn.execute(
                        select(attributions.c.order_id, attributions.c.message_id, attributions.c.touch)
                    )
                )
                recount = {
                    (r.flow_id, r.step): (r.n, r.opened, r.converted)
                    for r in conn.execute(
                        select(
                            messages.c.flow_id,
                            messages.c.step,
                            func.count().label("n"),
                            func.count(messages.c.opened_at).label("opened"),
                            func.count(messages.c.converted_at).label("converted"),
                        ).group_by(messages.c.flow_id, messages.c.step)
                    )
                }
                unknown = (
                    conn.execute(select(engagements.c.message_id).where(engagements.c.send_key.is_(None)))
                    .scalars()
                    .all()
                )
        finally:
            node.close()
    finally:
        mail.close()
        push.close()
    assert credited == expected_credit
    assert as_json(report) == expected_json
    counted = {(s["flow"], s["step"]): (s["recipients"], s["opened"], s["converted"]) for s in expected_json["steps"]}
    assert counted == recount  # the counters the runtime kept agree with the messages themselves
    assert as_csv(report) == expected_csv
    assert unknown == ["pm-nobody-sent-this"]
    # what the timeline should have come to, said once more in plain terms
    assert [c[0] for c in credited] == ["7001", "7003", "7004"]
    touches = {c[0]: c[2] for c in credited}
    assert touches == {"7001": "opened", "7003": "sent", "7004": "clicked"}  # c3: the push, within 24 h
    flows = {f["flow"]: f for f in expected_json["flows"]}
    # six emails; pushes to c2, c3 and c5 (c0 opened, a machine opened c1's, c4 ordered first)
    assert flows["welcome-not-opened-push"]["recipients"] == 6 + 3
    assert flows["welcome-not-opened-push"]["opened"] == 2 and flows["welcome-not-opened-push"]["opened_human"] == 1
    assert flows["welcome-not-opened-push"]["revenue"] == {"EUR": "35.50"}
    assert flows["ab-welcome-offer"]["revenue"] == {"USD": "99.99"}
