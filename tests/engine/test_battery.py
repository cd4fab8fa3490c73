"""The battery model and its online fit."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custom_components.power_allocation.engine.battery import (
    BatteryModel,
    PeukertFit,
    RuntimeReading,
    shutdown_reserve,
)
from custom_components.power_allocation.engine.graph import DependencyGraph
from custom_components.power_allocation.engine.model import Ups

UPS = Ups("ups1", rated_w=1000, capacity_wh=864, runtime_full_load_s=360, peukert_k=1.4)
MODEL = BatteryModel.from_ups(UPS)


def test_published_runtime_at_rated_load() -> None:
    assert MODEL.runtime_s(1000) == pytest.approx(360)
    assert MODEL.runtime_s(500) == pytest.approx(360 * 2**1.4)
    assert MODEL.runtime_s(500, soc_ratio=0.5) == pytest.approx(180 * 2**1.4)


def test_light_loads_are_capped_by_the_usable_energy() -> None:
    # The curve alone would promise more energy than the pack holds at 2 W.
    assert MODEL.energy_left_wh(1.0, 2) == pytest.approx(864 * 0.9)
    assert MODEL.energy_left_wh(1.0, 100) < 864 * 0.9
    assert MODEL.runtime_s(0) == math.inf


@given(st.floats(1, 3000), st.floats(1, 3000), st.floats(0, 1))
def test_runtime_falls_as_load_rises_and_charge_falls(low: float, high: float, soc: float) -> None:
    low, high = min(low, high), max(low, high)
    assert MODEL.runtime_s(high, soc) <= MODEL.runtime_s(low, soc)
    assert MODEL.runtime_s(low, soc) <= MODEL.runtime_s(low, 1.0)


@given(st.floats(10, 2000), st.floats(0, 5000), st.floats(0, 5000))
def test_draining_in_two_steps_equals_one(load_w: float, first_s: float, second_s: float) -> None:
    two = MODEL.soc_after(MODEL.soc_after(1.0, load_w, first_s), load_w, second_s)
    one = MODEL.soc_after(1.0, load_w, first_s + second_s)
    assert two == pytest.approx(one, abs=1e-9)


def test_shutdown_reserve_follows_dependency_order() -> None:
    graph = DependencyGraph({"net": [], "db": ["net"], "web": ["db"], "batch": []})
    reserve = shutdown_reserve(
        MODEL,
        graph,
        draw_w={"net": 40, "db": 300, "web": 200, "batch": 100},
        shutdown_s={"net": 10, "db": 90, "web": 30, "batch": 60},
        base_load_w=20,
    )
    assert reserve.finish_s == {"web": 30, "batch": 60, "db": 120, "net": 130}
    assert reserve.duration_s == 130
    expected_wh = (660 * 30 + 460 * 30 + 360 * 60 + 60 * 10) / 3600
    assert reserve.energy_wh == pytest.approx(expected_wh)
    steps = [(660, 30), (460, 30), (360, 60), (60, 10)]
    assert reserve.soc_ratio == pytest.approx(MODEL.soc_for_steps(steps))


def _fitted(truth: BatteryModel) -> BatteryModel:
    rng = random.Random(42)
    fit = PeukertFit(MODEL)
    for _ in range(400):
        load_w = rng.uniform(120, 1000)
        soc = rng.uniform(0.2, 1.0)
        noisy_s = truth.runtime_s(load_w, soc) * rng.gauss(1.0, 0.03)
        fit.learn_one(RuntimeReading(load_w, noisy_s, soc))
    return fit.model()


@pytest.mark.parametrize(("t_ref_s", "k"), [(300.0, 1.3), (340.0, 1.35), (250.0, 1.6)])
def test_fit_recovers_an_aged_curve_within_five_percent(t_ref_s: float, k: float) -> None:
    fitted = _fitted(BatteryModel(t_ref_s, 1000, k, capacity_wh=5000, efficiency=0.9))
    assert fitted.t_ref_s == pytest.approx(t_ref_s, rel=0.05)
    assert fitted.peukert_k == pytest.approx(k, rel=0.05)


def test_fit_never_promises_more_runtime_than_the_published_curve() -> None:
    # Readings of a longer runtime than published (a UPS's estimate that jumped, or an
    # optimistic firmware) are believed only as far as the published curve.
    fitted = _fitted(BatteryModel(420.0, 1000, 1.45, capacity_wh=5000, efficiency=0.9))
    assert fitted.t_ref_s == pytest.approx(MODEL.t_ref_s)
    for load_w in (100.0, 250.0, 500.0, 1000.0):
        assert fitted.full_runtime_s(load_w) <= MODEL.full_runtime_s(load_w) * (1 + 1e-9)


def test_fit_ignores_light_loads_and_nonsense_and_survives_a_restart() -> None:
    fit = PeukertFit(MODEL)
    assert not fit.learn_one(RuntimeReading(50, 99999, 1.0))  # below 10 % of the rating
    assert not fit.learn_one(RuntimeReading(500, math.nan, 1.0))
    assert not fit.learn_one(RuntimeReading(500, -5, 1.0))
    prior_only = fit.model()
    assert (prior_only.t_ref_s, prior_only.peukert_k) == pytest.approx((360, 1.4))
    assert fit.learn_one(RuntimeReading(500, 900, 1.0))
    restored = PeukertFit(MODEL)
    restored.load_state(fit.to_state())
    assert restored.model() == fit.model()
    assert restored.readings_used == 1
