"""Online forecasts of one load's draw, 1..H steps ahead, with a band calibrated on its own errors.

Readings arrive irregularly; they are averaged into fixed steps. Each closed step teaches four
candidates and is scored against what each candidate forecast for it 1..H steps earlier:

- naive: the last value;
- SNARIMAX(p=3, d=1, q=0) with river's `BayesianLinearRegression` and a bias feature, written in
  its recursive (Sherman-Morrison) form over four fixed features: the same posterior river
  computes, but without river's per-call dict-to-matrix copies, so a 12-step forecast per reading
  stays cheap on a small machine (`tests/engine/test_forecast.py` checks it against river);
- level median: the median change seen h steps after the load was at about this level, which
  captures what linear models cannot in appliance-like loads (a spike at a high level falls back,
  a quiet level stays quiet);
- trend: Holt's linear smoothing, for ramps the others mean-revert away from.

At each horizon the candidate with the lowest exponentially weighted absolute error is issued if it
beats naive's by a margin (naive until a candidate has a track record: the cold start). The band
is a pair of rolling quantiles of the issued forecast's own realised errors at that horizon, so it
is as wide as this load has actually needed lately; their level adapts so the band misses as often
as it should (see `LoadForecaster`).
"""

from __future__ import annotations

import base64
import bisect
import math
import struct
from array import array
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from .model import Site

STATE_VERSION = 1
_AR_LAGS = 3
_AR_FEATURES = _AR_LAGS + 1  # lagged differences and a bias
_F32 = struct.Struct("<f")


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
    # Naive is issued unless another candidate's recent error is this much lower: switching on
    # noise costs more than it gains.
    switch_margin_ratio: float = 0.02
    # Errors a candidate needs at a horizon before it may replace naive, and that a band needs
    # before it counts as calibrated.
    min_error_samples: int = 20
    # Responsiveness of the candidate scores (weight of the newest absolute error).
    score_weight: float = 0.01
    # Level bins of the level-median candidate are this ratio wide (10 %: scale-free).
    level_bin_ratio: float = 1.1
    # Step of the level-median's stochastic median, in units of the bin's typical deviation.
    level_median_rate: float = 0.005
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
        if self.level_bin_ratio <= 1.0:
            raise ValueError("level_bin_ratio must be above 1")


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


class _DifferencedAutoregression:
    """SNARIMAX(3, 1, 0) + bias with Bayesian linear regression (alpha = beta = 1).

    Posterior mean m and covariance S of the weights, updated by Sherman-Morrison:
    k = S x / (1 + x'S x), m += k (y - x'm), S -= k x'S (Bishop 3.50-3.51, as river does).
    Missing lags count as zero, which is what river's sparse features amount to.
    """

    def __init__(self) -> None:
        self.weights = [0.0] * _AR_FEATURES
        self.covariance = [
            [1.0 if i == j else 0.0 for j in range(_AR_FEATURES)] for i in range(_AR_FEATURES)
        ]
        self.last_w: float | None = None
        self.diffs_w: list[float] = []  # newest first

    def _features(self, diffs_w: list[float]) -> list[float]:
        return [*diffs_w, *([0.0] * (_AR_LAGS - len(diffs_w))), 1.0]

    def learn(self, value_w: float) -> None:
        if self.last_w is not None:
            target = value_w - self.last_w
            x0, x1, x2, x3 = self._features(self.diffs_w)
            s = self.covariance
            # Written out for four features: this runs once per step for every load.
            sx = [r0 * x0 + r1 * x1 + r2 * x2 + r3 * x3 for r0, r1, r2, r3 in s]
            gain_den = 1.0 + x0 * sx[0] + x1 * sx[1] + x2 * sx[2] + x3 * sx[3]
            gain = [v / gain_den for v in sx]
            w0, w1, w2, w3 = self.weights
            error = target - (w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3)
            self.weights = [w + g * error for w, g in zip(self.weights, gain, strict=True)]
            self.covariance = [
                [s_ij - g_i * sx_j for s_ij, sx_j in zip(row, sx, strict=True)]
                for row, g_i in zip(s, gain, strict=True)
            ]
            self.diffs_w = [target, *self.diffs_w[: _AR_LAGS - 1]]
        self.last_w = value_w

    def forget_lags(self) -> None:
        self.last_w = None
        self.diffs_w = []

    def forecast(self, horizon_steps: int) -> list[float]:
        assert self.last_w is not None
        w0, w1, w2, bias = self.weights
        d0, d1, d2 = self._features(self.diffs_w)[:_AR_LAGS]
        level = self.last_w
        out = []
        for _ in range(horizon_steps):
            step = w0 * d0 + w1 * d1 + w2 * d2 + bias
            level += step
            out.append(level)
            d0, d1, d2 = step, d0, d1
        return out


