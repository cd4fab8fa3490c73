"""A service's demand: its forecast, and the last reading where the forecast lags a step."""

from __future__ import annotations

import pytest

from custom_components.power_allocation.engine.demand import (
    FADE_STEPS,
    STEP_CONFIRM_S,
    UNCALIBRATED_UPPER_RATIO,
    ServiceDemand,
)


def _learnt(until_s: float, watts: float, demand: ServiceDemand, from_s: float = 0.0) -> None:
    t_s = from_s
    while t_s < until_s:
        demand.learn(t_s, {"db": watts}, {"db"})
        demand.demand_w()
        t_s += 10.0


def test_a_step_up_the_forecast_has_not_caught_up_with_is_the_demand_once_it_persists() -> None:
    demand = ServiceDemand(["db"])
    _learnt(4 * 3600.0, 50.0, demand)
    before = demand.demand_w()["db"]
    assert before.upper_w < 100.0
    step_s = 4 * 3600.0
    _learnt(step_s + STEP_CONFIRM_S - 10.0, 150.0, demand, from_s=step_s)
    assert demand.demand_w()["db"].upper_w < 100.0  # a minute's spike is the band's business
    _learnt(step_s + STEP_CONFIRM_S + 10.0, 150.0, demand, from_s=step_s + STEP_CONFIRM_S - 10.0)
    stepped = demand.demand_w()["db"]
    last_w = demand.last_w["db"]
    assert stepped.mean_w == last_w
    assert stepped.upper_w == last_w * (1.0 + UNCALIBRATED_UPPER_RATIO)


def test_a_reading_back_in_the_band_returns_to_the_forecast() -> None:
    demand = ServiceDemand(["db"])
    _learnt(4 * 3600.0, 50.0, demand)
    step_s, back_s = 4 * 3600.0, 4 * 3600.0 + STEP_CONFIRM_S + 20.0
    _learnt(back_s, 150.0, demand, from_s=step_s)
    assert demand.demand_w()["db"].mean_w > 140.0
    _learnt(back_s + 10.0, 50.0, demand, from_s=back_s)
    assert demand.demand_w()["db"].mean_w < 100.0


def test_a_stopped_service_fades_from_its_last_forecast_into_its_typical_draw() -> None:
    # Hours at 50 W, then half an hour stepped up to 200 W, then stopped (for a limit, say).
    demand = ServiceDemand(["db"])
    _learnt(6 * 3600.0, 50.0, demand)
    stepped_s = 6 * 3600.0 + 1800.0
    _learnt(stepped_s, 200.0, demand, from_s=6 * 3600.0)
    at_stop = demand.demand_w()["db"]
    assert at_stop.mean_w > 150.0
    fade_s = FADE_STEPS * demand.settings.step_s
    demand.learn(stepped_s, {"db": 0.0}, (), off={"db"})
    assert demand.demand_w()["db"] == at_stop  # nothing unseen yet
    demand.learn(stepped_s + fade_s, {"db": 0.0}, (), off={"db"})
    faded = demand.demand_w()["db"]
    assert faded.mean_w < at_stop.mean_w
    assert faded.upper_w < at_stop.upper_w
    demand.learn(stepped_s + 5 * fade_s, {"db": 0.0}, (), off={"db"})
    typical = demand.demand_w()["db"]
    # Half an hour at 200 W barely moves six hours' typical draw of 50 W.
    assert 50.0 <= typical.mean_w < 80.0
    assert typical.mean_w < typical.upper_w < at_stop.upper_w
    # What it learns once it runs freely again is its forecast, and the fade is over; both
    # survive a restart.
    restored = ServiceDemand.from_state(demand.to_state(), ["db"])
    restored.learn(stepped_s + 5 * fade_s, {"db": 0.0}, (), off={"db"})
    assert restored.demand_w()["db"] == pytest.approx(typical, rel=1e-6)
    _learnt(stepped_s + 5 * fade_s + 600.0, 60.0, demand, from_s=stepped_s + 5 * fade_s)
    assert "db" not in demand.off_since_s
