"""`SiteControl.cycle` without Home Assistant: what one cycle computes, fed snapshots directly."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from typing import Any

import pytest

from custom_components.power_allocation import site_control
from custom_components.power_allocation.drivers.interface import (
    OutletReading,
    TelemetrySnapshot,
    UpsReading,
)
from custom_components.power_allocation.engine import controller, decider, planner
from custom_components.power_allocation.engine.controller import Mode, StopService
from custom_components.power_allocation.engine.decider import CYCLE_S, OUTAGES_KEPT
from custom_components.power_allocation.site_control import SiteControl
from custom_components.power_allocation.topology import parse_topology

SOURCE = {"kind": "modbus", "host": "127.0.0.1"}
DOCUMENT: dict[str, Any] = {
    "ups": [
        {
            "id": "ups1",
            "rated_w": 1000,
            "capacity_wh": 100,
            "runtime_full_load_s": 300,
            "source": SOURCE,
        }
    ],
    "pdus": [{"id": "pdu-a", "ups": "ups1", "limit_w": 1500, "outlets": 4, "source": SOURCE}],
    "services": [
        {"id": "network", "priority": "critical", "outlets": ["pdu-a/1"]},
        {"id": "db", "priority": "high", "outlets": ["pdu-a/2"], "depends_on": ["network"]},
        {"id": "batch", "priority": "low", "outlets": ["pdu-a/3"], "shutdown_s": 10},
    ],
}
DRAW_W = {"pdu-a/1": 40.0, "pdu-a/2": 300.0, "pdu-a/3": 200.0}


def snapshot(now_s: float, *, on_battery: bool, soc_pct: float) -> TelemetrySnapshot:
    return TelemetrySnapshot(
        monotonic_s=now_s,
        ups={
            "ups1": UpsReading(
                "ups1",
                available=True,
                on_battery=on_battery,
                soc_pct=soc_pct,
                output_w=sum(DRAW_W.values()),
            )
        },
        outlets={
            o: OutletReading(o, available=True, power_w=w, is_on=True) for o, w in DRAW_W.items()
        },
    )


@pytest.fixture
def plans_made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Who asked the controller for a (real) plan, one entry a call: the controller's own cycle
    or the site's view."""
    calls: list[str] = []
    plan = controller.OutageController.plan

    def counted(self: controller.OutageController, *args: Any, **kwargs: Any) -> planner.Plan:
        caller = sys._getframe(1).f_globals["__name__"]
        calls.append("view" if caller == decider.__name__ else "controller")
        return plan(self, *args, **kwargs)

    monkeypatch.setattr(controller.OutageController, "plan", counted)
    return calls


def test_one_cycle_plans_once_on_mains_and_on_battery(plans_made: list[str]) -> None:
    control = SiteControl(parse_topology(DOCUMENT))
    now_s = 1000.0
    control.cycle(snapshot(now_s, on_battery=False, soc_pct=100), now_s)
    # On mains the controller plans nothing: the view's plan is what if mains failed now.
    assert plans_made == ["view"]

    # One on-battery reading is not yet an outage (it might be forged or a glitch).
    plans_made.clear()
    now_s += CYCLE_S
    outcome = control.cycle(snapshot(now_s, on_battery=True, soc_pct=99), now_s)
    assert outcome.view.mode is Mode.NORMAL
    assert plans_made == ["view"]

    for soc_pct in (98, 97, 96):
        plans_made.clear()
        now_s += CYCLE_S
        outcome = control.cycle(snapshot(now_s, on_battery=True, soc_pct=soc_pct), now_s)
        assert outcome.view.mode is not Mode.NORMAL
        # On battery the view shows the plan the controller acted on, made once.
        assert plans_made == ["controller"]
        assert outcome.view.plan


def first_outage_cycle(planner_options: dict[str, Any] | None = None) -> site_control.CycleOutcome:
    """The cycle that finds mains gone (its second on-battery reading), under the site's
    `planner` options."""
    document = DOCUMENT if planner_options is None else {**DOCUMENT, "planner": planner_options}
    control = SiteControl(parse_topology(document))
    now_s = 1000.0
    control.cycle(snapshot(now_s, on_battery=False, soc_pct=100), now_s)
    now_s += CYCLE_S
    control.cycle(snapshot(now_s, on_battery=True, soc_pct=99), now_s)
    now_s += CYCLE_S
    return control.cycle(snapshot(now_s, on_battery=True, soc_pct=99), now_s)


def planned_stop_in_s(service_id: str, planner_options: dict[str, Any] | None = None) -> float:
    """When the plan, one cycle into an outage, would stop `service_id` (inf: never)."""
    outcome = first_outage_cycle(planner_options)
    return next(
        (step.in_s for step in outcome.view.plan if step.service_id == service_id), math.inf
    )


