"""The pure engine and the manager over the in-memory store, on a simulated clock."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from flowrun.dryrun.simulator import Simulator
from flowrun.engine import engine
from flowrun.engine.state import ActionSucceeded, Perform, Status, TimerFired, Wake
from flowrun.runtime import inputs
from flowrun.runtime.memory import MemoryUnitOfWork
from flowrun.runtime.records import SendStatus
from flowrun.runtime.runtime import Runtime, run_id_for
from flowrun.runtime.settings import Settings
from tests.helpers import T0, event, flow_from, hours

REMINDER = """
flow: remind
on: checkout.abandoned
until: order.created
{extra}
steps:
  - wait: 1h
  - log: {{message: "remind {{{{ customer.email }}}}"}}
"""


def play(flows, events, until=None):
    sim = Simulator(flows, T0)
    for at, ev in events:
        sim.add_event(at, ev)
    return sim.run(until)


def test_a_wait_emits_a_wake_command_and_a_stale_timer_is_ignored(tmp_path: Path) -> None:
    flow = flow_from(tmp_path, REMINDER.format(extra=""))
    run = engine.new_run(flow, event("checkout.abandoned"), "r1", T0)
    first = engine.start(flow, run, T0)
    assert first.run.status is Status.WAITING
    assert first.commands == (Wake("r1", T0 + hours(1)),)
    stale = engine.advance(flow, first.run, TimerFired(T0 + hours(2)), T0 + hours(2))
    assert stale.changed is False
    fired = engine.advance(flow, first.run, TimerFired(T0 + hours(1)), T0 + hours(1))
    [perform] = fired.commands
    assert isinstance(perform, Perform)
    assert perform.params == {"message": "remind ada@example.com"}
    assert perform.key == "r1/steps[1]"
    done = engine.advance(flow, fired.run, ActionSucceeded(perform.key, {}), T0 + hours(1))
    assert done.run.status is Status.COMPLETED
    again = engine.advance(flow, done.run, TimerFired(T0 + hours(1)), T0 + hours(3))
    assert again.changed is False  # a timer that fires twice does nothing the second time


def test_late_timer_still_fires_and_records_lateness(tmp_path: Path) -> None:
    flow = flow_from(tmp_path, REMINDER.format(extra=""))
    waiting = engine.start(flow, engine.new_run(flow, event("checkout.abandoned"), "r1", T0), T0).run
    late = engine.advance(flow, waiting, TimerFired(T0 + hours(1)), T0 + hours(5))
    assert late.run.status is Status.ACTING
    assert any(t.detail.get("late_s") == 4 * 3600 for t in late.run.trace)


def test_goal_converts_only_for_the_same_customer(tmp_path: Path) -> None:
    flow = flow_from(tmp_path, REMINDER.format(extra=""))
    result = play(
        [flow],
        [
            (T0, event("checkout.abandoned")),
            (T0 + hours(0.5), event("order.created", email="someone@else.com")),
            (T0 + hours(0.7), event("order.created")),
        ],
    )
    [run] = result.runs
    assert run.status is Status.CONVERTED
    assert result.actions == []


def test_replayed_event_starts_no_second_run(tmp_path: Path) -> None:
    flow = flow_from(tmp_path, REMINDER.format(extra=""))
    same = event("checkout.abandoned", id_="dup")
    result = play([flow], [(T0, same), (T0 + hours(0.1), same)])
    assert len(result.runs) == 1
    assert result.runs[0].id == run_id_for("remind", "dup")


def test_concurrency_single_skips_while_a_run_is_active(tmp_path: Path) -> None:
    flow = flow_from(tmp_path, REMINDER.format(extra="concurrency: {mode: single}"))
    result = play(
        [flow], [(T0, event("checkout.abandoned", id_="a")), (T0 + hours(0.5), event("checkout.abandoned", id_="b"))]
    )
    assert [r.status for r in result.runs] == [Status.COMPLETED, Status.SKIPPED]
    assert result.runs[1].reason.startswith("concurrency single: run ")
    assert len(result.actions) == 1


def test_concurrency_restart_cancels_the_older_run(tmp_path: Path) -> None:
    flow = flow_from(tmp_path, REMINDER.format(extra="concurrency: {mode: restart}"))
    result = play(
        [flow], [(T0, event("checkout.abandoned", id_="a")), (T0 + hours(0.5), event("checkout.abandoned", id_="b"))]
    )
    assert [r.status for r in result.runs] == [Status.CANCELLED, Status.COMPLETED]
    assert [a.at for a in result.actions] == [T0 + hours(1.5)]


def test_concurrency_queue_runs_one_after_the_other(tmp_path: Path) -> None:
    flow = flow_from(tmp_path, REMINDER.format(extra="concurrency: {mode: queue}"))
    result = play(
        [flow], [(T0, event("checkout.abandoned", id_="a")), (T0 + hours(0.5), event("checkout.abandoned", id_="b"))]
    )
    assert [r.status for r in result.runs] == [Status.COMPLETED, Status.COMPLETED]
    assert [a.at for a in result.actions] == [T0 + hours(1), T0 + hours(2)]


def test_concurrency_parallel_by_default(tmp_path: Path) -> None:
    flow = flow_from(tmp_path, REMINDER.format(extra=""))
    result = play(
        [flow], [(T0, event("checkout.abandoned", id_="a")), (T0 + hours(0.5), event("checkout.abandoned", id_="b"))]
    )
    assert [a.at for a in result.actions] == [T0 + hours(1), T0 + hours(1.5)]


def test_reentry_once_and_window(tmp_path: Path) -> None:
    once = flow_from(tmp_path, REMINDER.format(extra="reentry: once"), "once.yaml")
    window = flow_from(tmp_path, REMINDER.format(extra="reentry: 2d").replace("flow: remind", "flow: window"), "w.yaml")
    events = [
        (T0, event("checkout.abandoned", id_="a")),
        (T0 + hours(24), event("checkout.abandoned", id_="b")),
        (T0 + hours(72), event("checkout.abandoned", id_="c")),
    ]
    statuses = Counter((r.flow_id, r.status) for r in play([once, window], events).runs)
    assert statuses == Counter(
        {
            ("remind", Status.COMPLETED): 1,
            ("remind", Status.SKIPPED): 2,
            ("window", Status.COMPLETED): 2,
            ("window", Status.SKIPPED): 1,
        }
    )


def test_wait_for_event_or_timeout(tmp_path: Path) -> None:
    flow = flow_from(
        tmp_path,
        """
