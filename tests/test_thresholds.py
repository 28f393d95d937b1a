"""Thresholds live in the flows (`after:`, `below:`, `above:`): derived from the loaded
flows by a pure function, honoured the same way by dry-run and by serve (one runtime)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flowrun.derive import InactivityWatcher, Thresholds, thresholds_for
from flowrun.dryrun.session import Derive, simulate
from flowrun.dryrun.timeline import Scheduled
from flowrun.events import Event
from flowrun.flow.model import Flow
from tests import test_serve_state
from tests.helpers import T0, event, flow_from
from tests.test_serve_state import ORDER

db, rig = test_serve_state.db, test_serve_state.rig  # the serve rig's fixtures, shared

DAY = timedelta(days=1)

WIN_BACK_180 = """
flow: win-back-180
on: {event: customer.inactive, after: 180d}
steps:
  - http: {url: "SINK/win-back", json: {days: "{{ inactivity.days }}"}}
"""
NUDGE_DEFAULT = """
flow: nudge
on: customer.inactive
steps:
  - http: {url: "SINK/nudge", json: {days: "{{ inactivity.days }}"}}
"""
LOW_BELOW_10 = """
flow: reorder
on: {event: inventory.low, below: 10}
steps:
  - http: {url: "SINK/reorder", json: {sku: "{{ inventory.sku }}", left: "{{ inventory.available }}"}}
"""
LOW_DEFAULT = """
flow: alert
on: inventory.low
steps:
  - http: {url: "SINK/alert", json: {sku: "{{ inventory.sku }}", left: "{{ inventory.available }}"}}
"""
BACK_ABOVE_0 = """
flow: back
on: {event: inventory.restocked, above: 0}
steps:
  - http: {url: "SINK/back", json: {sku: "{{ inventory.sku }}", left: "{{ inventory.available }}"}}
