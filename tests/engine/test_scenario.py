"""Scenario model: load models, timeline, validation; demand is a pure function of time."""

from __future__ import annotations

import copy
import math
import statistics

import pytest

from custom_components.power_allocation.engine.model import TopologyError
from custom_components.power_allocation.engine.scenario import (
    ConstantLoad,
    LoadStep,
    PeriodicLoad,
    Scenario,
    ScenarioError,
    Timeline,
    Trace,
    TraceLoad,
    build_scenario,
)
from tests.engine.outage_scenarios import RACK
from tests.fixtures.modbus_site import SMALL_SITE


def test_constant_load() -> None:
    assert ConstantLoad(35.0).demand_w(12345.0) == 35.0


def test_trace_holds_each_sample_and_wraps() -> None:
    trace = Trace.from_samples([(0, 10.0), (60, 20.0), (120, 30.0)])
    assert trace.span_s == 180.0
    assert [trace.value_at(t) for t in (0, 59, 60, 150, 180, 241)] == [10, 10, 20, 30, 10, 20]


def test_trace_gaps_hold_the_previous_value() -> None:
    trace = Trace.from_samples([(0, 10.0), (60, 20.0), (180, 40.0), (240, 50.0)])
    assert trace.value_at(150) == 20.0


def test_trace_load_is_rescaled_to_its_mean_and_offset() -> None:
    trace = Trace.from_samples([(0, 100.0), (60, 300.0)])
    load = TraceLoad(trace, mean_w=50.0, offset_s=60.0)
    assert load.demand_w(0) == 75.0
    assert load.demand_w(60) == 25.0
    samples = [load.demand_w(t) for t in range(0, 1200)]
    assert statistics.fmean(samples) == pytest.approx(50.0)


@pytest.mark.parametrize(
    "samples",
    [[], [(0, 1.0), (0, 2.0)], [(0, -1.0)], [(0, 0.0), (60, 0.0)], [(0, math.nan)]],
)
def test_bad_traces_are_rejected(samples: list[tuple[float, float]]) -> None:
    with pytest.raises(ScenarioError):
        Trace.from_samples(samples)


def test_periodic_load_cycles_between_base_and_peak() -> None:
    load = PeriodicLoad(100.0, 300.0, 3600.0, 0.0, seed=1, stream="x")
    assert load.demand_w(0) == pytest.approx(100.0)
    assert load.demand_w(1800) == pytest.approx(300.0)
    assert load.demand_w(3600) == pytest.approx(100.0)


def test_noise_is_reproducible_and_independent_of_query_order() -> None:
    load = PeriodicLoad(100.0, 100.0, 3600.0, 0.1, seed=7, stream="db")
    forward = [load.demand_w(t) for t in range(5000)]
    backward = [load.demand_w(t) for t in reversed(range(5000))][::-1]
    again = PeriodicLoad(100.0, 100.0, 3600.0, 0.1, seed=7, stream="db")
    assert forward == backward == [again.demand_w(t) for t in range(5000)]
    assert statistics.pstdev(forward) == pytest.approx(10.0, rel=0.1)
    other_seed = PeriodicLoad(100.0, 100.0, 3600.0, 0.1, seed=8, stream="db")
    other_service = PeriodicLoad(100.0, 100.0, 3600.0, 0.1, seed=7, stream="web")
    assert forward[:50] != [other_seed.demand_w(t) for t in range(50)]
    assert forward[:50] != [other_service.demand_w(t) for t in range(50)]


def test_noise_is_held_for_one_step() -> None:
    load = PeriodicLoad(100.0, 100.0, 3600.0, 0.1, seed=7, stream="db", noise_step_s=10.0)
    assert load.demand_w(0) == load.demand_w(9.9)
    assert load.demand_w(0) != load.demand_w(10)


def test_noise_never_makes_demand_negative() -> None:
    load = PeriodicLoad(1.0, 1.0, 3600.0, 1.0, seed=3, stream="x")
    assert min(load.demand_w(t) for t in range(5000)) >= 0.0


