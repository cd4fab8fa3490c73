"""Online forecasts of one load's draw, 1..H steps ahead, with a band calibrated on its own errors.

Readings arrive irregularly; they are averaged into fixed steps. Each closed step teaches the
models below and is scored against what each forecast for it 1..H steps earlier:

- river's `time_series.SNARIMAX(p=3, d=1, q=0)` with `linear_model.BayesianLinearRegression` and
  a bias feature;
- level median: the median change seen h steps after the load was at about this level, and had
  (or had not) held it for a while, which captures what linear models cannot in appliance-like
  loads (a spike that has just begun falls back, a level held for minutes tends to stay);
- recent median: the median of the last few steps (river's `utils.SortedWindow`), a level one
  spike barely moves;
- trend: Holt's linear smoothing (river's `time_series.HoltWinters` without a season), for ramps
  the others mean-revert away from.

What is issued at each horizon is a combination (`_Combination`): the last value plus a weighted
sum of how far SNARIMAX, the level median and the recent median are from it, the weights learnt
online per horizon by least absolute error (so it starts as the naive forecast and only moves as
far as the models have earned). SNARIMAX or the trend alone is issued instead where its recent
error is clearly lower (a clean ramp). The band (`_AdaptiveBand`) is a pair of rolling quantiles
of the issued forecast's own realised errors at that horizon, so it is as wide as this load has
actually needed lately; their level adapts so the band misses as often as it should. river has
neither the combination nor the adaptive band; they are written here as river-style estimators
(`learn_one`, `forecast(horizon)`).

The state is plain JSON: this module's numbers packed as base64 machine floats, river's objects'
learnt attributes through `forecast_river_state`, tagged with the river version.
"""

from __future__ import annotations

import base64
import bisect
import copy
import math
from array import array
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from river import drift, linear_model, time_series, utils

from .forecast_river_state import (
    RIVER_VERSION,
    ForecasterStateError,
    learnt_names,
    learnt_state,
    restore_learnt,
)
from .model import Site

STATE_VERSION = 3
_SNARIMAX_LAGS = 3
# SNARIMAX's features besides the lags it adds: a constant, so its regression learns a drift, and
# the lags themselves at 0 for as long as it has none of its own (after a start or a break). river
# 0.26's BayesianLinearRegression counts an absent feature as 0 itself; 0.23 updates only the
# features present, which leaves its posterior inconsistent after every break (on river's
# WaterFlow series, broken at each gap in its hours: 1.033 times naive one step ahead, against 1.000
# with the zeros).
_FEATURES = {"bias": 1.0, **{f"y-{lag}": 0.0 for lag in range(1, _SNARIMAX_LAGS + 1)}}
# SNARIMAX's own record of recent values, differences and errors (public in every river); its
# regressor and Holt-Winters keep everything that is not a parameter.
_SNARIMAX_LEARNT = ("y_hist", "y_diff", "errors")
_COMBINED_INPUTS = 3  # SNARIMAX, level median, recent median
# Level-median counts are stored in 16 bits; past this they only confirm what is settled.
_COUNT_MAX = 65535


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    """How one load is resampled, how far ahead it is forecast and how the band is kept."""

    step_s: float = 60.0
    horizon_steps: int = 12
    band_ratio: float = 0.9
    # Rolling window of realised errors per horizon; with 12 horizons, 288 errors each keeps the
    # stored state within 64 KB.
    error_window_steps: int = 288
    # A meter that does not report for a while usually has nothing new to say (Tasmota and Shelly
    # report on change), so short gaps hold the last value; longer ones break the series.
    max_fill_s: float = 300.0
    # How fast each horizon's band level adapts to keep its miss rate at 1 - band_ratio.
    band_adapt_rate: float = 0.005
    # The combination is issued unless SNARIMAX's or the trend's recent error is this much lower:
    # switching on noise costs more than it gains.
    switch_margin_ratio: float = 0.05
    # Errors a candidate needs at a horizon before it may replace the combination, and that a
    # band needs before it counts as calibrated.
    min_error_samples: int = 20
    # Responsiveness of the candidate scores (weight of the newest absolute error), and of the
    # typical size of each combined input.
    score_weight: float = 0.01
    # Step of the combination's weights per scored target (each input normalised by its typical
    # size, so the step is scale-free).
    combine_rate: float = 0.001
    # SNARIMAX's recursion can run away while its weights are young: in the combination its
    # distance from the last value is capped at this many times its typical distance.
    combine_outlier_ratio: float = 4.0
    # Level bins of the level-median candidate are this ratio wide (10 %: scale-free).
    level_bin_ratio: float = 1.1
    # A level counts as held `level_held_steps` steps after its last change, which river's
    # Page-Hinkley test flags on the log level at a threshold of ln(`level_jump_ratio`); held and
    # fresh levels keep separate medians.
    level_jump_ratio: float = 1.3
    level_held_steps: int = 10
    # Step of the level-median's stochastic median, in units of the bin's typical deviation.
    level_median_rate: float = 0.005
    # Changes a level bin needs at a horizon before its median is used there.
    level_median_min_samples: int = 3
    # Steps the recent median is taken over.
    recent_median_steps: int = 10
    # Holt's smoothing weights for the trend candidate's level and slope.
    trend_level_weight: float = 0.5
    trend_slope_weight: float = 0.05

    def __post_init__(self) -> None:
        if not (self.step_s > 0 and math.isfinite(self.step_s)):
            raise ValueError(f"step_s must be positive, got {self.step_s!r}")
        if self.horizon_steps < 1:
            raise ValueError(f"horizon_steps must be at least 1, got {self.horizon_steps!r}")
        if not 0.0 < self.band_ratio < 1.0:
            raise ValueError(f"band_ratio must be within 0..1, got {self.band_ratio!r}")
        if self.error_window_steps < 2:
            raise ValueError("error_window_steps must be at least 2")
        if self.max_fill_s < 0:
            raise ValueError("max_fill_s must not be negative")
        if self.level_bin_ratio <= 1.0 or self.level_jump_ratio <= 1.0:
            raise ValueError("level_bin_ratio and level_jump_ratio must be above 1")
        if self.recent_median_steps < 1:
            raise ValueError("recent_median_steps must be at least 1")