def test_the_sites_ride_through_decides_when_the_lowest_tier_is_shed() -> None:
    # The default rides a blip through for up to two minutes (less where riding would bring the
    # final shutdown sooner, as on this small pack); with 0 the plan's own reckoning decides,
    # and it sheds the lowest tier sooner.
    default_s = planned_stop_in_s("batch")
    assert 0.5 * planner.RIDE_THROUGH_S < default_s <= planner.RIDE_THROUGH_S
    assert not any(isinstance(c, StopService) for c in first_outage_cycle().commands)
    assert planned_stop_in_s("batch", {"ride_through_s": 0}) < default_s


def test_the_sites_outage_prior_decides_how_long_the_high_tier_is_kept() -> None:
    # Where outages are mostly blips and short, the plan keeps the high tier up for longer; where
    # they are long, it stops it sooner to keep the critical tier up to the end.
    default_s = planned_stop_in_s("db")
    short_s = planned_stop_in_s("db", {"momentary_ratio": 0.95, "sustained_median_s": 600})
    long_s = planned_stop_in_s("db", {"momentary_ratio": 0.1, "sustained_median_s": 6 * 3600})
    assert long_s < default_s < short_s


def test_the_sites_outages_are_kept_for_its_plan_settings() -> None:
    topology = parse_topology(DOCUMENT)
    control = SiteControl(topology)
    now_s = 1000.0
    control.cycle(snapshot(now_s, on_battery=False, soc_pct=100), now_s)
    for _ in range(31):  # 310 s on battery: a sustained outage
        now_s += CYCLE_S
        control.cycle(snapshot(now_s, on_battery=True, soc_pct=90), now_s)
    while control.decider.state.outage_started_s is not None:
        now_s += CYCLE_S
        control.cycle(snapshot(now_s, on_battery=False, soc_pct=90), now_s)
    assert control.decider.outages_s == [310.0]
    # Kept across a restart; what a stored state holds that is no length is left out.
    assert SiteControl(topology, control.decider.to_state()).decider.outages_s == [310.0]
    stored = {**control.decider.to_state(), "outages_s": ["x", -1, math.nan, True, 20, 900.5]}
    assert SiteControl(topology, stored).decider.outages_s == [20.0, 900.5]
    assert SiteControl(topology, {**stored, "outages_s": "310"}).decider.outages_s == []
    kept = {**stored, "outages_s": [float(n) for n in range(OUTAGES_KEPT + 5)]}
    assert SiteControl(topology, kept).decider.outages_s[0] == 5.0


def test_the_metered_outlet_wins_over_the_agents_own_report() -> None:
    """An agent (or anyone publishing as it) says 1,900 W; the outlet it is on meters 200 W."""
    control = SiteControl(parse_topology(DOCUMENT))
    reported = snapshot(1000.0, on_battery=False, soc_pct=100)
    forged = TelemetrySnapshot(
        monotonic_s=reported.monotonic_s,
        ups=reported.ups,
        outlets=reported.outlets,
        service_power_w={"batch": 1900.0},
    )
    outcome = control.cycle(forged, 1000.0)
    assert outcome.view.services["batch"].power_w == DRAW_W["pdu-a/3"]
    unmetered = TelemetrySnapshot(
        monotonic_s=reported.monotonic_s,
        ups=reported.ups,
        outlets={o: r for o, r in reported.outlets.items() if o != "pdu-a/3"},
        service_power_w={"batch": 190.0},
    )
    assert control.cycle(unmetered, 1010.0).view.services["batch"].power_w == 190.0


def test_a_forced_shutdown_from_the_ups_is_the_final_shutdown() -> None:
    """NUT's FSD (or APC's shutdown-imminent bit): the UPS is about to cut its output, on mains
    or not; confirmed by a second reading like any other."""
    control = SiteControl(parse_topology(DOCUMENT))
    control.cycle(snapshot(1000.0, on_battery=False, soc_pct=100), 1000.0)
    modes = []
    for now_s in (1010.0, 1020.0):
        reported = snapshot(now_s, on_battery=False, soc_pct=80)
        ups = {"ups1": replace(reported.ups["ups1"], forced_shutdown=True)}
        modes.append(control.cycle(replace(reported, ups=ups), now_s).view.mode)
    assert modes == [Mode.NORMAL, Mode.FINAL_SHUTDOWN]


def test_25_s_of_forged_on_battery_and_5_percent_charge_stop_nothing() -> None:
    """Issue 21's forgery, as the drivers would hand it over: a client on the broker publishes
    NUT's `OB DISCHRG` and a charge of 5 % for 25 s while mains is on (the forger's messages
    win every read), then the real bridge's `OL` again."""
    control = SiteControl(parse_topology(DOCUMENT))
    now_s = 1000.0
    commands = []
    modes = []
    for on_battery, soc_pct in [(False, 100)] * 30 + [(True, 5)] * 3 + [(False, 100)] * 30:
        now_s += CYCLE_S
        outcome = control.cycle(snapshot(now_s, on_battery=on_battery, soc_pct=soc_pct), now_s)
        commands.extend(outcome.commands)
        modes.append(outcome.view.mode)
    assert not commands
    assert Mode.FINAL_SHUTDOWN not in modes
