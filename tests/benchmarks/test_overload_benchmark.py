"""The overload benchmark: runs what ships end to end on a short scenario, and judges its stops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.overload import main, needed_within

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
  history_s: 6000
  outage_at_s: 86400
  outage_duration_s: 0
  events:
    - {at_s: 2400, kind: load_step, service: batch, extra_w: 150, duration_s: 1200}
    - {at_s: 2580, kind: load_step, service: batch, extra_w: 150, duration_s: 1020}
    - {at_s: 2760, kind: load_step, service: batch, extra_w: 150, duration_s: 840}
"""


def test_overload_benchmark_runs_what_ships_on_a_tiny_scenario(tmp_path: Path, capsys) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY_SCENARIO, encoding="utf-8")
    results = main(["--scenario", str(scenario), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in printed] == ["tiny"]
    (result,) = results
    assert result.stepping
    assert set(result.runs) == {"none", "predictive"}
    # Without anyone acting, the third step puts the PDU over its limit.
    none, predictive = result.runs["none"], result.runs["predictive"]
    assert none.overload_s > 0
    assert not none.mains_stops
    # An hour old, the forecasters are young: the guard acts late, but it acts.
    assert predictive.overload_s < none.overload_s
    assert predictive.trips == 0
    # batch is stopped for the step: needed, it would have gone over.
    assert predictive.mains_stops
    assert predictive.false_mains_stops == 0
    assert printed[0]["false_mains_stops"] == {"none": 0, "predictive": 0}
    assert predictive.flaps == 0
    # Once its step is over and the PDU has room, batch is back within 15 minutes.
    assert predictive.late_give_back_s <= 900.0


def test_a_stop_is_false_when_its_service_kept_on_would_have_overloaded_nothing() -> None:
    times_s = np.arange(0.0, 3600.0, 10.0)
    node_w = {"pdu": np.full(len(times_s), 800.0)}
    missing_w = np.full(len(times_s), 150.0)
    missing_w[times_s >= 2000.0] = 250.0  # it would have stepped up 2,000 s in
    shares = {"pdu": 1.0, "ups": 1.0}  # the UPS has no limit here
    limits_w = {"pdu": 1000.0}
    # Stopped at 0: kept on, 950 W for the next 30 minutes; over only after.
    assert not needed_within(0.0, times_s, node_w, limits_w, shares, missing_w)
    # Stopped at 600: the step comes within 30 minutes.
    assert needed_within(600.0, times_s, node_w, limits_w, shares, missing_w)
    # Half of a dual-fed service's draw on this PDU: 925 W after the step, never over.
    assert not needed_within(600.0, times_s, node_w, limits_w, {"pdu": 0.5}, missing_w)