class _LevelMedian:
    """Per level bin and horizon, a stochastic estimate of the median change that followed."""

    def __init__(self, settings: ForecastSettings) -> None:
        self.horizon_steps = settings.horizon_steps
        self.log_bin = math.log(settings.level_bin_ratio)
        self.rate = settings.level_median_rate
        self.min_samples = settings.min_error_samples
        # bin -> (median change, typical deviation, count), one entry per horizon
        self.bins: dict[int, tuple[list[float], list[float], list[int]]] = {}
        self.recent: deque[tuple[float, int]] = deque(maxlen=settings.horizon_steps)

    def _bin(self, value_w: float) -> int:
        return int(math.log(max(value_w, 1.0)) / self.log_bin)

    def learn(self, value_w: float) -> None:
        rate = self.rate
        for h, (past_w, past_bin) in enumerate(self.recent):
            entry = self.bins.get(past_bin)
            if entry is None:
                horizon = self.horizon_steps
                entry = self.bins[past_bin] = ([0.0] * horizon, [0.0] * horizon, [0] * horizon)
            median, spread, count = entry
            change = value_w - past_w
            count[h] += 1
            if count[h] == 1:
                spread[h] = abs(change) + 1.0
            spread[h] += (abs(change - median[h]) - spread[h]) * 0.05
            # Large steps while a bin is new, then the fixed rate.
            step = (1.0 / count[h] if count[h] * rate < 1.0 else rate) * spread[h]
            if change > median[h]:
                median[h] += step
            elif change < median[h]:
                median[h] -= step
        self.recent.appendleft((value_w, self._bin(value_w)))

    def forget_recent(self) -> None:
        self.recent.clear()

    def forecast(self, value_w: float) -> list[float]:
        entry = self.bins.get(self._bin(value_w))
        if entry is None:
            return [value_w] * self.horizon_steps
        median, _, count = entry
        least = self.min_samples
        return [value_w + (m if n >= least else 0.0) for m, n in zip(median, count, strict=True)]


class _LinearTrend:
    """Holt's linear exponential smoothing: a level and a slope, both smoothed.

    The candidate that follows a ramp (a job spinning up, a battery bank charging), which the
    other candidates, fitted on a load's whole history, mean-revert away from.
    """

    def __init__(self, settings: ForecastSettings) -> None:
        self.level_weight = settings.trend_level_weight
        self.slope_weight = settings.trend_slope_weight
        self.level_w: float | None = None
        self.slope_w = 0.0

    def learn(self, value_w: float) -> None:
        if self.level_w is None:
            self.level_w = value_w
            return
        previous = self.level_w
        self.level_w = (
            previous + self.slope_w + self.level_weight * (value_w - previous - self.slope_w)
        )
        self.slope_w += self.slope_weight * (self.level_w - previous - self.slope_w)

    def forget(self) -> None:
        self.level_w = None
        self.slope_w = 0.0

    def forecast(self, horizon_steps: int) -> list[float]:
        assert self.level_w is not None
        return [self.level_w + h * self.slope_w for h in range(1, horizon_steps + 1)]


