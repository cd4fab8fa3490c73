"""Smoke test: the forecast benchmark on a small CSV with gaps, blanks and junk."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.forecast import main


def _messy_csv(path: Path) -> None:
    rng = random.Random(8)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    lines = ["when,watts,comment"]
    for i in range(1500):
        if 700 <= i < 760:
            continue  # an hour without readings
        stamp = (start + timedelta(minutes=i)).isoformat()
        value = f"{300 + 100 * math.sin(i / 60) + rng.gauss(0, 10):.1f}"
        if i % 97 == 0:
            value = ""
        elif i % 131 == 0:
            value = "n/a"
        lines.append(f"{stamp},{value},x")
    lines.insert(400, "not a time,12,x")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_forecast_benchmark_handles_a_messy_csv(tmp_path: Path, capsys) -> None:
    csv_path = tmp_path / "messy.csv"
    _messy_csv(csv_path)
    result = main(["--csv", str(csv_path), "--value-column", "watts", "--horizons", "1,6"])
    table = capsys.readouterr().out
    assert "| 6 (360 s) |" in table
    assert result.step_s == 60.0
    assert result.rows_without_time == 1
    assert result.readings_rejected >= 20
    assert result.state_bytes <= 64 * 1024
    for score in result.horizons:
        assert score.targets > 1000
        assert 0.0 <= score.band_coverage_ratio <= 1.0
        assert math.isfinite(score.mae_forecaster_w)
        assert score.mae_seasonal_naive_w is None  # about a day: no seasonal baseline


def test_forecast_benchmark_prints_json(tmp_path: Path, capsys) -> None:
    csv_path = tmp_path / "messy.csv"
    _messy_csv(csv_path)
    main(["--csv", str(csv_path), "--value-column", "watts", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert [h["horizon_steps"] for h in printed["horizons"]] == [1, 12]
