"""Smoke test: the overload benchmark runs end to end on a one-hour scenario."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.overload import main

TINY_SCENARIO = """
name: tiny-staircase
seed: 3
step_s: 10
ups:
  - {id: ups1, capacity_wh: 500, rated_w: 2000, runtime_full_load_s: 300}
pdus:
  - {id: pdu-a, ups: ups1, limit_w: 700, outlets: 3}
services:
  - {id: db, priority: critical, outlets: [pdu-a/1], shutdown_s: 30,
     load: {base_w: 200, peak_w: 240, period_s: 3600, noise_ratio: 0.05}}
  - {id: batch, priority: low, outlets: [pdu-a/2], shutdown_s: 20,
     load: {base_w: 150, peak_w: 180, period_s: 3600, noise_ratio: 0.05}}
timeline:
  history_s: 3600
  outage_at_s: 86400
  outage_duration_s: 0
  events:
    - {at_s: 2400, kind: load_step, service: batch, extra_w: 150, duration_s: 1200}
    - {at_s: 2580, kind: load_step, service: batch, extra_w: 150, duration_s: 1020}
    - {at_s: 2760, kind: load_step, service: batch, extra_w: 150, duration_s: 840}
"""


def test_overload_benchmark_runs_on_a_tiny_scenario(tmp_path: Path, capsys) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY_SCENARIO, encoding="utf-8")
    results = main(["--scenario", str(scenario), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in printed] == ["tiny"]
    (result,) = results
    assert result.stepping
    assert set(result.runs) == {"none", "allocator", "guard"}
    # Without anyone acting, the third step puts the PDU over its limit.
    assert result.runs["none"].overload_s > 0
    assert result.runs["guard"].overload_s <= result.runs["none"].overload_s