"""


def flows(tmp_path: Path, *texts: str) -> list[Flow]:
    return [flow_from(tmp_path, text, f"f{i}.yaml") for i, text in enumerate(texts)]


# -- the pure function ----------------------------------------------------------------


def test_thresholds_come_from_the_flows_and_defaults_only_while_a_flow_names_none(tmp_path: Path) -> None:
    only_180 = thresholds_for(flows(tmp_path, WIN_BACK_180), inactive_after=(30 * DAY,), low_stock_threshold=5)
    assert only_180 == Thresholds(inactive_after=(180 * DAY,))
    both = thresholds_for(
        flows(tmp_path, WIN_BACK_180, NUDGE_DEFAULT), inactive_after=(30 * DAY, 90 * DAY), low_stock_threshold=5
    )
    assert both.inactive_after == (30 * DAY, 90 * DAY, 180 * DAY)
    assert both.inactive_defaults == {30 * DAY, 90 * DAY}
    stock = thresholds_for(flows(tmp_path, LOW_BELOW_10, BACK_ABOVE_0), inactive_after=(), low_stock_threshold=3)
    assert (stock.stock_levels, stock.default_stock_level) == ((0, 9), None)
    assert (
        thresholds_for(flows(tmp_path, LOW_DEFAULT), inactive_after=(), low_stock_threshold=3).default_stock_level == 3
    )


def test_a_wait_or_a_goal_on_a_derived_type_keeps_the_project_defaults(tmp_path: Path) -> None:
    wait = "  - wait: {for: customer.inactive, timeout: 200d}\n"
    waits = flow_from(tmp_path, f"flow: w\non: order.created\nsteps:\n{wait}  - log: {{message: x}}\n")
    goal = flow_from(
        tmp_path, "flow: g\non: order.created\nuntil: inventory.low\nsteps:\n  - log: {message: x}\n", "g.yaml"
    )
    defaults = (30 * DAY, 60 * DAY, 90 * DAY)
    assert thresholds_for([waits], inactive_after=defaults, low_stock_threshold=5).inactive_defaults == set(defaults)
    assert thresholds_for([goal], inactive_after=defaults, low_stock_threshold=7).default_stock_level == 7


# -- dry-run --------------------------------------------------------------------------


def _order_event() -> Event:
    return event("order.created", order={"id": "1", "number": "1001"}, at=T0)


def _played(tmp_path: Path, texts: list[str], scheduled: list[Scheduled], until: timedelta) -> list[Any]:
    result = simulate(flows(tmp_path, *texts), scheduled, T0, T0 + until, Derive())
    return [
        (r.flow_id, (r.started_at - T0).days, r.trigger.data.get("inactivity", {}).get("days")) for r in result.runs
    ]


def test_dry_run_a_180_day_win_back_fires_once_at_180_days_without_any_project_setting(tmp_path: Path) -> None:
    runs = _played(tmp_path, [WIN_BACK_180], [Scheduled(T0, (_order_event(),))], 400 * DAY)
    assert runs == [("win-back-180", 180, 180)]


def test_dry_run_default_flows_get_the_project_thresholds_and_not_a_flows_own(tmp_path: Path) -> None:
    runs = _played(tmp_path, [WIN_BACK_180, NUDGE_DEFAULT], [Scheduled(T0, (_order_event(),))], 400 * DAY)
    assert sorted(runs) == [("nudge", 30, 30), ("nudge", 60, 60), ("nudge", 90, 90), ("win-back-180", 180, 180)]


def _stock(n: int, available: int) -> Scheduled:
    change = event("inventory.changed", id_=f"inv-{n}", inventory={"sku": "MUG", "available": available})
    return Scheduled(T0 + timedelta(hours=n), (change,))


def test_dry_run_each_flow_gets_the_crossing_of_its_own_level_once(tmp_path: Path) -> None:
    levels = [12, 8, 7, 4, 0, 3, 20, 9]
    result = simulate(
        flows(tmp_path, LOW_BELOW_10, LOW_DEFAULT, BACK_ABOVE_0),
        [_stock(i, a) for i, a in enumerate(levels)],
        T0,
        None,
        Derive(low_stock_threshold=5),
    )
    seen = [(r.flow_id, r.trigger.data["inventory"]["available"]) for r in result.runs]
    # under 10 at 8 (not again at 7), at or under 5 at 4, back over 0 at 3; 20 re-arms both, 9 alerts again
    assert seen == [("reorder", 8), ("alert", 4), ("back", 3), ("reorder", 9)]


def test_a_canonical_envelope_reaches_the_flows_whose_level_it_names(tmp_path: Path) -> None:
    low = event("inventory.low", id_="low-1", inventory={"sku": "MUG", "available": 3, "threshold": 9})
    result = simulate(flows(tmp_path, LOW_BELOW_10, LOW_DEFAULT), [Scheduled(T0, (low,))], T0)
    assert sorted(r.flow_id for r in result.runs) == ["alert", "reorder"]  # an outside event carries no default flag
    other = event("inventory.low", id_="low-2", inventory={"sku": "MUG", "available": 3, "threshold": 5})
    result = simulate(flows(tmp_path, LOW_BELOW_10, LOW_DEFAULT), [Scheduled(T0, (other,))], T0)
    assert [r.flow_id for r in result.runs] == ["alert"]


def test_an_inactivity_check_stored_before_thresholds_were_named_still_fires() -> None:
    legacy_60 = {"customer": {"email": "ada@example.com"}, "last_order_at": T0, "index": 1, "order": "o-1"}
    assert InactivityWatcher(Thresholds()).fire(legacy_60, T0)[0].data["inactivity"]["days"] == 60
    watcher = InactivityWatcher(Thresholds(inactive_after=(30 * DAY, 60 * DAY), inactive_defaults={30 * DAY, 60 * DAY}))
    legacy = {"customer": {"email": "ada@example.com"}, "last_order_at": T0, "index": 0, "order": "o-1"}
    fired, following = watcher.fire(legacy, T0 + 30 * DAY)
    assert fired.data["inactivity"]["days"] == 30 and fired.id == "derived:customer.inactive:30d:o-1"
    assert following is not None and following.at == T0 + 60 * DAY and following.state["after_s"] == 60 * 86400


# -- serve ---------------------------------------------------------------------------------


def _order_now(r: Any, n: int) -> bytes:
    stamp = r.clock().isoformat()
    return json.dumps({**json.loads(ORDER), "id": n, "created_at": stamp, "updated_at": stamp}).encode()


@pytest.mark.usefixtures("db")
def test_serve_a_180_day_win_back_fires_at_180_days_and_no_default_threshold_is_kept(rig) -> None:  # type: ignore[no-untyped-def]
    r = rig(WIN_BACK_180)
    assert r.loop.runtime.derivations.thresholds.inactive_after == (180 * DAY,)
    r.deliver("shopify", "orders/create", _order_now(r, 1), "o-1")
    r.settle()
    r.clock.advance(179 * DAY)
    r.settle()
    assert r.sink.requests == []
    r.clock.advance(DAY)
    r.settle()
    assert [(q["path"], json.loads(q["body"])) for q in r.sink.requests] == [("/win-back", {"days": 180})]


@pytest.mark.usefixtures("db")
def test_serve_inventory_levels_per_flow(rig) -> None:  # type: ignore[no-untyped-def]
    r = rig(LOW_BELOW_10)
    (r.folder / "g.yaml").write_text(LOW_DEFAULT.replace("SINK", r.sink.url))
    r.restart()
    for n, available in enumerate([12, 8, 7, 4]):
        body = {"inventory_item_id": 77, "location_id": 1, "available": available, "sku": "MUG"}
        body["updated_at"] = (r.clock() + timedelta(minutes=n)).isoformat()
        r.deliver("shopify", "inventory_levels/update", json.dumps(body).encode(), f"inv-{n}")
    r.settle()
    got = sorted((q["path"], json.loads(q["body"])["left"]) for q in r.sink.requests)
    assert got == [("/alert", 4), ("/reorder", 8)]


# -- product images, remembered per product ----------------------------------------------

IMAGES_FLOW = """
flow: new-photos
on: product.images_added
steps:
  - http: {url: "SINK/photos", json: {srcs: "{{ product.new_images | map(attribute='src') | join(' ') }}"}}
