"""Forecast benchmark: learn a CSV series one reading at a time and score the forecasts.

    python -m benchmarks.forecast --csv FILE --value-column COL [--time-column COL]
        [--step-s S] [--horizons 1,12] [--json]

Per horizon: MAE of the project's forecaster, of the naive last value and of the seasonal naive
(same step a day earlier), the forecaster's MAE as a ratio of the naive one, and the coverage of
its 90 % band; then the updates per second (an update is a closed step: learnt from, and its
forecasts to the largest horizon issued; timed around the learning loop's CPU time), the same for
river's SNARIMAX(3,1,0) + `BayesianLinearRegression` alone on the first steps (the forecaster's
own core, measured in the same run: the ratio is the price of everything around it, and says what
the machine's load does not), and the stored state size per load.

Ground truth is the mean of every valid reading in a step, computed offline. A target is scored
when it has a truth, a forecast and a naive value and, if the series spans more than two days, a
seasonal-naive value, so the three MAEs in a row are over the same targets. Timestamps may be ISO
8601 (naive ones are read as UTC) or epoch seconds; rows with an unreadable time are skipped and
counted, unreadable values reach the forecaster as NaN (it rejects them).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import river
from river import linear_model, time_series

from custom_components.power_allocation.drivers.native_stdout import keep_stdout_for_python
from custom_components.power_allocation.engine.forecast import (
    ForecastPoint,
    ForecastSettings,
    LoadForecaster,
)

DAY_S = 86400.0
BASELINE_STEPS = 2000


@dataclass(frozen=True, slots=True)
class HorizonScore:
    """Scores at one horizon, over the same targets for all three forecasts."""

    horizon_steps: int
    horizon_s: float
    targets: int
    mae_forecaster_w: float
    mae_naive_w: float
    mae_seasonal_naive_w: float | None
    ratio_to_naive: float
    band_coverage_ratio: float


@dataclass(frozen=True, slots=True)
class ForecastBenchmark:
    """The whole run."""

    csv: str
    value_column: str
    step_s: float
    rows: int
    rows_without_time: int
    readings_rejected: int
    readings_late: int
    steps_learnt: int
    updates_per_s: float
    # river's SNARIMAX + BayesianLinearRegression alone (the forecaster's core), on the first
    # BASELINE_STEPS values
    baseline_updates_per_s: float
    state_bytes: int
    river_version: str
    chosen_candidates: tuple[str, ...]
    combination_weights: tuple[tuple[float, float, float], ...]
    horizons: tuple[HorizonScore, ...]


def _parse_time_s(text: str) -> float | None:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _parse_value(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def read_series(
    path: Path, value_column: str, time_column: str | None
) -> tuple[list[tuple[float, float]], int]:
    """(time_s, value) per row with a readable time, and how many rows had none."""
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        columns = reader.fieldnames or []
        if value_column not in columns:
            raise SystemExit(f"no column {value_column!r} in {path} (columns: {columns})")
        if time_column is None:
            time_column = next(
                (c for c in columns if "time" in c.lower() or "date" in c.lower()), columns[0]
            )
        elif time_column not in columns:
            raise SystemExit(f"no column {time_column!r} in {path} (columns: {columns})")
        series = []
        without_time = 0
        for row in reader:
            at_s = _parse_time_s(row.get(time_column) or "")
            if at_s is None:
                without_time += 1
                continue
            series.append((at_s, _parse_value(row.get(value_column))))
    return series, without_time


def _typical_step_s(series: Sequence[tuple[float, float]]) -> float:
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(series) if b[0] > a[0]]
    if not gaps:
        raise SystemExit("need at least two distinct timestamps to infer --step-s")
    return statistics.median(gaps)


def river_snarimax_updates_per_s(values: Sequence[float], horizon_steps: int) -> float:
    """Learn + forecast per second of river's SNARIMAX(3,1,0) with Bayesian linear regression,
    called as the forecaster calls it: a bias and the lags at 0 until SNARIMAX has its own, in
    fresh dicts each call (river 0.23 writes its lags into the ones it is given)."""
    model = time_series.SNARIMAX(p=3, d=1, q=0, regressor=linear_model.BayesianLinearRegression())
    features = {"bias": 1.0, "y-1": 0.0, "y-2": 0.0, "y-3": 0.0}
    started_s = time.process_time()
    for value in values:
        model.learn_one(value, x=dict(features))  # type: ignore[no-untyped-call]
        model.forecast(  # type: ignore[no-untyped-call]
            horizon=horizon_steps, xs=[dict(features) for _ in range(horizon_steps)]
        )
    elapsed_s = time.process_time() - started_s
    return len(values) / elapsed_s if elapsed_s else math.nan


def run(
    series: Sequence[tuple[float, float]],
    *,
    step_s: float,
    horizons: Sequence[int],
    csv_name: str = "",
    value_column: str = "",
    rows_without_time: int = 0,
) -> ForecastBenchmark:
    """Learns `series` in order and scores forecasts at `horizons` (in steps)."""
    settings = ForecastSettings(step_s=step_s, horizon_steps=max(horizons))
    forecaster = LoadForecaster(settings)
    truth_sum: dict[int, float] = {}
    truth_count: dict[int, int] = {}
    for at_s, value in series:
        if math.isfinite(at_s) and math.isfinite(value):
            step = math.floor(at_s / step_s)
            truth_sum[step] = truth_sum.get(step, 0.0) + value
            truth_count[step] = truth_count.get(step, 0) + 1
    truth = {step: truth_sum[step] / truth_count[step] for step in truth_sum}

    # CPU time of this process, so other work on the machine does not count against it.
    started_s = time.process_time()
    outcomes = [
        (closed, forecaster.forecast() if closed else ())
        for closed in (forecaster.observe(at_s, value) for at_s, value in series)
    ]
    elapsed_s = time.process_time() - started_s
    steps_learnt = sum(closed for closed, _ in outcomes)
    baseline_updates_per_s = river_snarimax_updates_per_s(
        [truth[step] for step in sorted(truth)[:BASELINE_STEPS]], settings.horizon_steps
    )

    # (issued at step, forecast) per target step and horizon
    issued: dict[int, dict[int, tuple[int, ForecastPoint]]] = {h: {} for h in horizons}
    for _, points in outcomes:
        if not points:
            continue
        origin = round(points[0].at_s / step_s) - 1
        for h in horizons:
            issued[h][origin + h] = (origin, points[h - 1])

    season_steps = round(DAY_S / step_s)
    steps = sorted(truth)
    need_seasonal = bool(steps) and steps[-1] - steps[0] > 2 * season_steps
    last_seen: dict[int, float] = {}
    latest: float | None = None
    for step in range(steps[0], steps[-1] + 1) if steps else ():
        latest = truth.get(step, latest)
        if latest is not None:
            last_seen[step] = latest

    scores = []
    for h in horizons:
        errors: list[tuple[float, float, float | None, bool]] = []
        for target, (origin, point) in issued[h].items():
            actual = truth.get(target)
            naive = last_seen.get(origin)
            seasonal = truth.get(target - season_steps)
            if actual is None or naive is None or (need_seasonal and seasonal is None):
                continue
            errors.append(
                (
                    abs(actual - point.mean_w),
                    abs(actual - naive),
                    None if seasonal is None else abs(actual - seasonal),
                    point.lower_w <= actual <= point.upper_w,
                )
            )
        count = len(errors)
        mae = sum(e[0] for e in errors) / count if count else math.nan
        mae_naive = sum(e[1] for e in errors) / count if count else math.nan
        scores.append(
            HorizonScore(
                horizon_steps=h,
                horizon_s=h * step_s,
                targets=count,
                mae_forecaster_w=mae,
                mae_naive_w=mae_naive,
                mae_seasonal_naive_w=(
                    sum(e[2] for e in errors if e[2] is not None) / count
                    if need_seasonal and count
                    else None
                ),
                ratio_to_naive=mae / mae_naive if mae_naive else math.nan,
                band_coverage_ratio=sum(e[3] for e in errors) / count if count else math.nan,
            )
        )
    return ForecastBenchmark(
        csv=csv_name,
        value_column=value_column,
        step_s=step_s,
        rows=len(series) + rows_without_time,
        rows_without_time=rows_without_time,
        readings_rejected=forecaster.readings_rejected,
        readings_late=forecaster.readings_late,
        steps_learnt=steps_learnt,
        updates_per_s=steps_learnt / elapsed_s if elapsed_s else math.nan,
        baseline_updates_per_s=baseline_updates_per_s,
        state_bytes=len(json.dumps(forecaster.to_state())),
        river_version=river.__version__,  # type: ignore[attr-defined]
        chosen_candidates=forecaster.chosen_candidates(),
        combination_weights=forecaster.combination_weights(),
        horizons=tuple(scores),
    )


def format_table(result: ForecastBenchmark) -> str:
    """The human-readable report."""
    lines = [
        f"series {result.csv} [{result.value_column}], step {result.step_s:g} s, "
        f"{result.rows} rows ({result.rows_without_time} without a time, "
        f"{result.readings_rejected} values rejected, {result.readings_late} late)",
        "",
        "| horizon | targets | MAE forecaster W | MAE naive W | MAE seasonal naive W "
        "| forecaster / naive | 90 % band coverage |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in result.horizons:
        seasonal = "n/a" if s.mae_seasonal_naive_w is None else f"{s.mae_seasonal_naive_w:.1f}"
        lines.append(
            f"| {s.horizon_steps} ({s.horizon_s:g} s) | {s.targets} | {s.mae_forecaster_w:.1f} "
            f"| {s.mae_naive_w:.1f} | {seasonal} | {s.ratio_to_naive:.3f} "
            f"| {s.band_coverage_ratio:.3f} |"
        )
    horizon = max(s.horizon_steps for s in result.horizons)
    weights = result.combination_weights
    lines += [
        "",
        f"updates/s (learn + {horizon}-step forecast, one core): {result.updates_per_s:,.0f} "
        f"over {result.steps_learnt} steps",
        f"baseline, river {result.river_version} SNARIMAX(3,1,0) + BayesianLinearRegression alone "
        "(the forecaster's core), same run: "
        f"{result.baseline_updates_per_s:,.0f} updates/s over {BASELINE_STEPS} steps "
        f"(forecaster / baseline {result.updates_per_s / result.baseline_updates_per_s:.2f})",
        f"state per load: {result.state_bytes:,} bytes of JSON",
        f"candidate issued per horizon at the end: {', '.join(result.chosen_candidates)}",
        "combination weights at the end (SNARIMAX, level median, recent median): "
        + ", ".join(
            f"h{h} {w[0]:.2f}/{w[1]:.2f}/{w[2]:.2f}"
            for h, w in enumerate(weights, start=1)
            if h in (1, len(weights))
        ),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> ForecastBenchmark:
    """Command-line entry point; returns the result it printed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.forecast", description=__doc__)
    parser.add_argument("--csv", required=True, type=Path)
    parser.add_argument("--value-column", required=True)
    parser.add_argument("--time-column")
    parser.add_argument("--step-s", type=float, help="default: the median reading interval")
    parser.add_argument("--horizons", default="1,12", help="steps ahead, comma-separated")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    horizons = sorted({int(h) for h in args.horizons.split(",") if h.strip()})
    if not horizons or horizons[0] < 1:
        parser.error("--horizons must be positive step counts")
    series, without_time = read_series(args.csv, args.value_column, args.time_column)
    if not series:
        parser.error(f"no row of {args.csv} has a readable time")
    result = run(
        series,
        step_s=args.step_s or _typical_step_s(series),
        horizons=horizons,
        csv_name=str(args.csv),
        value_column=args.value_column,
        rows_without_time=without_time,
    )
    print(json.dumps(asdict(result), indent=2) if args.json else format_table(result))
    return result


if __name__ == "__main__":
    keep_stdout_for_python()
    main(sys.argv[1:])
