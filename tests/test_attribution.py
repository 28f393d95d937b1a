"""Engagement tied to the send, suppression, machine opens, last-touch windows and the split
comparison, played on the simulated clock (the in-memory adapters); `flowrun report` and
`dry-run --report` through the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowrun.attribution import windows
from flowrun.attribution.figures import ArmResult, compare
from flowrun.attribution.sources import from_memory
from flowrun.dryrun.simulator import Simulator
from flowrun.dryrun.stubs import Stub, Stubs
from flowrun.errors import ConfigError
from flowrun.events import Event, customer_key
from flowrun.flow.loader import load_flow
from flowrun.runtime.settings import Settings

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TWO_EMAILS = """
flow: two-emails
on: customer.created
steps:
  - name: first
    email: {to: "{{ customer.email }}", subject: One, text: one}
  - wait: 1d
  - name: second
    email: {to: "{{ customer.email }}", subject: Two, text: two}
"""
PUSH_AND_SMS = """
flow: nudges
on: custom.nudge
steps:
  - name: ping
    push: {to: "{{ customer.id }}", title: Hi}
  - name: text
    sms: {to: "+14155550123", text: Hi}
"""


def _event(kind: str, at: datetime, event_id: str, data: dict[str, Any], source: str = "shop") -> Event:
    return Event(kind, source, event_id, at, data, customer_key=customer_key(data))


def customer(email: str, at: datetime = T0, n: int = 1) -> Event:
    return _event("customer.created", at, f"c-{email}", {"customer": {"id": str(n), "email": email}})


def engaged(kind: str, message_id: str, at: datetime, email: str = "ada@example.com", **extra: Any) -> Event:
    message = {"provider": "postmark", "id": message_id, "channel": "email", "recipient": email, **extra}
    data = {"customer": {"email": email}, "message": message}
    return _event(f"message.{kind}", at, f"pm:{kind}:{message_id}:{at.isoformat()}", data, "postmark")


def order(email: str, at: datetime, total: str = "42.50", n: int = 1) -> Event:
    data = {
        "customer": {"email": email},
        "order": {"id": str(9000 + n), "total_price": Decimal(total), "currency": "EUR"},
    }
    return _event("order.created", at, f"o-{n}", data)


def play(tmp_path: Path, texts: list[str], events: list[Event], stubs: list[Stub], **settings: Any) -> Simulator:
    flows = []
    for i, text in enumerate(texts):
        (tmp_path / f"f{i}.yaml").write_text(text)
        flows.append(load_flow(tmp_path / f"f{i}.yaml"))
    sim = Simulator(flows, T0, Settings(**settings), Stubs(tuple(stubs)).with_flows(flows))
    for event in events:
        sim.add_event(event.occurred_at, event)
    sim.run(T0 + timedelta(days=10))
    return sim


def ids(*pairs: tuple[str, str]) -> list[Stub]:
    return [Stub({"message_id": mid}, step=step) for step, mid in pairs]


def test_a_send_is_recorded_with_run_step_and_recipient_and_an_open_is_tied_to_it(tmp_path: Path) -> None:
    sim = play(
        tmp_path,
        [TWO_EMAILS],
        [customer("ada@example.com"), engaged("opened", "m-1", T0 + timedelta(hours=2))],
        ids(("first", "m-1"), ("second", "m-2")),
    )
    store = sim.uow.messages
    first, second = store.get("m-1"), store.get("m-2")
    assert first is not None and second is not None
    run = sim.uow.runs.runs[first.run_id]
    assert (first.flow_id, first.step, first.channel, first.recipient) == (
        "two-emails",
        "first",
        "email",
        "ada@example.com",
    )
    assert first.customer_key == run.customer_key == "email:ada@example.com"
    assert first.sent_at == T0 and second.sent_at == T0 + timedelta(days=1)
    assert first.opened_at == first.human_opened_at == T0 + timedelta(hours=2)
    assert second.opened_at is None
    [kept] = store.engagements.values()
    assert kept.send_key == first.send_key


def test_an_unknown_message_id_is_kept_counted_and_shown_never_an_error(tmp_path: Path) -> None:
    sim = play(tmp_path, [TWO_EMAILS], [engaged("clicked", "nobody-sent-this", T0)], [])
    report = from_memory(sim.uow.messages)
    assert report.unknown.count == 1 and report.unknown.by_kind == {"clicked": 1}
    assert report.unknown.examples == (("postmark", "clicked", "nobody-sent-this"),)
    assert report.steps == []


def test_a_hard_bounce_suppresses_marketing_to_the_address_and_a_soft_one_does_not(tmp_path: Path) -> None:
    for bounce, skipped in (("hard", True), ("soft", False)):
        folder = tmp_path / bounce
        folder.mkdir()
        sim = play(
            folder,
            [TWO_EMAILS],
            [customer("ada@example.com"), engaged("bounced", "m-1", T0 + timedelta(hours=1), bounce_type=bounce)],
            ids(("first", "m-1"), ("second", "m-2")),
        )
        second = [s for s in sim.uow.outbox.rows.values() if s.step.endswith("[2]")]
        assert [s.status.value for s in second] == (["skipped"] if skipped else ["delivered"])
        assert sim.uow.consent.suppressed("email:ada@example.com") is skipped
        if skipped:
            assert "message.bounced" in sim.uow.consent.unsubscribed["email:ada@example.com"]


def test_a_complaint_suppresses_marketing(tmp_path: Path) -> None:
    sim = play(
        tmp_path,
        [TWO_EMAILS],
        [customer("ada@example.com"), engaged("complained", "m-1", T0 + timedelta(hours=1))],
        ids(("first", "m-1"), ("second", "m-2")),
    )
    assert sim.uow.consent.suppressed("email:ada@example.com")
    assert sim.uow.messages.get("m-2") is None  # skipped, so never sent


def test_a_machine_open_is_marked_and_attributes_nothing_unless_the_project_counts_them(tmp_path: Path) -> None:
    timeline = [
        customer("ada@example.com"),
        engaged("opened", "m-1", T0 + timedelta(hours=1), machine_open=True),
        order("ada@example.com", T0 + timedelta(hours=5)),
    ]
    stubs = ids(("first", "m-1"), ("second", "m-2"))
    sim = play(tmp_path, [TWO_EMAILS], timeline, stubs)
    message = sim.uow.messages.get("m-1")
    assert message is not None and message.opened_at is not None and message.human_opened_at is None
    assert sim.uow.messages.attributions == {}
    report = from_memory(sim.uow.messages)
    [(_, figures), _] = report.steps
    assert figures.counts["opened"] == 1 and figures.counts["opened_human"] == 0
    counting = windows.Attribution(machine_opens=True)
    (tmp_path / "again").mkdir()
    sim = play(tmp_path / "again", [TWO_EMAILS], timeline, stubs, attribution=counting)
    [credited] = sim.uow.messages.attributions.values()
    assert (credited.message_id, credited.touch, credited.amount) == ("m-1", "opened", Decimal("42.50"))


def test_last_touch_takes_the_most_recent_message_in_its_window(tmp_path: Path) -> None:
    timeline = [
        customer("ada@example.com"),
        engaged("opened", "m-1", T0 + timedelta(hours=1)),
        engaged("clicked", "m-2", T0 + timedelta(days=1, hours=2)),
        order("ada@example.com", T0 + timedelta(days=3), "99.90"),
    ]
    sim = play(tmp_path, [TWO_EMAILS], timeline, ids(("first", "m-1"), ("second", "m-2")))
    [credited] = sim.uow.messages.attributions.values()
    assert (credited.message_id, credited.step, credited.touch) == ("m-2", "second", "clicked")
    assert credited.touched_at == T0 + timedelta(days=1, hours=2)
    report = from_memory(sim.uow.messages)
    by_step = {k.step: f for k, f in report.steps}
    assert by_step["second"].revenue == {"EUR": Decimal("99.90")} and by_step["second"].counts["converted"] == 1
    assert by_step["first"].orders == 0


def test_an_order_past_every_window_is_attributed_to_nothing(tmp_path: Path) -> None:
    timeline = [
        customer("ada@example.com"),
        engaged("opened", "m-1", T0 + timedelta(hours=1)),
        order("ada@example.com", T0 + timedelta(days=6, hours=2)),
    ]
    sim = play(tmp_path, [TWO_EMAILS], timeline, ids(("first", "m-1"), ("second", "m-2")))
    assert sim.uow.messages.attributions == {}  # 5 d after the open; m-2 was sent, never opened


def test_push_counts_for_24h_after_it_was_sent_and_an_sms_open_for_one_day(tmp_path: Path) -> None:
    nudge = _event("custom.nudge", T0, "n-1", {"customer": {"id": "7", "email": "ada@example.com"}})
    stubs = ids(("ping", "push-1"), ("text", "sms-1"))
    sim = play(tmp_path, [PUSH_AND_SMS], [nudge, order("ada@example.com", T0 + timedelta(hours=23))], stubs)
    [credited] = sim.uow.messages.attributions.values()
    assert (credited.channel, credited.touch) == ("push", "sent")
    (tmp_path / "later").mkdir()
    sim = play(tmp_path / "later", [PUSH_AND_SMS], [nudge, order("ada@example.com", T0 + timedelta(hours=25))], stubs)
    assert sim.uow.messages.attributions == {}
    sms_open = engaged("opened", "sms-1", T0 + timedelta(hours=1))
    for hours, attributed in ((20, True), (26, False)):
        folder = tmp_path / f"sms-{hours}"
        folder.mkdir()
        late = order("ada@example.com", T0 + timedelta(hours=hours + 1))
        sim = play(folder, [PUSH_AND_SMS], [nudge, sms_open, late], stubs)
        found = [(a.channel, a.touch) for a in sim.uow.messages.attributions.values()]
        assert found == ([("sms", "opened")] if attributed else [])


def test_windows_come_from_the_project_file_and_are_validated(tmp_path: Path) -> None:
    from flowrun.config import load_config

    good = tmp_path / "flowrun.yaml"
    good.write_text(
        "attribution:\n  windows: {email: {opened: 2d, delivered: 1h}, push: {sent: false}}\n  min_sample: 50\n"
    )
    chosen = load_config(good).attribution
    assert chosen.windows["email"] == {"opened": timedelta(days=2), "delivered": timedelta(hours=1)}
    assert chosen.windows["push"] == {} and chosen.windows["sms"] == windows.DEFAULT_WINDOWS["sms"]
    assert chosen.min_sample == 50 and not chosen.machine_opens
    bad = tmp_path / "bad.yaml"
    bad.write_text("attribution:\n  windows: {email: {openned: 2d}, fax: {sent: 1d}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    text = str(caught.value) + " ".join(str(p) for p in getattr(caught.value, "problems", []))
    assert "openned" in text and "fax" in text


def test_the_split_comparison_states_its_test_threshold_and_sample() -> None:
    few = compare("f", "s", (ArmResult("a", 40, 10), ArmResult("b", 40, 2)), 100)
    assert few.ahead is None and "each arm needs 100 runs (a has 40, b has 40)" in few.verdict
    clear = compare("f", "s", (ArmResult("a", 200, 12), ArmResult("b", 200, 40)), 100)
    assert clear.ahead == "b" and clear.z is not None and clear.z >= 1.96 and "b is ahead" in clear.verdict
    close = compare("f", "s", (ArmResult("a", 200, 20), ArmResult("b", 200, 24)), 100)
    assert close.ahead is None and close.z is not None and 0 < close.z < 1.96 and "no arm is ahead" in close.verdict
    same = compare("f", "s", (ArmResult("a", 200, 0), ArmResult("b", 200, 0)), 100)
    assert same.ahead is None


def _timeline(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


def test_the_ab_library_flow_report_names_the_arm_that_is_ahead(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    people = [f"p{n}@example.com" for n in range(400)]
    signups = [
        {
            "at": "0s",
            "event": {
                "type": "customer.created",
                "id": f"c-{n}",
                "data": {"customer": {"id": str(n), "email": e, "accepts_marketing": True}},
            },
        }
        for n, e in enumerate(people)
    ]
    first = cli(
        "dry-run",
        "flows/ab-welcome-offer.yaml",
        "--timeline",
        str(_timeline(tmp_path / "a.yaml", signups)),
        "--format",
        "json",
    )
    assert first.exit_code == 0, first.stderr
    sent = {run["trigger"]["id"]: run["actions"][0] for run in json.loads(first.stdout)["runs"]}
    later = list(signups)
    for n, email in enumerate(people):
        action = sent[f"c-{n}"]
        buys = n % 4 == 0 if action["name"] == "welcome-plain" else n % 4 != 3  # 25 % against 75 %
        if buys:
            opened = {
                "provider": "postmark",
                "id": action["result"]["message_id"],
                "channel": "email",
                "recipient": email,
            }
            later.append(
                {
                    "at": "2h",
                    "event": {
                        "type": "message.opened",
                        "source": "postmark",
                        "id": f"open-{n}",
                        "data": {"customer": {"email": email}, "message": opened},
                    },
                }
            )
            later.append(
                {
                    "at": "1d",
                    "event": {
                        "type": "order.created",
                        "id": f"o-{n}",
                        "data": {
                            "customer": {"email": email},
                            "order": {"id": str(n), "total_price": "20.00", "currency": "USD"},
                        },
                    },
                }
            )
    timeline = str(_timeline(tmp_path / "b.yaml", later))
    shown = cli("dry-run", "flows/ab-welcome-offer.yaml", "--timeline", timeline, "--report", "--format", "json")
    assert shown.exit_code == 0, shown.stderr
    report = json.loads(shown.stdout)
    [split] = report["splits"]
    assert split["ahead"] == "discount" and split["z"] >= 1.96, (split["verdict"], split["arms"])
    assert {a["arm"] for a in split["arms"]} == {"plain", "discount"} and sum(a["runs"] for a in split["arms"]) == 400
    [flow] = report["flows"]
    assert flow["recipients"] == 400 and flow["orders"] == flow["converted"]
    assert flow["revenue"] == {"USD": f"{Decimal('20.00') * flow['orders']:.2f}"}
    text = cli("dry-run", "flows/ab-welcome-offer.yaml", "--timeline", timeline, "--report")
    assert text.exit_code == 0 and "discount is ahead" in text.stdout and "z = " in text.stdout


WAITS_ON = """
flow: waits-on
on: customer.created
steps:
  - name: welcome-1
    email: {to: "{{ customer.email }}", subject: hi, text: hi}
  - name: note
    log: {message: x}
  - wait: {for: message.opened, step: STEP, timeout: 2d}
