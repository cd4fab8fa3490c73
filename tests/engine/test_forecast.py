"""The online load forecaster: determinism, exact state round-trip, messy input, calibration."""

from __future__ import annotations

import base64
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import datasets, linear_model, time_series

from custom_components.power_allocation.engine.forecast import (
    ForecastSettings,
    LoadForecaster,
    NodeForecasters,
    _LevelMedian,
    node_draw_w,
)
from custom_components.power_allocation.engine.forecast_river_state import ForecasterStateError
from custom_components.power_allocation.engine.model import Pdu, Priority, Service, Site, Ups

STEP_S = 10.0


def _noisy_series(count: int, seed: int, level_w: float = 500.0, noise_w: float = 20.0):
    rng = random.Random(seed)
    return [(i * STEP_S, level_w + rng.gauss(0.0, noise_w)) for i in range(count)]


def _feed(forecaster: LoadForecaster, readings) -> list:
    seen = []
    for at_s, value_w in readings:
        forecaster.observe(at_s, value_w)
        seen.append(forecaster.forecast())
    return seen


def _messy_readings(count: int, seed: int) -> list[tuple[float, float]]:
    """Jittered times, out-of-order and duplicate stamps, NaN, inf, a short and a long gap."""
    rng = random.Random(seed)
    readings = []
    at_s = 0.0
    for i in range(count):
        at_s += rng.uniform(2.0, 15.0)
        if i == count // 3:
            at_s += 45.0  # short gap: held
        if i == count // 2:
            at_s += 3600.0  # long gap: breaks the series
        value = 300.0 + 100.0 * math.sin(i / 20.0) + rng.gauss(0.0, 10.0)
        kind = rng.random()
        if kind < 0.03:
            value = math.nan
        elif kind < 0.04:
            value = math.inf
        readings.append((at_s - (30.0 if kind > 0.97 else 0.0), value))
    return readings


def test_deterministic_for_fixed_input() -> None:
    readings = _messy_readings(600, seed=3)
    settings_ = ForecastSettings(step_s=STEP_S)
    assert _feed(LoadForecaster(settings_), readings) == _feed(LoadForecaster(settings_), readings)


def test_restored_forecaster_forecasts_what_the_original_would() -> None:
    readings = _messy_readings(1500, seed=5)
    original = LoadForecaster(ForecastSettings(step_s=STEP_S))
    _feed(original, readings[:900])
    state = json.loads(json.dumps(original.to_state()))
    restored = LoadForecaster.from_state(state)
    assert restored.forecast() == original.forecast()
    assert _feed(restored, readings[900:]) == _feed(original, readings[900:])
    assert restored.to_state() == original.to_state()


def test_state_stays_within_64_kb_per_load() -> None:
    rng = random.Random(11)
    forecaster = LoadForecaster(ForecastSettings(step_s=STEP_S))
    # Levels spread over four decades, some held and some not, fill every level-median bin
    # twice over (held and fresh).
    step = 0
    while step < 8000:
        level_w = 10.0 ** rng.uniform(0.0, 4.0)
        for _ in range(rng.choice([1, 2, 3, 20, 40])):
            forecaster.observe(step * STEP_S, level_w * (1.0 + rng.gauss(0.0, 0.02)))
            step += 1
    assert len(forecaster._combination.level_median.bins) > 180
    assert len(json.dumps(forecaster.to_state())) <= 64 * 1024


def test_messy_input_is_tolerated_and_counted() -> None:
    forecaster = LoadForecaster(ForecastSettings(step_s=STEP_S))
    _feed(forecaster, _messy_readings(800, seed=7))
    assert forecaster.readings_rejected > 0
    assert forecaster.readings_late > 0
    points = forecaster.forecast()
    assert len(points) == forecaster.settings.horizon_steps
    assert all(p.lower_w <= p.mean_w <= p.upper_w for p in points)


def test_a_long_gap_breaks_the_series_and_forecasting_resumes() -> None:
    forecaster = LoadForecaster(ForecastSettings(step_s=STEP_S, max_fill_s=60.0))
    for i in range(100):
        forecaster.observe(i * STEP_S, 100.0)
    assert forecaster.observe(5000.0, 400.0) == 1  # closes the last step before the hole
    assert forecaster.forecast() == ()  # nothing forecast across the hole
    assert forecaster.observe(5010.0, 400.0) == 1
    points = forecaster.forecast()
    assert points[0].at_s == 5010.0
    assert points[0].mean_w == 400.0


