"""A service's demand: its forecast, and the last reading where the forecast lags a step."""

from __future__ import annotations

from custom_components.power_allocation.engine.demand import (
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