flow: delivered
on: order.created
steps:
  - wait: {for: shipment.delivered, timeout: 3d, as: delivery}
    then:
      - log: {message: "delivered by {{ delivery.shipment.carrier }}"}
    else:
      - log: {message: "no delivery after 3 days"}
""",
    )
    received = play(
        [flow],
        [
            (T0, event("order.created", id_="o1")),
            (T0 + hours(30), event("shipment.delivered", shipment={"carrier": "UPS"})),
        ],
    )
    assert [a.params["message"] for a in received.actions] == ["delivered by UPS"]
    timed_out = play([flow], [(T0, event("order.created", id_="o1"))])
    assert [(a.at - T0, a.params["message"]) for a in timed_out.actions] == [(hours(72), "no delivery after 3 days")]


def test_on_error_continue_and_fail(tmp_path: Path) -> None:
    text = """
flow: errs
on: order.created
steps:
  - http: {{url: "https://hooks.example.com/x"}}
    on_error: {mode}
  - log: {{message: after}}
"""
    for mode, status, actions in (("continue", Status.ACTING, 1), ("fail", Status.FAILED, 0)):
        flow = flow_from(tmp_path, text.format(mode=mode), f"{mode}.yaml")
        runtime, uow = Runtime([flow], Settings()), MemoryUnitOfWork()
        runtime.apply(uow, inputs.EventIn(event("order.created")), T0)
        [send] = uow.outbox.rows.values()
        uow.outbox.put(send.evolve(status=SendStatus.FAILED, last_error="HTTP 500 after 5 attempts"))
        applied = runtime.apply(uow, inputs.OutcomeDue(send.key), T0)
        assert applied.runs[-1].status is status
        assert len(uow.outbox.rows) == 1 + actions
    assert "http failed: HTTP 500 after 5 attempts" in applied.runs[-1].reason


def test_split_is_deterministic_and_follows_the_weights(tmp_path: Path) -> None:
    flow = flow_from(
        tmp_path,
        """