def test_short_gaps_hold_the_last_value() -> None:
    forecaster = LoadForecaster(ForecastSettings(step_s=STEP_S, max_fill_s=60.0))
    forecaster.observe(0.0, 100.0)
    assert forecaster.observe(40.0, 200.0) == 4  # step 0 and the three held steps after it
    assert forecaster.forecast()[0].at_s == 40.0


def test_cold_start_is_naive_and_uncalibrated() -> None:
    forecaster = LoadForecaster(ForecastSettings(step_s=STEP_S))
    forecaster.observe(0.0, 100.0)
    forecaster.observe(10.0, 150.0)
    points = forecaster.forecast()
    assert [p.mean_w for p in points] == [100.0] * len(points)
    assert not any(p.calibrated for p in points)


def test_band_coverage_on_known_noise() -> None:
    forecaster = LoadForecaster(ForecastSettings(step_s=STEP_S, horizon_steps=3))
    readings = _noisy_series(3000, seed=1)
    issued = {1: {}, 3: {}}
    for at_s, value_w in readings:
        forecaster.observe(at_s, value_w)
        for h, by_step in issued.items():
            for point in forecaster.forecast()[h - 1 : h]:
                by_step[round(point.at_s / STEP_S)] = point
    for h, by_step in issued.items():
        hits = [
            by_step[step].lower_w <= value_w <= by_step[step].upper_w
            for step, (_, value_w) in enumerate(readings)
            if step >= 500 and step in by_step
        ]
        assert len(hits) > 2400
        assert 0.87 <= sum(hits) / len(hits) <= 0.93, (h, sum(hits) / len(hits))


def test_band_width_matches_gaussian_noise() -> None:
    forecaster = LoadForecaster(ForecastSettings(step_s=STEP_S, horizon_steps=1))
    _feed(forecaster, _noisy_series(3000, seed=2, noise_w=20.0))
    point = forecaster.forecast()[0]
    # 90 % of a Gaussian is ±1.645 sd. Knowing the level, errors have sd 20; naive errs by the
    # difference of two draws, sd 20·√2. A learning forecaster lies between the two.
    half_width = (point.upper_w - point.lower_w) / 2
    assert 0.9 * 1.645 * 20.0 <= half_width <= 1.1 * 1.645 * 20.0 * math.sqrt(2.0)


def test_trend_is_learnt_by_the_autoregression() -> None:
    forecaster = LoadForecaster(ForecastSettings(step_s=STEP_S))
    rng = random.Random(4)
    for i in range(600):
        forecaster.observe(i * STEP_S, 100.0 + 2.0 * i + rng.gauss(0.0, 1.0))
    assert forecaster.chosen_candidates()[-1] == "snarimax"
    last = forecaster.forecast()[-1]
    assert last.mean_w == pytest.approx(100.0 + 2.0 * (598 + 12), abs=10.0)


def test_a_fresh_spike_is_forecast_to_fall_back_and_a_held_level_to_stay() -> None:
    rng = random.Random(6)
    level_median = _LevelMedian(ForecastSettings(step_s=STEP_S))
    # A kettle-like load (two steps at 2 kW, several times) and a heater (an hour at 2 kW): at
    # the same level, how long it has been held says which one it is.
    for _ in range(30):
        for _ in range(8):
            for value_w in [100.0] * rng.randint(5, 15) + [2000.0] * 2:
                level_median.learn_one(value_w * (1.0 + rng.gauss(0.0, 0.02)))
        for _ in range(60):
            level_median.learn_one(2000.0 * (1.0 + rng.gauss(0.0, 0.02)))
    level_median.learn_one(100.0)
    level_median.learn_one(2000.0)
    fresh = level_median.forecast(12)
    assert max(fresh[2:6]) < 500.0
    for _ in range(30):
        level_median.learn_one(2000.0)
    held = level_median.forecast(12)
    assert min(held) > 1800.0


def test_a_runaway_snarimax_does_not_reach_the_issued_forecast() -> None:
    # river's hourly water-flow series: SNARIMAX's young weights once forecast -6e10 at 12
    # steps here, and an uncapped combination issued -1e8.
    readings = [(x["Time"].timestamp(), y) for x, y in datasets.WaterFlow()]
    forecaster = LoadForecaster(ForecastSettings(step_s=3600.0))
    values = [y for _, y in readings]
    low_w, high_w = min(values), max(values)
    spread_w = high_w - low_w
    for points in _feed(forecaster, readings):
        assert all(low_w - spread_w <= p.mean_w <= high_w + spread_w for p in points)
    for weights in forecaster.combination_weights():
        assert all(0.0 <= w <= 1.0 for w in weights)