def test_timeline_mains() -> None:
    timeline = Timeline(history_s=100, outage_at_s=100, outage_duration_s=50)
    assert [timeline.mains_on_at(t) for t in (99, 100, 149, 150)] == [True, False, False, True]
    forever = Timeline(history_s=0, outage_at_s=10, outage_duration_s=None)
    assert forever.outage_end_s == math.inf
    assert not forever.mains_on_at(1e9)


def test_load_step_window() -> None:
    step = LoadStep(at_s=10, service="x", extra_w=5, duration_s=2)
    assert [step.extra_at(t) for t in (9, 10, 11.9, 12)] == [0, 5, 5, 0]


def test_build_scenario_from_a_mapping() -> None:
    scenario = build_scenario(SMALL_SITE, {})
    assert isinstance(scenario, Scenario)
    assert [s.id for s in scenario.site.services] == ["network", "db", "batch"]
    assert scenario.soc_start_pct == {"ups1": 100.0}
    assert scenario.demand_w("db", 0) == 300.0
    assert scenario.timeline.outage_at_s == 600
    assert set(scenario.demands_w(0)) == {"network", "db", "batch"}


def test_timeline_load_steps_add_to_demand() -> None:
    config = copy.deepcopy(SMALL_SITE)
    config["timeline"]["events"] = [
        {"at_s": 100, "kind": "load_step", "service": "db", "extra_w": 50, "duration_s": 10}
    ]
    scenario = build_scenario(config, {})
    assert scenario.demand_w("db", 105) == 350.0
    assert scenario.demand_w("db", 110) == 300.0


def test_trace_loads_use_the_trace_given_for_their_file_and_column() -> None:
    config = copy.deepcopy(SMALL_SITE)
    config["services"][0]["load"] = {"trace": "t.csv", "column": "w", "mean_w": 10}
    trace = Trace.from_samples([(0, 1.0), (60, 3.0)])
    scenario = build_scenario(config, {("t.csv", "w"): trace})
    assert scenario.demand_w("network", 0) == 5.0
    with pytest.raises(ScenarioError, match="was not read"):
        build_scenario(config, {})


def test_topology_errors_name_the_problem() -> None:
    config = copy.deepcopy(SMALL_SITE)
    config["services"][0]["depends_on"] = ["db"]
    with pytest.raises(TopologyError, match="cycle"):
        build_scenario(config, {})


def test_load_step_for_an_unknown_service_is_rejected() -> None:
    config = copy.deepcopy(SMALL_SITE)
    config["timeline"]["events"] = [
        {"at_s": 1, "kind": "load_step", "service": "ghost", "extra_w": 5, "duration_s": 1}
    ]
    with pytest.raises(ScenarioError, match="ghost"):
        build_scenario(config, {})


def test_state_of_charge_must_be_a_percentage() -> None:
    config = copy.deepcopy(SMALL_SITE)
    config["ups"][0]["soc_start_pct"] = 120
    with pytest.raises(ScenarioError, match="soc_start_pct"):
        build_scenario(config, {})


def test_periodic_load_needs_base_below_peak() -> None:
    with pytest.raises(ScenarioError, match="base_w"):
        PeriodicLoad(300.0, 100.0, 60.0, 0.0, seed=1, stream="x")


def test_a_negative_load_step_lowers_the_draw_but_never_below_nothing() -> None:
    config = copy.deepcopy(RACK)
    config["timeline"]["events"] = [
        {"at_s": 100, "kind": "load_step", "service": "network", "extra_w": -20, "duration_s": 50},
        {"at_s": 200, "kind": "load_step", "service": "network", "extra_w": -65, "duration_s": 50},
    ]
    scenario = build_scenario(config, {})
    assert scenario.demand_w("network", 120) == 10.0  # 30 W, 20 W less
    assert scenario.demand_w("network", 220) == 0.0
