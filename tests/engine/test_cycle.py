"""One control cycle: learn, guard, step, as the integration and the simulation run it."""

from __future__ import annotations

from dataclasses import fields, replace

from custom_components.power_allocation.engine.allocator import Demand
from custom_components.power_allocation.engine.controller import (
    OutageController,
    Readings,
    UpsReading,
    initial_state,
)
from custom_components.power_allocation.engine.cycle import run_cycle
from custom_components.power_allocation.engine.demand import ServiceDemand
from custom_components.power_allocation.engine.forecast import ForecastSettings, NodeForecasters
from custom_components.power_allocation.engine.overload import OverloadGuard

from .outage_scenarios import rack

SITE = rack().site
DRAW_W = {"network": 30.0, "storage": 80.0, "db": 120.0, "web": 90.0, "batch": 150.0}


def _readings(now_s: float, *, gap: bool = False) -> Readings:
    outlets = {o: None if gap else True for s in SITE.services for o in s.outlets}
    outlet_w = {} if gap else {s.outlets[0]: DRAW_W[s.id] for s in SITE.services}
    return Readings(
        now_s=now_s,
        mains_on=None if gap else True,
        ups={"ups1": UpsReading(None, None, None) if gap else UpsReading(1.0, 3600.0, 470.0)},
        service_draw_w={sid: None if gap else w for sid, w in DRAW_W.items()},
        outlet_on=outlets,
        outlet_w=outlet_w,
        ups_w={} if gap else {"ups1": 470.0},
        unmanaged_w={},
    )


def _learners() -> tuple[ServiceDemand, NodeForecasters, OverloadGuard]:
    demand = ServiceDemand(s.id for s in SITE.services)
    nodes = NodeForecasters.for_site(SITE, ForecastSettings(step_s=10.0, horizon_steps=2))
    return demand, nodes, OverloadGuard(SITE)


def test_a_cycle_learns_the_draws_and_steps_on_its_forecasts() -> None:
    learners = _learners()
    cycle = run_cycle(SITE, OutageController(SITE), initial_state(SITE), _readings(0.0), learners)
    assert cycle.node_w["pdu-a"] == sum(DRAW_W.values())
    assert cycle.node_w["ups1"] == 470.0
    assert cycle.telemetry.demand_w["db"].mean_w == DRAW_W["db"]
    # The controller is handed every limited node's own forecast, the draw now included.
    assert cycle.telemetry.node_upper_w == {n: r.upper_w for n, r in cycle.guard.risks.items()}
    assert cycle.telemetry.node_upper_w["ups1"] >= 470.0
    assert learners[0].last_w == DRAW_W
    assert cycle.step.commands == ()


def test_a_telemetry_gap_assesses_no_node_and_known_loads_stand_in_for_forecasts() -> None:
    demand, nodes, guard = _learners()
    known = {sid: Demand(w, w) for sid, w in DRAW_W.items()}
    cycle = run_cycle(
        SITE,
        OutageController(SITE),
        initial_state(SITE),
        _readings(0.0, gap=True),
        (demand, nodes, guard),
        known,
    )
    assert cycle.node_w == {}
    assert cycle.telemetry.demand_w == known
    assert demand.last_w == {}


def test_the_controller_decides_on_every_reading_the_site_gave() -> None:
    readings = replace(
        _readings(0.0),
        no_stop_channel=frozenset({"db"}),
        stops_undelivered=frozenset({"web"}),
    )
    cycle = run_cycle(SITE, OutageController(SITE), initial_state(SITE), readings, _learners())
    assert all(
        getattr(cycle.telemetry, f.name) == getattr(readings, f.name) for f in fields(Readings)
    )