"""
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _shopify(path: str, topic: str) -> tuple[Event, ...]:
    from flowrun.events.normalise import load_event_file

    return tuple(load_event_file(EXAMPLES / path, source="shopify", topic=topic, received_at=T0))


def test_dry_run_an_update_that_adds_a_photo_derives_images_added_with_that_photo_alone(tmp_path: Path) -> None:
    before = _shopify("events/shopify/products/update.json", "products/update")
    after = _shopify("scenarios/shopify/products/update/new-image.json", "products/update")
    result = simulate(flows(tmp_path, IMAGES_FLOW), [Scheduled(T0, before), Scheduled(T0 + DAY, after)], T0)
    [run] = result.runs
    assert [i["alt"] for i in run.trigger.data["product"]["new_images"]] == ["Merino beanie, worn"]
    assert len(run.trigger.data["product"]["images"]) == 2
    # the same update again adds nothing; a product first seen through an update is a baseline
    again = simulate(flows(tmp_path, IMAGES_FLOW), [Scheduled(T0, after), Scheduled(T0 + DAY, after)], T0)
    assert again.runs == []


def test_a_product_created_without_images_then_given_some_derives_them(tmp_path: Path) -> None:
    created = event("product.created", id_="p-1", product={"id": "9", "images": []})
    updated = event("product.updated", id_="p-2", product={"id": "9", "images": [{"id": "1", "src": "a.jpg"}]})
    result = simulate(flows(tmp_path, IMAGES_FLOW), [Scheduled(T0, (created,)), Scheduled(T0 + DAY, (updated,))], T0)
    assert [r.trigger.data["product"]["new_images"][0]["src"] for r in result.runs] == ["a.jpg"]


def test_state_names_never_overflow_their_column() -> None:
    from flowrun.derive import STATE_NAME_LIMIT, stock_lines

    long_sku = event("inventory.changed", id_="i", inventory={"sku": "S" * 5000, "available": 1})
    lines = stock_lines(long_sku, Thresholds(stock_levels=(9,), default_stock_level=5))
    assert len(lines) == 2 and all(len(line.state) <= STATE_NAME_LIMIT for line in lines)
    assert len({line.state for line in lines}) == 2


@pytest.mark.usefixtures("db")
def test_serve_images_added_once_for_the_new_photo(rig) -> None:  # type: ignore[no-untyped-def]
    r = rig(IMAGES_FLOW)
    r.deliver("shopify", "products/update", (EXAMPLES / "events/shopify/products/update.json").read_bytes(), "p-1")
    r.settle()
    assert r.sink.requests == []  # the first sight of a product is its baseline
    changed = (EXAMPLES / "scenarios/shopify/products/update/new-image.json").read_bytes()
    r.deliver("shopify", "products/update", changed, "p-2")
    r.settle()
    [request] = r.sink.requests
    assert json.loads(request["body"])["srcs"].endswith("merino-beanie-worn.jpg?v=1768228200")


@pytest.mark.usefixtures("db")
def test_serve_a_sku_longer_than_the_cursor_column_still_derives(rig) -> None:  # type: ignore[no-untyped-def]
    r = rig(LOW_BELOW_10)
    body = {
        "inventory_item_id": 77,
        "location_id": 1,
        "available": 3,
        "sku": "S" * 300,
        "updated_at": "2026-01-05T09:00:00Z",
    }
    r.deliver("shopify", "inventory_levels/update", json.dumps(body).encode(), "long-1")
    r.settle()
    [request] = r.sink.requests
    assert json.loads(request["body"])["left"] == 3
