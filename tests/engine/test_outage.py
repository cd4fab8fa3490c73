"""The outage-duration prior and its conditioning on the time already on battery."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from custom_components.power_allocation.engine.outage import OutagePrior, OutagesSeen

PRIOR = OutagePrior()


def test_most_outages_are_momentary_and_the_sustained_ones_last_90_minutes_on_average() -> None:
    assert PRIOR.survival(300) == pytest.approx(0.3, abs=0.01)
    sustained_half = 0.3 * 0.5
    assert PRIOR.survival(PRIOR.sustained_median_s) == pytest.approx(sustained_half, abs=0.01)
    assert PRIOR.survival(0) == 1.0
    # IEEE 1366's CAIDI (SAIDI over SAIFI) is a mean: about 1.5 h.
    mean_s = PRIOR.sustained_median_s * math.exp(PRIOR.sustained_sigma**2 / 2)
    assert 80 * 60 < mean_s < 100 * 60


def _monte_carlo_durations(prior: OutagePrior, count: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    momentary = rng.random(count) < prior.momentary_ratio
    sigma = np.where(momentary, prior.momentary_sigma, prior.sustained_sigma)
    median = np.where(momentary, prior.momentary_median_s, prior.sustained_median_s)
    return np.asarray(median * np.exp(sigma * rng.standard_normal(count)))


@pytest.mark.parametrize("elapsed_s", [0.0, 90.0, 1800.0])
def test_expected_shares_are_the_expected_uptime_ratio(elapsed_s: float) -> None:
    """A service kept on for t more seconds serves E[min(t, remaining) / D] of the outage."""
    durations = _monte_carlo_durations(PRIOR, 400_000)
    durations = durations[durations > elapsed_s]
    outage = PRIOR.given(elapsed_s)
    for t_s in (30.0, 600.0, 3600.0):
        sampled = np.mean(np.minimum(t_s, durations - elapsed_s) / durations)
        assert outage.expected_shares(np.array([t_s]))[0] == pytest.approx(sampled, rel=0.02)
        # A second at t is worth E[1/D; D > now + t], given D > now.
        worth = np.sum(np.where(durations > elapsed_s + t_s, 1.0 / durations, 0.0)) / len(durations)
        assert outage.worths(np.array([t_s]))[0] == pytest.approx(worth, rel=0.03)


@given(st.floats(0, 20000), st.floats(0, 20000), st.floats(0, 20000))
def test_conditional_survival_is_a_survival_function(elapsed: float, a: float, b: float) -> None:
    outage = PRIOR.given(elapsed)
    early, late = min(a, b), max(a, b)
    assert outage.survival(0) == pytest.approx(1.0)
    assert 0.0 <= outage.survival(late) <= outage.survival(early) + 1e-12
    worths = outage.worths(np.array([early, late]))
    assert 0.0 <= worths[1] <= worths[0] + 1e-15
    shares = outage.expected_shares(np.array([early, late]))
    assert 0.0 <= shares[0] <= shares[1] + 1e-12 <= 1.0 + 1e-9


def test_the_longer_it_lasts_the_longer_it_is_expected_to_last() -> None:
    # Past the momentary phase, what is left is a sustained outage.
    assert PRIOR.given(600).survival(600) > PRIOR.given(0).survival(600)


@given(st.floats(1e-7, 1e-2), st.floats(0, 5000))
def test_the_time_worth_falls_to_a_ratio_inverts_worth(ratio: float, elapsed: float) -> None:
    outage = PRIOR.given(elapsed)
    at = float(outage.times_when_worth_falls_to(np.array([ratio]), 0.0)[0])
    if math.isfinite(at) and at > 1.0:
        assert outage.worths(np.array([at * 1.01]))[0] <= ratio * 1.02
        assert outage.worths(np.array([at * 0.99]))[0] >= ratio * 0.98


def test_a_restart_cost_keeps_a_service_on_through_the_blips() -> None:
    outage = PRIOR.given(0)
    ratios = np.array([outage.worths(np.array([60.0]))[0]])
    assert (
        outage.times_when_worth_falls_to(ratios, 240.0)[0]
        > outage.times_when_worth_falls_to(ratios, 0.0)[0]
    )


def test_a_restart_per_service_is_its_own_restart_for_every_price() -> None:
    """One search for every price and service gives what one search per restart gives."""
    outage = PRIOR.given(45)
    ratios = np.outer([0.5, 1.0, 2.0], outage.worths(np.array([30.0, 300.0, 3000.0, 60.0])))
    restarts = np.array([0.0, 240.0, 240.0, 3600.0])
    together = outage.times_when_worth_falls_to(ratios, restarts)
    for column, restart_s in enumerate(restarts):
        alone = outage.times_when_worth_falls_to(ratios[:, column], float(restart_s))
        np.testing.assert_array_equal(together[:, column], alone)
    # The same ratio with no restart to pay: it stops sooner.
    assert outage.times_when_worth_falls_to(ratios[1, 3:], 0.0)[0] < together[1, 3]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="momentary_ratio"):
        OutagePrior(momentary_ratio=1.5)
    with pytest.raises(ValueError, match="sustained_median_s"):
        OutagePrior(sustained_median_s=-1)


def test_outages_seen_count_the_blips_and_take_the_median_of_the_others() -> None:
    assert OutagesSeen.of([]) == OutagesSeen(0, 0, None)
    assert OutagesSeen.of([20.0, 299.0]) == OutagesSeen(2, 2, None)
    assert OutagesSeen.of([20.0, 300.0, 900.0, 3600.0]) == OutagesSeen(4, 1, 900.0)
    assert OutagesSeen.of([600.0, 1200.0]).sustained_median_s == 900.0
