"""The outage-duration prior and its conditioning on the time already on battery."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from custom_components.power_allocation.engine.outage import OutagePrior

PRIOR = OutagePrior()


def test_most_outages_are_momentary_and_the_sustained_median_is_about_90_minutes() -> None:
    assert PRIOR.survival(300) == pytest.approx(0.3, abs=0.01)
    sustained_half = 0.3 * 0.5
    assert PRIOR.survival(5400) == pytest.approx(sustained_half, abs=0.01)
    assert PRIOR.survival(0) == 1.0


@given(st.floats(0, 20000), st.floats(0, 20000), st.floats(0, 20000))
def test_conditional_survival_is_a_survival_function(elapsed: float, a: float, b: float) -> None:
    outage = PRIOR.given(elapsed)
    early, late = min(a, b), max(a, b)
    assert outage.survival(0) == pytest.approx(1.0)
    assert 0.0 <= outage.survival(late) <= outage.survival(early) + 1e-12
    overlap = outage.expected_overlap_s(np.array([early, late]))
    assert 0.0 <= overlap[0] <= early + 1e-6
    assert overlap[0] <= overlap[1] + 1e-9


def test_the_longer_it_lasts_the_longer_it_is_expected_to_last() -> None:
    # Past the momentary phase, what is left is a sustained outage.
    assert PRIOR.given(600).survival(600) > PRIOR.given(0).survival(600)


@given(st.floats(0.001, 0.999), st.floats(0, 5000))
def test_the_time_survival_falls_to_a_ratio_inverts_survival(ratio: float, elapsed: float) -> None:
    outage = PRIOR.given(elapsed)
    at = outage.time_when_survival_falls_to(ratio)
    if math.isfinite(at) and at > 1.0:
        assert outage.survival(at) == pytest.approx(ratio, abs=0.02)
        assert outage.survival(at * 0.9) >= ratio - 0.02


def test_a_restart_cost_keeps_a_service_on_through_the_blips() -> None:
    outage = PRIOR.given(0)
    ratios = np.array([0.6])
    assert outage.times_when_worth_falls_to(ratios, 240.0)[0] > outage.time_when_survival_falls_to(
        0.6
    )


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="momentary_ratio"):
        OutagePrior(momentary_ratio=1.5)
    with pytest.raises(ValueError, match="sustained_median_s"):
        OutagePrior(sustained_median_s=-1)
