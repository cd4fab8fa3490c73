"""How long an outage lasts: a prior over durations, conditioned on the time already on battery.

Most interruptions are momentary (seconds to a few minutes); the rest are sustained, lognormal.
IEEE 1366's US figures, SAIDI about 2 h a year over SAIFI about 1.3 sustained interruptions, make
the sustained ones last about 1.5 h *on average* (CAIDI); a lognormal of sigma 1.2 with that mean
has a median of about 45 min (with a 1.5 h median its mean would be 3 h).

What the planner maximises is the expected weighted uptime *ratio* of the outage: a second of
service in an outage of length D is 1/D of it, so that a rare day-long outage does not outvote
every ordinary one (the report scores each run as a ratio, and a suite is the mean of those). A
restart is counted in the same units: the seconds a service needs to run again after an outage of
length D are that many 1/D of it, so a 3-minute restart after a 3-minute blip doubles what the
blip cost, and after a 3-hour outage barely shows, as for the people who wait on it. (The report
scores a window that runs on past mains returning, to the end of the run; the plan knows no such
window, only the outage.) With f the density of D and S its survival function, a second at time x
is worth W(x) = E[1/D; D > x] = ∫ f(D)/D dD over D > x, a service kept on until t serves an
expected share ∫ W of the outage over 0..t, and a restart of r seconds owed by a stop at t costs
r · W(t). S, W and ∫ W are tabulated once on a log-spaced grid, so that the planner's many
look-ups are interpolations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import cast

import numpy as np
import numpy.typing as npt
from scipy.stats import lognorm

GRID_MAX_S = 14 * 86400.0
# IEEE 1366: an interruption shorter than 5 minutes is momentary, a longer one sustained.
MOMENTARY_MAX_S = 300.0
# What a site sets of its prior (the Plan settings). The blips' own shape is left fixed: they are
# ridden through, and how a 20-s blip is spread changes no plan.
SITE_PRIOR_KEYS = ("momentary_ratio", "sustained_median_s", "sustained_sigma")


@dataclass(frozen=True)
class OutagePrior:
    """A mixture of momentary and sustained outages; every parameter is configurable."""

    momentary_ratio: float = 0.7
    momentary_median_s: float = 20.0
    momentary_sigma: float = 1.0
    sustained_median_s: float = 2700.0
    sustained_sigma: float = 1.2
    _grid_s: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _survival: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _worth: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)  # W(x)
    _share: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)  # ∫ W
    _ending: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)  # f(x)/x

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentary_ratio <= 1.0:
            raise ValueError("momentary_ratio must be within 0..1")
        for name in (
            "momentary_median_s",
            "momentary_sigma",
            "sustained_median_s",
            "sustained_sigma",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        grid = np.concatenate([[0.0], np.geomspace(0.5, GRID_MAX_S, 2000)])
        survival = self.momentary_ratio * lognorm.sf(
            grid, self.momentary_sigma, scale=self.momentary_median_s
        ) + (1.0 - self.momentary_ratio) * lognorm.sf(
            grid, self.sustained_sigma, scale=self.sustained_median_s
        )
        survival[0] = 1.0
        density = self.momentary_ratio * lognorm.pdf(
            grid, self.momentary_sigma, scale=self.momentary_median_s
        ) + (1.0 - self.momentary_ratio) * lognorm.pdf(
            grid, self.sustained_sigma, scale=self.sustained_median_s
        )
        ending = np.zeros_like(grid)
        ending[1:] = density[1:] / grid[1:]
        steps = np.diff(grid) * (ending[1:] + ending[:-1]) / 2
        worth = np.append(np.cumsum(steps[::-1])[::-1], 0.0)
        share = np.concatenate([[0.0], np.cumsum(np.diff(grid) * (worth[1:] + worth[:-1]) / 2)])
        object.__setattr__(self, "_grid_s", grid)
        object.__setattr__(self, "_survival", survival)
        object.__setattr__(self, "_worth", worth)
        object.__setattr__(self, "_share", share)
        object.__setattr__(self, "_ending", ending)

    def survival(self, t_s: float) -> float:
        """P(the outage lasts longer than t_s), from its start."""
        return float(np.interp(t_s, self._grid_s, self._survival, right=0.0))

    def given(self, elapsed_s: float) -> ConditionalOutage:
        """The remaining duration, knowing the outage has lasted `elapsed_s` so far."""
        return ConditionalOutage(self, max(0.0, elapsed_s))


@dataclass(frozen=True)
class ConditionalOutage:
    """The outage's remaining duration, `elapsed_s` into it; times are from now.

    Methods take a float or an array of times / ratios, so the planner can ask for every service
    at once.
    """

    prior: OutagePrior
    elapsed_s: float
    _envelopes: dict[float, npt.NDArray[np.float64]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @cached_property
    def _base(self) -> float:
        return max(self.prior.survival(self.elapsed_s), 1e-12)

    @cached_property
    def _start(self) -> int:
        return int(np.searchsorted(self.prior._grid_s, self.elapsed_s, side="right"))

    def survival(self, t_s: float) -> float:
        """P(mains is still off `t_s` from now)."""
        return self.prior.survival(self.elapsed_s + t_s) / self._base

    def _at(self, t_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.minimum(self.elapsed_s + np.maximum(t_s, 0.0), GRID_MAX_S)

    def worths(self, t_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The expected share of the outage a second of service `t_s` from now is."""
        prior = self.prior
        worth = np.interp(self._at(t_s), prior._grid_s, prior._worth, right=0.0)
        return np.asarray(worth / self._base, dtype=np.float64)

    def expected_shares(self, t_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """E[min(t_s, remaining) / D]: the share of the outage a service kept on for t_s serves."""
        prior = self.prior
        start = np.interp(self.elapsed_s, prior._grid_s, prior._share)
        end = np.interp(self._at(t_s), prior._grid_s, prior._share)
        return np.asarray((end - start) / self._base, dtype=np.float64)

    def times_when_worth_falls_to(
        self, ratios: npt.NDArray[np.float64], restart_s: float | npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """When keeping a service on is worth less than its ratio per second, for good.

        Keeping it on for one more second is worth that second's share of the outage (`worths`),
        plus restart_s times the share of an outage that ends in that second: stopping it then
        would have cost a restart after mains returns. The second term is why blips are ridden
        through. `restart_s` is one for all, or one per service (the last axis of `ratios`).
        Returns, per ratio, the time from now after which the worth stays below it (inf: never).
        """
        ratios = np.asarray(ratios, dtype=np.float64)
        restarts = np.broadcast_to(np.asarray(restart_s, dtype=np.float64), ratios.shape[-1:])
        values, group = np.unique(restarts, return_inverse=True)
        above = np.empty(ratios.shape, dtype=np.intp)
        for index, restart in enumerate(cast(list[float], values.tolist())):
            members = group == index
            # The negated envelope is non-decreasing: count the grid points still above a ratio.
            falling = self._falling_envelope(restart)
            above[..., members] = falling.searchsorted(-ratios[..., members], side="left")
        return np.where(above == 0, 0.0, self._grid_ahead_s[above])

    @cached_property
    def _grid_ahead_s(self) -> npt.NDArray[np.float64]:
        """The prior's grid from now on, as times from now, and inf past its end."""
        grid = self.prior._grid_s[self._start :] - self.elapsed_s
        return np.append(np.maximum(grid, 0.0), math.inf)

    def _falling_envelope(self, restart_s: float) -> npt.NDArray[np.float64]:
        """Minus the worth of a second from each grid time on, at its latest peak (stop for
        good): non-decreasing, for `searchsorted`."""
        cached = self._envelopes.get(restart_s)
        if cached is None:
            prior = self.prior
            start = self._start
            worth = (prior._worth[start:] + restart_s * prior._ending[start:]) / self._base
            cached = -np.maximum.accumulate(worth[::-1])[::-1]
            self._envelopes[restart_s] = cached
        return cached


@dataclass(frozen=True, slots=True)
class OutagesSeen:
    """A site's own outages, summed up in the prior's terms: what its Plan settings ask for."""

    count: int
    momentary: int  # shorter than MOMENTARY_MAX_S
    sustained_median_s: float | None  # None: no sustained outage seen

    @classmethod
    def of(cls, durations_s: Sequence[float]) -> OutagesSeen:
        sustained = [d for d in durations_s if d >= MOMENTARY_MAX_S]
        return cls(
            count=len(durations_s),
            momentary=len(durations_s) - len(sustained),
            sustained_median_s=float(np.median(sustained)) if sustained else None,
        )