class _ErrorWindow:
    """The last N realised errors at one horizon, kept sorted for quantiles and tail shares.

    river's `RollingQuantile` answers one fixed quantile; the band's level adapts (see
    `LoadForecaster`) and the overload guard needs the share of errors above a margin, so the
    window is kept here as a deque plus a sorted list. Errors are stored at float32 precision
    (ample for watts) so the state stays small and restores bit for bit.
    """

    def __init__(self, size: int) -> None:
        self.arrival_w: deque[float] = deque(maxlen=size)
        self.sorted_w: list[float] = []

    def add(self, error_w: float) -> None:
        error_w = _F32.unpack(_F32.pack(error_w))[0]
        arrival_w = self.arrival_w
        sorted_w = self.sorted_w
        if len(arrival_w) == arrival_w.maxlen:
            del sorted_w[bisect.bisect_left(sorted_w, arrival_w[0])]
        arrival_w.append(error_w)
        bisect.insort(sorted_w, error_w)

    def share_above(self, error_w: float) -> float:
        """Fraction of the window's errors above `error_w`."""
        n = len(self.sorted_w)
        return (n - bisect.bisect_right(self.sorted_w, error_w)) / n if n else 0.0


_CANDIDATES = ("naive", "snarimax", "level_median", "trend")

_CANDIDATES = ("naive", "snarimax", "level_median", "trend")