class ForecastPoint(NamedTuple):
    """The forecast for one future step (a tuple: H of them are built per reading)."""

    at_s: float  # start of the step, on the caller's clock
    mean_w: float  # point forecast
    lower_w: float
    upper_w: float
    calibrated: bool  # the band rests on at least `min_error_samples` realised errors


class _StepResampler:
    """Averages readings into fixed steps; a step closes when a reading for a later one arrives."""

    def __init__(self, step_s: float, max_fill_steps: int) -> None:
        self.step_s = step_s
        self.max_fill_steps = max_fill_steps
        self.open_step: int | None = None
        self.open_sum_w = 0.0
        self.open_count = 0
        self.readings_late = 0

    def add(self, at_s: float, value_w: float) -> list[float | None]:
        """Closed step values in order; `None` marks a gap too long to fill."""
        step = math.floor(at_s / self.step_s)
        if self.open_step is None or step == self.open_step:
            self.open_step = step
            self.open_sum_w += value_w
            self.open_count += 1
            return []
        if step < self.open_step:
            # Its step has already been learnt from; rewriting history is not worth the state.
            self.readings_late += 1
            return []
        closed_w = self.open_sum_w / self.open_count
        missing = step - self.open_step - 1
        closed: list[float | None] = [closed_w]
        if missing:
            closed.extend([closed_w] * missing if missing <= self.max_fill_steps else [None])
        self.open_step = step
        self.open_sum_w = value_w
        self.open_count = 1
        return closed


class _LevelMedian:
    """Per level bin, held or fresh, and horizon, a stochastic median of the change that followed.

    Whether the level has been held matters as much as the level itself in appliance-like loads:
    a kettle's first minutes at 2 kW say it will soon be off, a heater's tenth says little. A
    level is held `level_held_steps` steps after river's Page-Hinkley test last flagged a change
    in the log level (`_step_change_detector`). The medians are kept at float32 (`array`), which
    is what the state stores, so a restore is exact.
    """

    def __init__(self, settings: ForecastSettings) -> None:
        self.horizon_steps = settings.horizon_steps
        self.log_bin = math.log(settings.level_bin_ratio)
        self.log_jump = math.log(settings.level_jump_ratio)
        self.step_change = _step_change_detector(self.log_jump)
        self.held_steps = settings.level_held_steps
        self.rate = settings.level_median_rate
        self.min_samples = settings.level_median_min_samples
        # key -> (median change, typical deviation, count), one entry per horizon
        self.bins: dict[int, tuple[array[float], array[float], array[int]]] = {}
        self.recent: deque[tuple[float, int]] = deque(maxlen=settings.horizon_steps)
        # Steps since the level last changed; None before the first step of a series.
        self.steady_steps: int | None = None

    def _key(self, value_w: float) -> int:
        log_w = math.log(max(value_w, 1.0))
        self.step_change.update(log_w)
        if self.steady_steps is None or self.step_change.drift_detected:
            self.steady_steps = 0
        else:
            self.steady_steps += 1
        return 2 * int(log_w / self.log_bin) + (self.steady_steps >= self.held_steps)

    def learn_one(self, value_w: float) -> None:
        rate = self.rate
        for h, (past_w, past_key) in enumerate(self.recent):
            entry = self.bins.get(past_key)
            if entry is None:
                horizon = self.horizon_steps
                entry = self.bins[past_key] = (
                    array("f", bytes(4 * horizon)),
                    array("f", bytes(4 * horizon)),
                    array("H", bytes(2 * horizon)),
                )
            median, spread, count = entry
            change = value_w - past_w
            seen = count[h] + 1
            if seen <= _COUNT_MAX:
                count[h] = seen
            middle_w = median[h]
            spread_w = abs(change) + 1.0 if seen == 1 else spread[h]
            spread_w += (abs(change - middle_w) - spread_w) * 0.05
            spread[h] = spread_w
            # Large steps while a bin is new, then the fixed rate.
            step = (1.0 / seen if seen * rate < 1.0 else rate) * spread_w
            if change > middle_w:
                median[h] = middle_w + step
            elif change < middle_w:
                median[h] = middle_w - step
        self.recent.appendleft((value_w, self._key(value_w)))

    def forget_recent(self) -> None:
        self.recent.clear()
        self.step_change = _step_change_detector(self.log_jump)
        self.steady_steps = None

    def forecast(self, horizon: int) -> list[float]:
        """From the value learnt last."""
        value_w, key = self.recent[0]
        entry = self.bins.get(key)
        if entry is None:
            return [value_w] * horizon
        median, _, count = entry
        least = self.min_samples
        return [
            value_w + (m if n >= least else 0.0)
            for m, n in zip(median[:horizon], count[:horizon], strict=True)
        ]