flow: ab
on: customer.created
steps:
  - split:
      - {name: a, weight: 80, steps: [{log: {message: a}}]}
      - {name: b, weight: 20, steps: [{log: {message: b}}]}
""",
    )
    events = [(T0, event("customer.created", email=f"c{i}@example.com", id_=f"c{i}")) for i in range(2000)]
    first = Counter(a.params["message"] for a in play([flow], events).actions)
    second = Counter(a.params["message"] for a in play([flow], events).actions)
    assert first == second
    assert 1500 < first["a"] < 1700  # 80% of 2000, within a generous band


def test_runs_in_flight_finish_on_the_flow_version_they_started_with(tmp_path: Path) -> None:
    old = flow_from(tmp_path, REMINDER.format(extra=""))
    new = flow_from(tmp_path, REMINDER.format(extra="").replace("remind {{ customer.email }}", "NEW"))
    runtime, uow = Runtime([old], Settings()), MemoryUnitOfWork()
    [started] = runtime.apply(uow, inputs.EventIn(event("checkout.abandoned")), T0).runs
    runtime.load([new])
    runtime.apply(uow, inputs.TimerDue(started.id, T0 + hours(1)), T0 + hours(1))
    [send] = uow.outbox.rows.values()
    assert send.params == {"message": "remind ada@example.com"}
    assert old.version != new.version


def test_choose_and_stop(tmp_path: Path) -> None:
    flow = flow_from(
        tmp_path,
        """
flow: tiers
on: order.created
steps:
  - choose:
      - when: order.total_price > 500
        steps: [{stop: "big order, handled by hand"}]
      - when: order.total_price > 100
        steps: [{log: {message: mid}}]
    otherwise:
      - log: {message: small}
  - log: {message: after}
""",
    )
    result = play([flow], [(T0, event("order.created", id_=str(v), order={"total_price": v})) for v in (50, 200, 900)])
    by_run = {r.id: [a.params["message"] for a in result.actions if a.run_id == r.id] for r in result.runs}
    assert list(by_run.values()) == [["small", "after"], ["mid", "after"], []]
    assert result.runs[2].reason == "big order, handled by hand"


def test_simple_templates_render_exactly_like_jinja() -> None:
    from decimal import Decimal

    import pytest

    from flowrun.errors import RenderError
    from flowrun.templating import TEXT_ENV, parse_template

    context = {
        "order": {"number": "1042", "total_price": Decimal("12.50"), "note": None, "items": [1]},
        "customer": {"email": "a@example.com"},
    }
    for source in (
        "Order {{ order.number }}: {{ order.total_price }}",
        "{{customer.email}}",
        "note={{ order.note }}",
        "{{ order.items }}",
        "{{ order['number'] }}",
    ):
        template = parse_template(source, "t")
        assert template.render(context) == TEXT_ENV.from_string(source).render(context) or source.endswith("note }}")
    assert parse_template("note={{ order.note }}", "t").render(context) == "note="
    assert parse_template("{{ order.items }}", "t").simple is None  # `items` is a dict method: Jinja decides
    with pytest.raises(RenderError, match="has no attribute 'nope'"):
        parse_template("{{ order.nope }}", "t").render(context)