"""


@pytest.mark.parametrize(
    ("step", "events", "message", "fix"),
    [
        (
            "welcome-2",
            "message.opened",
            "no step named 'welcome-2' in this flow (steps that send: welcome-1)",
            "did you mean 'welcome-1'?",
        ),
        (
            "note",
            "message.opened",
            "step 'note' is a `log` step, which sends no customer message",
            "name an email, sms or push step: welcome-1",
        ),
        (
            "welcome-1",
            "order.created",
            "`step:` picks the message a step sent, and 'order.created' is not a message event",
            "wait for message.",
        ),
    ],
)
def test_a_wait_on_a_step_that_is_not_a_send_fails_validate_with_a_fix(
    cli, tmp_path: Path, step: str, events: str, message: str, fix: str
) -> None:  # type: ignore[no-untyped-def]
    flow = tmp_path / "waits.yaml"
    flow.write_text(WAITS_ON.replace("STEP", step).replace("for: message.opened", f"for: {events}"))
    result = cli("validate", str(flow))
    assert result.exit_code == 1
    assert "waits.yaml:9:" in result.stdout and message in result.stdout and f"fix: {fix}" in result.stdout
    good = tmp_path / "good.yaml"
    good.write_text(WAITS_ON.replace("STEP", "welcome-1"))
    assert cli("validate", str(good)).exit_code == 0


def test_hostile_engagement_and_orders_are_kept_harmlessly(tmp_path: Path) -> None:
    odd = engaged("opened", "m-1", T0 + timedelta(hours=1))
    odd = Event(
        odd.type,
        odd.source,
        odd.id,
        odd.occurred_at,
        {**odd.data, "message": {"id": 12345, "run": "forged-run", "step": "first"}},
        customer_key=odd.customer_key,
    )
    huge = order("ada@example.com", T0 + timedelta(hours=2), "1e400", n=2)
    nan = order("ada@example.com", T0 + timedelta(hours=3), "NaN", n=3)
    sim = play(
        tmp_path,
        [TWO_EMAILS],
        [customer("ada@example.com"), engaged("clicked", "m-1", T0), odd, huge, nan],
        ids(("first", "m-1"), ("second", "m-2")),
    )
    report = from_memory(sim.uow.messages)
    assert report.unknown.count == 1  # a message id that is not text matches nothing
    amounts = sorted(a.amount for a in sim.uow.messages.attributions.values())
    assert amounts == [Decimal(0), Decimal(0)]  # absurd totals count as no money, never an error
    run = next(iter(sim.uow.runs.runs.values()))
    assert run.status.value == "completed"


def test_an_event_that_claims_a_run_itself_does_not_end_its_wait(tmp_path: Path) -> None:
    """What ties an event to a run is the send's record, never the event's own fields."""
    (tmp_path / "f.yaml").write_text((Path(__file__).parent.parent / "flows/welcome-not-opened-push.yaml").read_text())
    flow = load_flow(tmp_path / "f.yaml")
    sim = Simulator([flow], T0, Settings(), Stubs((Stub({"message_id": "m-1"}, step="welcome-1"),)).with_flows([flow]))
    sim.add_event(
        T0,
        _event(
            "customer.created",
            T0,
            "c-1",
            {"customer": {"id": "5", "email": "ada@example.com", "accepts_marketing": True}},
        ),
    )
    sim.run(T0 + timedelta(minutes=1))
    [run_id] = sim.uow.runs.runs
    forged = engaged("opened", "not-m-1", T0 + timedelta(hours=1))
    message = {**forged.data["message"], "run": run_id, "step": "welcome-1"}
    sim.add_event(forged.occurred_at, replace(forged, data={**forged.data, "message": message}))
    sim.run(T0 + timedelta(days=3))
    assert [s.action for s in sim.uow.outbox.rows.values()] == ["email", "push"]  # the wait timed out