def test_snarimax_is_rivers_own() -> None:
    # The candidate scored as "snarimax" is river's SNARIMAX + BayesianLinearRegression fed the
    # closed steps, nothing rewritten: a standalone one fed the same values forecasts the same.
    rng = random.Random(9)
    series = [200.0 + 50.0 * math.sin(i / 7.0) + rng.gauss(0.0, 5.0) for i in range(300)]
    river_model = time_series.SNARIMAX(
        p=3, d=1, q=0, regressor=linear_model.BayesianLinearRegression()
    )
    # A bias, and SNARIMAX's lags at 0 until it has its own (river 0.23 updates only the
    # features it is given).
    features = {"bias": 1.0, "y-1": 0.0, "y-2": 0.0, "y-3": 0.0}
    forecaster = LoadForecaster(ForecastSettings(step_s=STEP_S))
    for i, value in enumerate(series):
        river_model.learn_one(value, x=dict(features))
        forecaster.observe(i * STEP_S, value)
    forecaster.observe(len(series) * STEP_S, 0.0)  # closes the last step
    expected = river_model.forecast(horizon=12, xs=[dict(features) for _ in range(12)])
    pending = forecaster._combination._pending["snarimax"][0]
    assert list(pending) == pytest.approx(expected, rel=1e-6)  # kept at float32


def test_unknown_state_is_refused() -> None:
    with pytest.raises(ForecasterStateError, match="version"):
        LoadForecaster.from_state({"version": 99})
    state = LoadForecaster().to_state()
    del state["combination"]["snarimax"]
    with pytest.raises(ForecasterStateError, match="malformed"):
        LoadForecaster.from_state(state)
    assert issubclass(ForecasterStateError, ValueError)  # what the stored-state check catches


def _learnt_state() -> dict:
    forecaster = LoadForecaster(ForecastSettings(step_s=STEP_S))
    _feed(forecaster, _noisy_series(200, seed=12))
    return json.loads(json.dumps(forecaster.to_state()))


def test_a_state_of_another_river_is_refused() -> None:
    # river's private layout differs between releases (BayesianLinearRegression's posterior was
    # per-pair dicts up to 0.25, arrays since): another river's numbers are relearnt, not read.
    state = _learnt_state()
    state["river"] = "0.22.0"
    with pytest.raises(ForecasterStateError, match="river"):
        LoadForecaster.from_state(state)


def test_a_river_state_of_another_layout_is_refused() -> None:
    # The river tag matches but the regressor's attributes are not the installed river's.
    state = _learnt_state()
    regressor = state["combination"]["snarimax_regressor"]
    regressor["_posterior"] = regressor.pop(next(iter(regressor)))
    with pytest.raises(ForecasterStateError, match="attributes"):
        LoadForecaster.from_state(state)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda r: r["snarimax"].update(y_hist=[1.0, 2.0]),  # a list where river keeps a deque
        lambda r: r["snarimax"].update(y_diff={"deque": [1.0, None], "maxlen": 3}),
        lambda r: r["snarimax"].update(y_diff={"deque": [1.0], "maxlen": 7}),
        lambda r: r["trend"].update(level={"deque": "x", "maxlen": 2}),
        lambda r: r.update(snarimax_regressor="pickle"),
        lambda r: r["snarimax_regressor"].update(
            {
                k: {"array": "////", "dtype": "object", "shape": [1], "order": "C"}
                for k in r["snarimax_regressor"]
            }
        ),
        lambda r: r["snarimax_regressor"].update(
            {k: {"dict": [[["a"], 1.0]]} for k in r["snarimax_regressor"]}
        ),
    ],
)
def test_a_corrupt_river_state_is_refused(corrupt) -> None:
    state = _learnt_state()
    corrupt(state["combination"])
    with pytest.raises(ForecasterStateError):
        LoadForecaster.from_state(state)