def _step_change_detector(log_jump: float) -> Any:
    """river's Page-Hinkley test on the log level: a jump well beyond `log_jump` is flagged at
    the step it happens (a kettle switching on), a smaller change once it has added up to that
    much. One setting, not tuned: `delta` river's default, `min_instances` 1 so that a level held
    for only a few steps can be left too."""
    return drift.PageHinkley(min_instances=1, delta=0.005, threshold=log_jump)


def _snarimax() -> Any:
    """SNARIMAX(3, 1, 0) with Bayesian linear regression: it learns the step-to-step changes from
    the last three and a bias (given as features, `_FEATURES`), and its posterior cannot diverge
    the way river's default SGD regressor does on these series."""
    return time_series.SNARIMAX(
        p=_SNARIMAX_LAGS, d=1, q=0, regressor=linear_model.BayesianLinearRegression()
    )


def _holt_trend(settings: ForecastSettings) -> Any:
    """Holt's linear smoothing (river's Holt-Winters without a season): a level and a slope."""
    return time_series.HoltWinters(  # type: ignore[no-untyped-call]
        alpha=settings.trend_level_weight, beta=settings.trend_slope_weight
    )


def _float32(value_w: float) -> float:
    # What `array("f")` stores, so a window restored from the state is the window that was kept.
    return array("f", (value_w,))[0]


def _median(window: utils.SortedWindow) -> float:
    sorted_w: list[float] = window.data
    middle = len(sorted_w) // 2
    return sorted_w[middle] if len(sorted_w) % 2 else (sorted_w[middle - 1] + sorted_w[middle]) / 2


class _SortedWindow:
    """The last N errors in arrival order and sorted, for the band's quantiles and tail shares.

    river's `RollingQuantile` answers one fixed quantile, and the band's level adapts. river's
    `utils.SortedWindow` is this structure, but it bisects through `UserList`'s Python-level
    item access: with 12 windows of 288 it took a quarter of the forecaster's time (profiled on
    the household trace), so the band keeps its own, bisecting the list itself. Values are
    stored at float32 precision (ample for watts) so the state stays small and restores bit for
    bit.
    """

    def __init__(self, size: int) -> None:
        self.arrival_w: deque[float] = deque(maxlen=size)
        self.sorted_w: list[float] = []

    def add(self, value_w: float) -> None:
        """`value_w` must already be a float32 value (as read from an `array("f")`)."""
        arrival_w = self.arrival_w
        sorted_w = self.sorted_w
        if len(arrival_w) == arrival_w.maxlen:
            del sorted_w[bisect.bisect_left(sorted_w, arrival_w[0])]
        arrival_w.append(value_w)
        bisect.insort(sorted_w, value_w)

    def clear(self) -> None:
        self.arrival_w.clear()
        self.sorted_w.clear()

    def share_above(self, value_w: float) -> float:
        """Fraction of the window's values above `value_w`."""
        n = len(self.sorted_w)
        return (n - bisect.bisect_right(self.sorted_w, value_w)) / n if n else 0.0


# Scored, and issued where one does clearly better than the others; the first is the default.
_CANDIDATES = ("combined", "snarimax", "trend")


