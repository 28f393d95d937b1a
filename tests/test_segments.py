"""Segment files: parsed once, refused with file:line:col and a fix, and their verdicts with
the next moment time alone changes them (what the runtime stores as a due check)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from flowrun.errors import SegmentError
from flowrun.profile.record import OrderRow, Profile, ordered
from flowrun.segments.loader import load_segment
from flowrun.segments.model import membership
from flowrun.templating.condition import parse_condition

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
IDLE = timedelta(hours=1)
FLOW = "flow: f\non: segment.entered\nsteps:\n  - log: {message: hi}\n"


def _file(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    folder = tmp_path / "flows" / "segments"
    folder.mkdir(parents=True, exist_ok=True)
    (tmp_path / "flows" / "f.yaml").write_text(FLOW)
    (folder / name).write_text(text)
    return folder / name


@pytest.mark.parametrize(
    ("text", "where", "message", "fix"),
    [
        (
            "segment: a\nrule:\n  spnt: {over: 5, currency: USD}\n",
            "3:3",
            "unknown rule 'spnt'",
            "did you mean 'spent'?",
        ),
        (
            "segment: a\nrule:\n  orders: {at_least: 2, witin: 30d}\n",
            "3:25",
            "unknown key 'witin'",
            "did you mean 'within'",
        ),
        (
            "segment: a\nrule:\n  profile: {field: orders_cont, at_least: 3}\n",
            "3:20",
            "profile has no field 'orders_cont'",
            "did you mean 'orders_count'?",
        ),
        (
            "segment: a\nrule:\n  all:\n    - spent: {over: 500, currency: USD, within: 90d}\n"
            "    - spent: {under: 100, currency: USD, within: 90d}\n",
            "3:3",
            "can never match: spend over 500 and under 100 USD",
            "loosen or remove",
        ),
        (
            "segment: a\nrule:\n  all:\n    - last_order: {before: 180d}\n    - last_order: {after: 30d}\n",
            "3:3",
            "can never match: the last order is both older",
            "",
        ),
        (
            "segment: a\nrule:\n  spent: {over: 5, currency: USD, within: 2000d}\n",
            "3:43",
            "longer than the 400d of orders a profile keeps",
            "365d",
        ),
        ("segment: a\nrule:\n  engaged: {within: soon}\n", "3:21", "'soon' is not a duration", "30m, 24h"),
        (
            "segment: a\nrule:\n  profile: {field: orders_30d, at_least: 3}\n",
            "3:20",
            "orders_30d changes with time",
            "within",
        ),
    ],
)
def test_validate_refuses_a_bad_segment_with_its_place_and_a_fix(
    tmp_path: Path, cli: Any, text: str, where: str, message: str, fix: str
) -> None:
    file = _file(tmp_path, text)
    result = cli("validate", str(tmp_path / "flows"))
    assert result.exit_code == 1
    assert f"{file}:{where}: " in result.stdout and message in result.stdout, result.stdout
    assert fix in result.stdout


def test_a_good_segment_validates_and_a_flow_reading_a_profile_typo_does_not(tmp_path: Path, cli: Any) -> None:
    _file(tmp_path, "segment: vip\nrule: {spent: {over: 500, currency: USD, within: 90d}}\n")
    ok = cli("validate", str(tmp_path / "flows"))
    assert ok.exit_code == 0, ok.stdout
    condition = "if: \"in_segment('vip') and profile.last_ordr_at\"\n"
    (tmp_path / "flows" / "g.yaml").write_text(
        f"flow: g\non: order.created\n{condition}steps:\n  - log: {{message: hi}}\n"
    )
    bad = cli("validate", str(tmp_path / "flows"))
    assert bad.exit_code == 1
    assert "`profile` has no field 'profile.last_ordr_at'" in bad.stdout
    assert "did you mean `profile.last_order_at`?" in bad.stdout


def _profile(*orders: tuple[timedelta, str]) -> Profile:
    p = Profile("email:a@x.com")
    for n, (offset, total) in enumerate(orders):
        p = ordered(p, OrderRow(f"shopify:{n}", p.key, T0 + offset, Decimal(total), "USD"))
    return p


def test_verdicts_and_the_next_moment_time_alone_changes_them(tmp_path: Path) -> None:
    vip = load_segment(_file(tmp_path, "segment: vip\nrule: {spent: {over: 500, currency: USD, within: 90d}}\n"))
    lapsed = load_segment(_file(tmp_path, "segment: lapsed\nrule: {last_order: {before: 180d}}\n", "l.yaml"))
    p = _profile((timedelta(0), "300"), (timedelta(days=10), "250.50"))
    now = T0 + timedelta(days=10)
    assert membership([vip, lapsed], p, now, IDLE) == (["vip"], T0 + timedelta(days=90))
    assert membership([vip], p, T0 + timedelta(days=90), IDLE) == ([], T0 + timedelta(days=100))
    assert membership([lapsed], p, T0 + timedelta(days=190), IDLE) == (["lapsed"], None)
    assert membership([lapsed], p, now, IDLE) == ([], T0 + timedelta(days=190))


def test_abandoned_checkout_without_ordering_enters_after_the_idle_time_and_leaves_after_the_window(
    tmp_path: Path,
) -> None:
    rule = load_segment(_file(tmp_path, "segment: cart\nrule: {abandoned_checkout: {within: 2d}}\n"))
    p = Profile("email:a@x.com", last_checkout_at=T0)
    assert membership([rule], p, T0, IDLE) == ([], T0 + IDLE)
    assert membership([rule], p, T0 + IDLE, IDLE) == (["cart"], T0 + IDLE + timedelta(days=2))
    bought = p.evolve(last_order_at=T0 + timedelta(minutes=30))
    assert membership([rule], bought, T0 + IDLE, IDLE) == ([], None)


def test_a_hostile_segment_file_is_refused_not_crashed_on(tmp_path: Path) -> None:
    deep = "segment: a\nrule: " + "{not: " * 150 + "{orders: {at_least: 1}}" + "}" * 150 + "\n"
    for text in ("[1, 2]", "segment: a\n", "segment: 'Bad Name!'\nrule: {orders: {at_least: 1}}\n", deep):
        try:
            load_segment(_file(tmp_path, text))
        except SegmentError as exc:
            assert exc.problems
        else:
            assert text == deep  # deep nesting is allowed, within the YAML depth limit


def test_a_flow_on_a_segment_nobody_defines_fails_validate(tmp_path: Path, cli: Any) -> None:
    _file(tmp_path, "segment: high-value\nrule: {spent: {over: 500, currency: USD, within: 90d}}\n")
    flow = tmp_path / "flows" / "p.yaml"
    flow.write_text("flow: p\non: {event: segment.entered, segment: high-valeu}\nsteps:\n  - log: {message: hi}\n")
    result = cli("validate", str(tmp_path / "flows"))
    assert result.exit_code == 1
    assert f"{flow}:2:39: no segment 'high-valeu' is defined" in result.stdout, result.stdout
    assert "did you mean 'high-value'?" in result.stdout


def test_in_segment_of_a_segment_nobody_defines_fails_validate_at_its_place(tmp_path: Path, cli: Any) -> None:
    _file(tmp_path, "segment: high-value\nrule: {spent: {over: 500, currency: USD, within: 90d}}\n")
    flow = tmp_path / "flows" / "p.yaml"
    flow.write_text(
        "flow: p\non: order.created\nif: \"in_segment('high-valeu')\"\nsteps:\n"
        "  - log: {message: \"{{ 'VIP' if in_segment('high-value') else 'new' }}\"}\n"
        "  - log: {message: \"{{ in_segment('nobody') }}\"}\n"
    )
    result = cli("validate", str(tmp_path / "flows"))
    assert result.exit_code == 1
    assert f"{flow}:3:5: no segment 'high-valeu' is defined" in result.stdout, result.stdout
    assert "in_segment('high-valeu') would always be false; did you mean 'high-value'?" in result.stdout
    assert f"{flow}:6:" in result.stdout and "no segment 'nobody' is defined" in result.stdout
    assert "segments here: high-value" in result.stdout
    assert result.stdout.count("no segment") == 2  # the defined one is fine
    flow.write_text("flow: p\non: order.created\nif: \"in_segment('high-value')\"\nsteps:\n  - log: {message: hi}\n")
    assert cli("validate", str(tmp_path / "flows")).exit_code == 0
    alone = cli("validate", str(flow))  # one flow file: the segments beside it count
    assert alone.exit_code == 0, alone.stdout


def test_a_false_conditions_trace_says_what_in_segment_answered() -> None:
    condition = parse_condition("in_segment('vip') or in_segment(name)", "if")
    seen = condition.observed({"in_segment": lambda n: n == "regular", "name": "gold"})
    assert seen == {"in_segment('vip')": False, "name": "gold"}  # no function in a stored trace


def test_serve_and_its_check_refuse_a_broken_segment_file_with_its_place(tmp_path: Path, cli: Any) -> None:
    file = _file(tmp_path, "segment: x\nrule: {spnt: 1}\n")
    (tmp_path / "flowrun.yaml").write_text(f"database: sqlite:///{tmp_path / 's.db'}\nflows: flows\n")
    for args in (["serve", "--check"], ["serve", "--port", "1"]):
        result = cli(*args, "-c", str(tmp_path / "flowrun.yaml"))
        assert result.exit_code == 1
        assert f"{file}:2:8: unknown rule 'spnt'" in result.output and "did you mean 'spent'?" in result.output


def test_dry_run_moves_customers_by_time_alone_entering_and_leaving_once_each(tmp_path: Path) -> None:
    import json

    from flowrun.dryrun.session import play

    _file(tmp_path, "segment: cart\nrule: {abandoned_checkout: {within: 2d}}\n")
    (tmp_path / "flows" / "f.yaml").write_text(
        "flow: f\non: [segment.entered, segment.exited]\nsteps:\n  - log: {message: '{{ event.type }}'}\n"
    )

    def entry(at: str, kind: str, n: int, who: str, part: str) -> dict[str, Any]:
        data = {"customer": {"email": who}, part: {"id": str(n), "total_price": "9.00", "currency": "EUR"}}
        return {"at": at, "event": {"type": kind, "id": f"e{n}", "data": data}}

    timeline = tmp_path / "t.json"
    timeline.write_text(
        json.dumps(
            [
                entry("0s", "checkout.created", 1, "left@x.com", "checkout"),
                entry("10m", "checkout.updated", 2, "left@x.com", "checkout"),  # the idle hour starts again
                entry("0s", "checkout.created", 3, "bought@x.com", "checkout"),
                entry("30m", "order.created", 4, "bought@x.com", "order"),
            ]
        )
    )
    played = play([tmp_path / "flows"], [], timeline, None, None, T0.isoformat(), "5d")
    seen = [(r.started_at - T0, r.trigger.type, r.customer_key) for r in played.result.runs if r.flow_id == "f"]
    assert seen == [
        (timedelta(minutes=70), "segment.entered", "email:left@x.com"),
        (timedelta(days=2, minutes=70), "segment.exited", "email:left@x.com"),
    ]
