"""The planner benchmark runs end to end on a small size (figures are not checked: timings)."""

from __future__ import annotations

import json

import pytest

from benchmarks.planner import main, planning_site


def test_benchmark_prints_a_row_per_size(capsys: pytest.CaptureFixture[str]) -> None:
    rows = main(["--sizes", "40,200", "--repeats", "1", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == rows
    assert [row["services"] for row in rows] == [40, 200]


def test_benchmark_sites_need_a_staged_shutdown() -> None:
    """The battery carries everything for minutes, not hours: the plan has work to do."""
    rows = main(["--sizes", "200", "--repeats", "1", "--json"])
    site, _ = planning_site(200)
    assert rows[0]["steps"] >= len(site.services) // 2
    assert 0 < float(rows[0]["final_shutdown_min"]) < 4 * 60