class _Combination:
    """The point forecast issued at each horizon, as a river-style forecaster over four models.

    The models: river's SNARIMAX and Holt-Winters, `_LevelMedian` and the median of the last
    few steps (river's `SortedWindow`). What is issued at horizon h is the last value plus a
    weighted sum of how far SNARIMAX, the level median and the recent median are from it, unless
    SNARIMAX or the trend alone has clearly done better there lately.

    The weights are an online median regression: after each scored target, each weight moves by
    `combine_rate` times its input's deviation over that input's typical size, towards the side
    the target fell on. The absolute error it descends is what the benchmark scores, and a spike
    moves a weight no more than a small miss does.

    `learn_one(y)` scores what was forecast for this step 1..H steps ago, teaches the models and
    issues the next forecasts; `forecast(horizon)` returns them (float32, as the state keeps
    them, so a restore is exact). Issuing once per step, not per call, keeps the cost at one
    SNARIMAX recursion (river's costliest call here) per step.
    """

    def __init__(self, settings: ForecastSettings) -> None:
        self.settings = settings
        horizon = settings.horizon_steps
        self.snarimax = _snarimax()
        self.trend = _holt_trend(settings)
        self.level_median = _LevelMedian(settings)
        self.recent = utils.SortedWindow(settings.recent_median_steps)
        self.issued_w = array("f")
        # Forecasts still waiting for their target, newest first.
        self._pending: dict[str, deque[array[float]]] = {
            name: deque(maxlen=horizon) for name in _CANDIDATES
        }
        # The combination's other inputs, per pending forecast: last value, recent median and
        # the level median's forecasts (SNARIMAX's are pending above).
        self._pending_inputs: deque[tuple[float, float, array[float]]] = deque(maxlen=horizon)
        self._score_w = {name: [0.0] * horizon for name in _CANDIDATES}
        self._scored = [0] * horizon  # every candidate is scored on the same targets
        # Per horizon: the weight of each combined input and its typical absolute deviation from
        # the last value (0 until one has been seen).
        self._combine_w = [[0.0] * _COMBINED_INPUTS for _ in range(horizon)]
        self._combine_scale_w = [[0.0] * _COMBINED_INPUTS for _ in range(horizon)]

    def learn_one(self, value_w: float) -> None:
        self._score_and_combine(value_w)
        self.snarimax.learn_one(value_w, x=dict(_FEATURES))
        self.level_median.learn_one(value_w)
        self.recent.append(_float32(value_w))
        self.trend.learn_one(value_w)
        self._issue(value_w)

    def forget_lags(self) -> None:
        """After a long hole: what the models learnt is kept, their recent values are not, and
        a forecast across the hole is neither scored nor learnt from."""
        for lags in (self.snarimax.y_hist, self.snarimax.y_diff, self.snarimax.errors):
            lags.clear()
        self.trend = _holt_trend(self.settings)
        self.level_median.forget_recent()
        self.recent = utils.SortedWindow(self.settings.recent_median_steps)
        for pending in self._pending.values():
            pending.clear()
        self._pending_inputs.clear()
        self.issued_w = array("f")

    def forecast(self, horizon: int) -> array[float]:
        return self.issued_w[:horizon]

    def _score_and_combine(self, value_w: float) -> None:
        """Scores every pending forecast against `value_w` and moves the combination's weights."""
        weight = self.settings.score_weight
        rate = self.settings.combine_rate
        outlier_ratio = self.settings.combine_outlier_ratio
        combined_score = self._score_w["combined"]
        snarimax_score = self._score_w["snarimax"]
        trend_score = self._score_w["trend"]
        for h, (combined_w, snarimax_w, trend_w, (base_w, recent_w, level_w)) in enumerate(
            zip(
                self._pending["combined"],
                self._pending["snarimax"],
                self._pending["trend"],
                self._pending_inputs,
                strict=True,
            )
        ):
            snarimax = snarimax_w[h]
            snarimax_score[h] += (abs(value_w - snarimax) - snarimax_score[h]) * weight
            trend_score[h] += (abs(value_w - trend_w[h]) - trend_score[h]) * weight
            error = value_w - combined_w[h]
            combined_score[h] += (abs(error) - combined_score[h]) * weight
            if error == 0.0:
                continue
            step = rate if error > 0.0 else -rate
            weights = self._combine_w[h]
            scales = self._combine_scale_w[h]
            # Written out for the three inputs: this runs H times per step for every load.
            s0, s1, s2 = scales
            d0 = snarimax - base_w
            if s0 > 0.0:
                limit = s0 * outlier_ratio
                if not -limit <= d0 <= limit:
                    d0 = limit if d0 > 0.0 else -limit
                s0 += (abs(d0) - s0) * weight
            else:
                s0 = abs(d0)
            d1 = level_w[h] - base_w
            s1 = s1 + (abs(d1) - s1) * weight if s1 > 0.0 else abs(d1)
            d2 = recent_w - base_w
            s2 = s2 + (abs(d2) - s2) * weight if s2 > 0.0 else abs(d2)
            scales[:] = s0, s1, s2
            # Each weight stays within 0..1: a share of how far that input is from the last value.
            w0, w1, w2 = weights
            if s0 > 0.0:
                w0 += step * d0 / s0
                w0 = 1.0 if w0 > 1.0 else 0.0 if w0 < 0.0 else w0
            if s1 > 0.0:
                w1 += step * d1 / s1
                w1 = 1.0 if w1 > 1.0 else 0.0 if w1 < 0.0 else w1
            if s2 > 0.0:
                w2 += step * d2 / s2
                w2 = 1.0 if w2 > 1.0 else 0.0 if w2 < 0.0 else w2
            weights[:] = w0, w1, w2
        scored = self._scored
        for h in range(len(self._pending_inputs)):
            scored[h] += 1

    def _issue(self, value_w: float) -> None:
        horizon = self.settings.horizon_steps
        snarimax_w = self.snarimax.forecast(
            horizon=horizon, xs=[dict(_FEATURES) for _ in range(horizon)]
        )
        level_w = self.level_median.forecast(horizon)
        # Holt-Winters starts from its second value; until then, the last value.
        trend_w = self.trend.forecast(horizon) if self.trend.level else [value_w] * horizon
        recent_w = _median(self.recent)
        recent_deviation = recent_w - value_w
        outlier_ratio = self.settings.combine_outlier_ratio
        combined_w = []
        for (w0, w1, w2), (s0, _, _), snarimax, level in zip(
            self._combine_w, self._combine_scale_w, snarimax_w, level_w, strict=True
        ):
            d0 = snarimax - value_w
            limit = s0 * outlier_ratio
            if s0 > 0.0 and not -limit <= d0 <= limit:
                d0 = limit if d0 > 0.0 else -limit
            combined_w.append(value_w + w0 * d0 + w1 * (level - value_w) + w2 * recent_deviation)
        candidates = (combined_w, snarimax_w, trend_w)
        self.issued_w = array("f", [candidates[c][h] for h, c in enumerate(self._best())])
        for pending, forecast_w in zip(self._pending.values(), candidates, strict=True):
            pending.appendleft(array("f", forecast_w))
        self._pending_inputs.appendleft((value_w, recent_w, array("f", level_w)))

    def _best(self) -> list[int]:
        """Per horizon, the index in `_CANDIDATES` of what to issue: the combination unless
        SNARIMAX or the trend has clearly done better."""
        least = self.settings.min_error_samples
        margin = 1.0 - self.settings.switch_margin_ratio
        scores = self._score_w
        return [
            0
            if scored < least or min(snarimax, trend) >= combined * margin
            else 1
            if snarimax <= trend
            else 2
            for scored, combined, snarimax, trend in zip(
                self._scored, scores["combined"], scores["snarimax"], scores["trend"], strict=True
            )
        ]

    def chosen_candidates(self) -> tuple[str, ...]:
        return tuple(_CANDIDATES[c] for c in self._best())

    def combination_weights(self) -> tuple[tuple[float, float, float], ...]:
        return tuple((w0, w1, w2) for w0, w1, w2 in self._combine_w)

    def to_state(self) -> dict[str, Any]:
        level = self.level_median
        level_keys = sorted(level.bins)
        level_entries = [level.bins[k] for k in level_keys]
        regressor = self.snarimax.regressor
        return {
            "snarimax": learnt_state(self.snarimax, _SNARIMAX_LEARNT),
            "snarimax_regressor": learnt_state(regressor, learnt_names(regressor)),
            "trend": learnt_state(self.trend, learnt_names(self.trend)),
            "level_median": {
                "keys": level_keys,
                "median_w": _pack_arrays(e[0] for e in level_entries),
                "spread_w": _pack_arrays(e[1] for e in level_entries),
                "count": _pack_arrays(e[2] for e in level_entries),
                "recent": [list(item) for item in level.recent],
                "step_change": learnt_state(level.step_change, learnt_names(level.step_change)),
                "steady_steps": level.steady_steps,
            },
            "recent_w": _pack("f", self.recent.unsorted_window),
            "issued_w": _pack("f", self.issued_w),
            "pending": {
                name: _pack("f", (v for f in pending for v in f))
                for name, pending in self._pending.items()
            },
            "pending_inputs": [
                [base_w, recent_w, _pack("f", level_w)]
                for base_w, recent_w, level_w in self._pending_inputs
            ],
            "score_w": self._score_w,
            "scored": self._scored,
            "combine_w": self._combine_w,
            "combine_scale_w": self._combine_scale_w,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Into a fresh combination of the same settings: what `to_state` described."""
        horizon = self.settings.horizon_steps
        restore_learnt(self.snarimax, state["snarimax"], _SNARIMAX_LEARNT)
        regressor = self.snarimax.regressor
        restore_learnt(regressor, state["snarimax_regressor"], learnt_names(regressor))
        restore_learnt(self.trend, state["trend"], learnt_names(self.trend))
        _check_learns(self.snarimax, _holt_trend(self.settings), state["trend"])
        level_state = state["level_median"]
        level = self.level_median
        medians = _unpack_arrays("f", level_state["median_w"], horizon)
        spreads = _unpack_arrays("f", level_state["spread_w"], horizon)
        counts = _unpack_arrays("H", level_state["count"], horizon)
        level.bins = {
            int(k): (m, s, c)
            for k, m, s, c in zip(level_state["keys"], medians, spreads, counts, strict=True)
        }
        level.recent.extend((float(v), int(k)) for v, k in level_state["recent"])
        restore_learnt(
            level.step_change, level_state["step_change"], learnt_names(level.step_change)
        )
        steady_steps = level_state["steady_steps"]
        level.steady_steps = None if steady_steps is None else int(steady_steps)
        for value_w in _unpack("f", state["recent_w"]):
            self.recent.append(value_w)
        self.issued_w = _unpack("f", state["issued_w"])
        for name, packed in state["pending"].items():
            self._pending[name].extend(_unpack_arrays("f", packed, horizon))
        self._pending_inputs.extend(
            (float(base_w), float(recent_w), _unpack("f", level_w))
            for base_w, recent_w, level_w in state["pending_inputs"]
        )
        self._score_w = {n: [float(v) for v in state["score_w"][n]] for n in _CANDIDATES}
        self._scored = [int(v) for v in state["scored"]]
        self._combine_w = [[float(v) for v in row] for row in state["combine_w"]]
        self._combine_scale_w = [[float(v) for v in row] for row in state["combine_scale_w"]]


def _check_learns(snarimax: Any, trend: Any, trend_state: Any) -> None:
    """Models read from a state learn and forecast a step, on copies (`trend`: a fresh one to
    read `trend_state` into again; river 0.23's Holt-Winters cannot be deep-copied): numbers of
    the right type but the wrong shape (an edited file) fail here, at restore, not at the next
    reading."""
    try:
        snarimax_copy = copy.deepcopy(snarimax)
        snarimax_copy.learn_one(100.0, x=dict(_FEATURES))
        snarimax_copy.forecast(horizon=2, xs=[dict(_FEATURES), dict(_FEATURES)])
        restore_learnt(trend, trend_state, learnt_names(trend))
        trend.learn_one(100.0)
        trend.learn_one(100.0)
        trend.forecast(2)
    except (ArithmeticError, LookupError, TypeError, ValueError, MemoryError) as err:
        raise ForecasterStateError(f"river models read from the state fail: {err!r}") from err


class _AdaptiveBand:
    """A band around another river-style forecaster's point forecasts, calibrated on its errors.

    At each horizon the last `error_window_steps` realised errors of what was issued are kept
    sorted (`_SortedWindow`), and the band is the forecast plus their quantiles at
    (miss / 2) and (1 - miss / 2). river's `RollingQuantile` answers one fixed quantile; here the
    level adapts, by adaptive conformal inference (Gibbs & Candès, 2021): each horizon's miss
    level moves by `band_adapt_rate` after every scored target, towards wider after a miss and
    narrower after a hit, so the band stays calibrated when the load's errors drift or come in
    runs (at 12 steps ahead, consecutive errors overlap). The guard reads the same windows for
    the share of errors above a margin.
    """

    def __init__(self, forecaster: _Combination, settings: ForecastSettings) -> None:
        self.forecaster = forecaster
        self.settings = settings
        horizon = settings.horizon_steps
        self.errors = [_SortedWindow(settings.error_window_steps) for _ in range(horizon)]
        self.miss_level = [1.0 - settings.band_ratio] * horizon
        # (mean, lower, upper) per issue still waiting for targets, newest first.
        self.pending: deque[tuple[array[float], array[float], array[float]]] = deque(maxlen=horizon)

    def learn_one(self, value_w: float) -> None:
        s = self.settings
        target_miss = 1.0 - s.band_ratio
        least = s.min_error_samples
        adapt_rate = s.band_adapt_rate
        miss_level = self.miss_level
        pending = self.pending
        errors_w = array("f", [value_w - item[0][h] for h, item in enumerate(pending)])
        # Only the horizons that have a pending forecast: zip stops at the shortest.
        for h, ((_, lower_w, upper_w), window, error_w) in enumerate(
            zip(pending, self.errors, errors_w, strict=False)
        ):
            if len(window.sorted_w) >= least:
                missed = not lower_w[h] <= value_w <= upper_w[h]
                level = miss_level[h] + adapt_rate * (target_miss - missed)
                miss_level[h] = 1.0 if level > 1.0 else 0.0 if level < 0.0 else level
            window.add(error_w)
        self.forecaster.learn_one(value_w)
        self._issue()

    def forget_lags(self) -> None:
        self.forecaster.forget_lags()
        self.pending.clear()

    def forecast(self, horizon: int) -> tuple[array[float], array[float], array[float]]:
        """Mean, lower and upper bound for steps 1..`horizon`; empty before the first issue."""
        if not self.pending:
            return array("f"), array("f"), array("f")
        mean_w, lower_w, upper_w = self.pending[0]
        return mean_w[:horizon], lower_w[:horizon], upper_w[:horizon]

    def calibrated(self) -> list[bool]:
        """Per horizon: the band rests on at least `min_error_samples` realised errors."""
        least = self.settings.min_error_samples
        return [len(window.sorted_w) >= least for window in self.errors]

    def _issue(self) -> None:
        # The mean is float32 (`array("f")`) before the band is laid around it, so rounding
        # cannot put it outside its own band.
        mean_w = self.forecaster.forecast(self.settings.horizon_steps)
        # Nearest-rank quantiles of the errors at (miss / 2) and (1 - miss / 2); with miss within
        # 0..1 both ranks fall inside the window but the lowest, which is taken as 0.
        bands_w = [
            (
                errors_w[max(math.ceil(miss_level / 2.0 * n) - 1, 0)],
                errors_w[math.ceil((1.0 - miss_level / 2.0) * n) - 1],
            )
            if (n := len(errors_w))
            else (0.0, 0.0)
            for errors_w, miss_level in zip(
                [window.sorted_w for window in self.errors], self.miss_level, strict=True
            )
        ]
        lower_w = [mean + low for mean, (low, _) in zip(mean_w, bands_w, strict=True)]
        upper_w = [mean + high for mean, (_, high) in zip(mean_w, bands_w, strict=True)]
        self.pending.appendleft((mean_w, array("f", lower_w), array("f", upper_w)))

    def share_above(self, horizon_step: int, error_w: float) -> float:
        """Share of recent errors at `horizon_step` (1-based) that exceeded `error_w`."""
        return self.errors[horizon_step - 1].share_above(error_w)

    def to_state(self) -> dict[str, Any]:
        return {
            "errors_w": [_pack("f", window.arrival_w) for window in self.errors],
            "miss_level": self.miss_level,
            "pending": _pack("f", (v for item in self.pending for f in item for v in f)),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        for window, packed in zip(self.errors, state["errors_w"], strict=True):
            for error_w in _unpack("f", packed):
                window.add(error_w)
        self.miss_level = [float(v) for v in state["miss_level"]]
        issued = _unpack_arrays("f", state["pending"], self.settings.horizon_steps)
        self.pending.extend(
            (issued[i], issued[i + 1], issued[i + 2]) for i in range(0, len(issued), 3)
        )


class LoadForecaster:
    """One load's online forecaster. Feed it readings with `observe`, read `forecast()`.

    Readings are averaged into steps (`_StepResampler`); each closed step is learnt by the
    band (`_AdaptiveBand`), which scores its last bands and passes the step on to the point
    forecast (`_Combination`) and its models.
    """

    def __init__(self, settings: ForecastSettings | None = None) -> None:
        self.settings = settings or ForecastSettings()
        s = self.settings
        self._resampler = _StepResampler(s.step_s, int(s.max_fill_s // s.step_s))
        self._combination = _Combination(s)
        self._band = _AdaptiveBand(self._combination, s)
        self._last_step: int | None = None
        self.readings_rejected = 0

    @property
    def readings_late(self) -> int:
        """Readings dropped because their step had already been learnt from."""
        return self._resampler.readings_late

    def observe(self, at_s: float, value_w: float) -> int:
        """Takes one reading; returns how many steps it closed (each one learnt from)."""
        if not (math.isfinite(at_s) and math.isfinite(value_w)):
            self.readings_rejected += 1
            return 0
        closed = self._resampler.add(at_s, value_w)
        for value in closed:
            if value is None:
                # A forecast across a long hole says nothing about the model.
                self._band.forget_lags()
            else:
                self._band.learn_one(value)
        if closed:
            assert self._resampler.open_step is not None
            self._last_step = self._resampler.open_step - 1
        return sum(1 for value in closed if value is not None)

    def chosen_candidates(self) -> tuple[str, ...]:
        """Which candidate is issued at each horizon right now."""
        return self._combination.chosen_candidates()

    def combination_weights(self) -> tuple[tuple[float, float, float], ...]:
        """Per horizon, the combination's weights on SNARIMAX, the level and the recent median."""
        return self._combination.combination_weights()

    def forecast(self) -> tuple[ForecastPoint, ...]:
        """Steps 1..H after the last closed step; empty until a step has closed."""
        mean_w, lower_w, upper_w = self._band.forecast(self.settings.horizon_steps)
        if not mean_w or self._last_step is None:
            return ()
        step_s = self.settings.step_s
        first_s = (self._last_step + 1) * step_s
        # What `ForecastPoint._make` does, without a Python-level call per point.
        return tuple(
            map(
                tuple.__new__,
                [ForecastPoint] * len(mean_w),
                zip(
                    [first_s + h * step_s for h in range(len(mean_w))],
                    mean_w,
                    lower_w,
                    upper_w,
                    self._band.calibrated(),
                    strict=True,
                ),
            )
        )

    def share_of_errors_above(self, horizon_step: int, error_w: float) -> float:
        """Share of recent errors at `horizon_step` (1-based) that exceeded `error_w`."""
        return self._band.share_above(horizon_step, error_w)

    def to_state(self) -> dict[str, Any]:
        """Everything learnt, as a dict JSON can hold; `from_state` restores it exactly."""
        resampler = self._resampler
        return {
            "version": STATE_VERSION,
            "river": RIVER_VERSION,
            "settings": asdict(self.settings),
            "resampler": [
                resampler.open_step,
                resampler.open_sum_w,
                resampler.open_count,
                resampler.readings_late,
            ],
            "readings_rejected": self.readings_rejected,
            "last_step": self._last_step,
            "combination": self._combination.to_state(),
            "band": self._band.to_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LoadForecaster:
        """The forecaster `to_state` described. A state of another version, written with another
        river, or malformed raises `ForecasterStateError` (a `ValueError`): learn afresh."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            version = state.get("version") if isinstance(state, Mapping) else None
            raise ForecasterStateError(f"unknown forecaster state version {version!r}")
        if state.get("river") != RIVER_VERSION:
            raise ForecasterStateError(
                f"forecaster state written with river {state.get('river')!r}, "
                f"this is river {RIVER_VERSION}"
            )
        try:
            restored = cls(ForecastSettings(**state["settings"]))
            resampler = restored._resampler
            (
                resampler.open_step,
                resampler.open_sum_w,
                resampler.open_count,
                resampler.readings_late,
            ) = state["resampler"]
            restored.readings_rejected = int(state["readings_rejected"])
            restored._last_step = state["last_step"]
            restored._combination.restore(state["combination"])
            restored._band.restore(state["band"])
        except ForecasterStateError:
            raise
        except (KeyError, TypeError, IndexError, ValueError) as err:
            raise ForecasterStateError(f"malformed forecaster state: {err!r}") from err
        return restored


def _pack(typecode: str, values: Iterable[float]) -> str:
    # Machine numbers in base64: exact, and a third of the size of decimal JSON.
    return base64.b64encode(array(typecode, values).tobytes()).decode("ascii")


def _pack_arrays(arrays: Iterable[array[Any]]) -> str:
    return base64.b64encode(b"".join(a.tobytes() for a in arrays)).decode("ascii")


def _unpack(typecode: str, packed: str) -> array[Any]:
    return array(typecode, base64.b64decode(packed))


def _unpack_arrays(typecode: str, packed: str, size: int) -> list[array[Any]]:
    values = _unpack(typecode, packed)
    return [values[i : i + size] for i in range(0, len(values), size)]


def node_draw_w(
    site: Site,
    outlet_draw_w: Mapping[str, float],
    ups_output_w: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Each node's total draw from outlet readings: outlets, their PDUs and the UPS units.

    A UPS's own output reading, when there is one, is its draw (it also sees what no PDU
    meters); otherwise it is the sum of its PDUs. Outlets without a reading count as zero.
    """
    draw: dict[str, float] = {}
    for pdu in site.pdus:
        total = 0.0
        for outlet in pdu.outlets:
            value = outlet_draw_w.get(outlet.id)
            if value is not None:
                draw[outlet.id] = value
                total += value
        draw[pdu.id] = total
    for ups in site.ups:
        own = (ups_output_w or {}).get(ups.id)
        draw[ups.id] = (
            own if own is not None else sum(draw[p.id] for p in site.pdus if p.ups == ups.id)
        )
    return draw


class NodeForecasters:
    """A forecaster per power node, each learning the node's total draw as its own series.

    Summing per-outlet upper bounds would assume every outlet peaks at once; the total's own
    errors know how often they do.
    """

    def __init__(self, node_ids: Iterable[str], settings: ForecastSettings | None = None) -> None:
        self.settings = settings or ForecastSettings()
        self.by_node = {node_id: LoadForecaster(self.settings) for node_id in node_ids}

    @classmethod
    def for_site(cls, site: Site, settings: ForecastSettings | None = None) -> NodeForecasters:
        """Every UPS and PDU, and every outlet that has a limit of its own."""
        return cls((n.id for n in site.nodes if n.limit_w is not None), settings)

    def observe(self, at_s: float, draw_w: Mapping[str, float]) -> None:
        """One reading per node; nodes absent from `draw_w` simply have no reading."""
        for node_id, value in draw_w.items():
            forecaster = self.by_node.get(node_id)
            if forecaster is not None:
                forecaster.observe(at_s, value)

    def forecasts(self) -> dict[str, tuple[ForecastPoint, ...]]:
        """Each node's forecast, steps 1..H."""
        return {node_id: f.forecast() for node_id, f in self.by_node.items()}

    def to_state(self) -> dict[str, Any]:
        """JSON-able state of every node's forecaster."""
        return {node_id: f.to_state() for node_id, f in self.by_node.items()}

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], settings: ForecastSettings | None = None
    ) -> NodeForecasters:
        """Restores `to_state`'s output."""
        restored = cls((), settings)
        restored.by_node = {n: LoadForecaster.from_state(s) for n, s in state.items()}
        return restored