class LoadForecaster:
    """One load's online forecaster. Feed it readings with `observe`, read `forecast()`.

    The band's miss rate is held at its target by adaptive conformal inference (Gibbs & Candès,
    2021): each horizon's quantile level moves by `band_adapt_rate` after every scored target,
    towards wider after a miss and narrower after a hit, so the band stays calibrated when the
    load's errors drift or come in runs (at 12 steps ahead, consecutive errors overlap).
    """

    def __init__(self, settings: ForecastSettings | None = None) -> None:
        self.settings = settings or ForecastSettings()
        s = self.settings
        horizon = s.horizon_steps
        self._resampler = _StepResampler(s.step_s, int(s.max_fill_s // s.step_s))
        self._autoregression = _DifferencedAutoregression()
        self._level_median = _LevelMedian(s)
        self._trend = _LinearTrend(s)
        self._last_step: int | None = None
        # Forecasts still waiting for their target, newest first.
        self._pending: dict[str, deque[list[float]]] = {
            name: deque(maxlen=horizon) for name in _CANDIDATES
        }
        self._pending_issued: deque[tuple[list[float], list[float], list[float]]] = deque(
            maxlen=horizon
        )
        self._score_w = {name: [0.0] * horizon for name in _CANDIDATES}
        self._scored = {name: [0] * horizon for name in _CANDIDATES}
        self._errors = [_ErrorWindow(s.error_window_steps) for _ in range(horizon)]
        self._miss_level = [1.0 - s.band_ratio] * horizon
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
                self._break_series()
            else:
                self._learn(value)
        if closed:
            assert self._resampler.open_step is not None
            self._last_step = self._resampler.open_step - 1
        return sum(1 for value in closed if value is not None)

    def _break_series(self) -> None:
        # A forecast across a long hole says nothing about the model: neither score nor learn it.
        self._autoregression.forget_lags()
        self._level_median.forget_recent()
        self._trend.forget()
        for pending in self._pending.values():
            pending.clear()
        self._pending_issued.clear()

    def _learn(self, value_w: float) -> None:
        s = self.settings
        weight = s.score_weight
        for name, pending in self._pending.items():
            score = self._score_w[name]
            scored = self._scored[name]
            for h, forecast_w in enumerate(pending):
                score[h] += (abs(value_w - forecast_w[h]) - score[h]) * weight
                scored[h] += 1
        target_miss = 1.0 - s.band_ratio
        for h, (mean_w, lower_w, upper_w) in enumerate(self._pending_issued):
            errors = self._errors[h]
            if len(errors.sorted_w) >= s.min_error_samples:
                missed = not lower_w[h] <= value_w <= upper_w[h]
                level = self._miss_level[h] + s.band_adapt_rate * (target_miss - missed)
                self._miss_level[h] = min(1.0, max(0.0, level))
            errors.add(value_w - mean_w[h])
        self._autoregression.learn(value_w)
        self._level_median.learn(value_w)
        self._trend.learn(value_w)
        self._issue(value_w)

    def _issue(self, value_w: float) -> None:
        horizon = self.settings.horizon_steps
        candidates = {
            "naive": [value_w] * horizon,
            "snarimax": self._autoregression.forecast(horizon),
            "level_median": self._level_median.forecast(value_w),
            "trend": self._trend.forecast(horizon),
        }
        mean_w = [candidates[name][h] for h, name in enumerate(self._best())]
        lower_w = []
        upper_w = []
        for mean, window, miss_level in zip(mean_w, self._errors, self._miss_level, strict=True):
            errors_w = window.sorted_w
            n = len(errors_w)
            if n:
                # Nearest-rank quantiles of the errors at (miss / 2) and (1 - miss / 2); with
                # miss within 0..1 both ranks fall inside the window but the lowest.
                low_rank = math.ceil(miss_level / 2.0 * n) - 1
                low_rank = low_rank if low_rank > 0 else 0
                high_rank = math.ceil((1.0 - miss_level / 2.0) * n) - 1
                lower_w.append(mean + errors_w[low_rank])
                upper_w.append(mean + errors_w[high_rank])
            else:
                lower_w.append(mean)
                upper_w.append(mean)
        for name, forecast_w in candidates.items():
            self._pending[name].appendleft(forecast_w)
        self._pending_issued.appendleft((mean_w, lower_w, upper_w))

    def _best(self) -> list[str]:
        """Per horizon, the candidate to issue: naive unless another has clearly done better."""
        least = self.settings.min_error_samples
        margin = 1.0 - self.settings.switch_margin_ratio
        naive_w = self._score_w["naive"]
        best = ["naive"] * self.settings.horizon_steps
        best_w = [score * margin for score in naive_w]
        for name in _CANDIDATES[1:]:
            scored = self._scored[name]
            for h, score in enumerate(self._score_w[name]):
                if scored[h] >= least and score < best_w[h]:
                    best[h] = name
                    best_w[h] = score
        return best

    def chosen_candidates(self) -> tuple[str, ...]:
        """Which candidate is issued at each horizon right now."""
        return tuple(self._best())

    def forecast(self) -> tuple[ForecastPoint, ...]:
        """Steps 1..H after the last closed step; empty until a step has closed."""
        if not self._pending_issued or self._last_step is None:
            return ()
        step_s = self.settings.step_s
        least = self.settings.min_error_samples
        first_s = (self._last_step + 1) * step_s
        mean_w, lower_w, upper_w = self._pending_issued[0]
        return tuple(
            ForecastPoint(first_s + h * step_s, mean, lower, upper, len(window.sorted_w) >= least)
            for h, (mean, lower, upper, window) in enumerate(
                zip(mean_w, lower_w, upper_w, self._errors, strict=True)
            )
        )

    def share_of_errors_above(self, horizon_step: int, error_w: float) -> float:
        """Share of recent errors at `horizon_step` (1-based) that exceeded `error_w`."""
        return self._errors[horizon_step - 1].share_above(error_w)

    def to_state(self) -> dict[str, Any]:
        """Everything learnt, as a dict JSON can hold; `from_state` restores it exactly."""
        resampler = self._resampler
        autoregression = self._autoregression
        level_bins = sorted(self._level_median.bins)
        level_entries = [self._level_median.bins[b] for b in level_bins]
        return {
            "version": STATE_VERSION,
            "settings": asdict(self.settings),
            "resampler": [
                resampler.open_step,
                resampler.open_sum_w,
                resampler.open_count,
                resampler.readings_late,
            ],
            "readings_rejected": self.readings_rejected,
            "last_step": self._last_step,
            "snarimax": {
                "weights": autoregression.weights,
                "covariance": autoregression.covariance,
                "last_w": autoregression.last_w,
                "diffs_w": autoregression.diffs_w,
            },
            "trend": [self._trend.level_w, self._trend.slope_w],
            "level_median": {
                "bins": level_bins,
                "median_w": _pack("d", (v for e in level_entries for v in e[0])),
                "spread_w": _pack("d", (v for e in level_entries for v in e[1])),
                "count": _pack("L", (v for e in level_entries for v in e[2])),
                "recent": [list(item) for item in self._level_median.recent],
            },
            "pending": {
                name: _pack("d", (v for f in pending for v in f))
                for name, pending in self._pending.items()
            },
            "pending_issued": _pack(
                "d", (v for item in self._pending_issued for f in item for v in f)
            ),
            "score_w": self._score_w,
            "scored": self._scored,
            "errors_w": [_pack("f", window.arrival_w) for window in self._errors],
            "miss_level": self._miss_level,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LoadForecaster:
        """The forecaster `to_state` described; raises ValueError on a state it did not write."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown forecaster state version {state.get('version')!r}")
        try:
            restored = cls(ForecastSettings(**state["settings"]))
            horizon = restored.settings.horizon_steps
            resampler = restored._resampler
            (
                resampler.open_step,
                resampler.open_sum_w,
                resampler.open_count,
                resampler.readings_late,
            ) = state["resampler"]
            restored.readings_rejected = int(state["readings_rejected"])
            restored._last_step = state["last_step"]
            autoregression = restored._autoregression
            autoregression.weights = [float(w) for w in state["snarimax"]["weights"]]
            autoregression.covariance = [
                [float(v) for v in row] for row in state["snarimax"]["covariance"]
            ]
            autoregression.last_w = state["snarimax"]["last_w"]
            autoregression.diffs_w = [float(d) for d in state["snarimax"]["diffs_w"]]
            restored._trend.level_w, restored._trend.slope_w = state["trend"]
            level = state["level_median"]
            medians = _chunks(_unpack("d", level["median_w"]), horizon)
            spreads = _chunks(_unpack("d", level["spread_w"]), horizon)
            counts = _chunks(_unpack("L", level["count"]), horizon)
            restored._level_median.bins = {
                int(b): (m, s, c)
                for b, m, s, c in zip(level["bins"], medians, spreads, counts, strict=True)
            }
            restored._level_median.recent.extend((float(v), int(b)) for v, b in level["recent"])
            for name, packed in state["pending"].items():
                restored._pending[name].extend(_chunks(_unpack("d", packed), horizon))
            issued = _chunks(_unpack("d", state["pending_issued"]), horizon)
            restored._pending_issued.extend(
                (issued[i], issued[i + 1], issued[i + 2]) for i in range(0, len(issued), 3)
            )
            restored._score_w = {n: [float(v) for v in s] for n, s in state["score_w"].items()}
            restored._scored = {n: [int(v) for v in s] for n, s in state["scored"].items()}
            for window, packed in zip(restored._errors, state["errors_w"], strict=True):
                for error_w in _unpack("f", packed):
                    window.add(error_w)
            restored._miss_level = [float(v) for v in state["miss_level"]]
        except (KeyError, TypeError, IndexError, ValueError) as err:
            raise ValueError(f"malformed forecaster state: {err!r}") from err
        return restored


def _pack(typecode: str, values: Iterable[float]) -> str:
    # Machine numbers in base64: exact, and a third of the size of decimal JSON.
    return base64.b64encode(array(typecode, values).tobytes()).decode("ascii")


def _unpack(typecode: str, packed: str) -> list[Any]:
    values = array(typecode)
    values.frombytes(base64.b64decode(packed))
    return values.tolist()


def _chunks[T](values: list[T], size: int) -> list[list[T]]:
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