def test_a_state_after_a_break_is_strict_json_and_round_trips() -> None:
    # Right after a long gap the level median's Page-Hinkley test is fresh: its running minimum
    # is infinite, which JSON cannot hold (Home Assistant's writer would store null).
    forecaster = LoadForecaster(ForecastSettings(step_s=STEP_S, max_fill_s=60.0))
    _feed(forecaster, _noisy_series(100, seed=13))
    forecaster.observe(5000.0, 400.0)  # closes the last step and breaks the series
    text = json.dumps(forecaster.to_state(), allow_nan=False)
    restored = LoadForecaster.from_state(json.loads(text))
    later = [(5000.0 + i * STEP_S, 400.0 + i) for i in range(1, 40)]
    assert _feed(restored, later) == _feed(forecaster, later)
    assert restored.to_state() == forecaster.to_state()


def test_a_state_goes_through_home_assistants_json_writer() -> None:
    # Home Assistant's store writes with orjson, which refuses numpy scalars and writes an
    # infinity as null: river's numbers must reach it as plain floats and tagged texts.
    orjson = pytest.importorskip("orjson")
    forecaster = LoadForecaster(ForecastSettings(step_s=STEP_S, max_fill_s=60.0))
    _feed(forecaster, _messy_readings(600, seed=14))
    restored = LoadForecaster.from_state(orjson.loads(orjson.dumps(forecaster.to_state())))
    later = _noisy_series(50, seed=15)
    later = [(100_000.0 + at_s, value_w) for at_s, value_w in later]
    assert _feed(restored, later) == _feed(forecaster, later)


def test_an_oversized_array_is_refused_before_it_is_used() -> None:
    from custom_components.power_allocation.engine.forecast_river_state import _decode

    packed = base64.b64encode(bytes(8 * 5000)).decode("ascii")
    with pytest.raises(ForecasterStateError, match="5000"):
        _decode({"array": packed, "dtype": "float64", "shape": [5000], "order": "C"})


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=-30.0, max_value=400.0),
            st.one_of(
                st.floats(min_value=-50.0, max_value=5000.0),
                st.sampled_from([math.nan, math.inf, -math.inf]),
            ),
        ),
        max_size=120,
    ),
    st.integers(min_value=0, max_value=120),
)
def test_any_input_never_raises_and_round_trips(steps, split) -> None:
    forecaster = LoadForecaster(ForecastSettings(step_s=STEP_S, horizon_steps=4))
    readings = []
    at_s = 1000.0
    for delta_s, value in steps:
        at_s += delta_s
        readings.append((at_s, value))
    _feed(forecaster, readings[:split])
    restored = LoadForecaster.from_state(json.loads(json.dumps(forecaster.to_state())))
    assert _feed(restored, readings[split:]) == _feed(forecaster, readings[split:])
    for point in forecaster.forecast():
        assert point.lower_w <= point.mean_w <= point.upper_w


def _two_pdu_site() -> Site:
    return Site(
        ups=(Ups("ups1", rated_w=1000, capacity_wh=500, runtime_full_load_s=300),),
        pdus=(
            Pdu.numbered("pdu-a", "ups1", limit_w=800, count=2, outlet_limits_w={1: 300}),
            Pdu.numbered("pdu-b", "ups1", limit_w=800, count=2),
        ),
        services=(Service("web", Priority.HIGH, ("pdu-a/1", "pdu-b/1")),),
    )


def test_node_draw_sums_outlets_up_the_tree() -> None:
    site = _two_pdu_site()
    draw = node_draw_w(site, {"pdu-a/1": 100.0, "pdu-a/2": 50.0, "pdu-b/1": 30.0})
    assert draw["pdu-a"] == 150.0
    assert draw["pdu-b"] == 30.0
    assert draw["ups1"] == 180.0
    assert node_draw_w(site, {"pdu-a/1": 100.0}, {"ups1": 260.0})["ups1"] == 260.0


def test_node_forecasters_cover_limited_nodes_and_round_trip() -> None:
    site = _two_pdu_site()
    nodes = NodeForecasters.for_site(site, ForecastSettings(step_s=STEP_S))
    assert set(nodes.by_node) == {"ups1", "pdu-a", "pdu-b", "pdu-a/1"}
    for i in range(50):
        nodes.observe(i * STEP_S, node_draw_w(site, {"pdu-a/1": 100.0 + i, "pdu-b/1": 50.0}))
    restored = NodeForecasters.from_state(json.loads(json.dumps(nodes.to_state())))
    assert restored.forecasts() == nodes.forecasts()
    assert nodes.forecasts()["ups1"][0].mean_w > nodes.forecasts()["pdu-b"][0].mean_w
