"""Scenario files: the demo loads, and every mistake is named with its path."""

from __future__ import annotations

import copy
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from custom_components.power_allocation.drivers.scenario_file import (
    ScenarioFileError,
    load_scenario,
    read_trace,
    scenario_from_mapping,
)
from tests.fixtures.modbus_site import SMALL_SITE

DEMO = Path(__file__).parents[2] / "simulator" / "scenarios" / "demo.yaml"

DESIGN_EXAMPLE = """
name: rack-a-evening-outage
seed: 7
step_s: 1
ups:
  - id: ups1
    capacity_wh: 864
    rated_w: 1000
    runtime_full_load_s: 360
    peukert_k: 1.4
    efficiency: 0.9
    soc_start_pct: 100
pdus:
  - {id: pdu-a, ups: ups1, limit_w: 1800, outlets: 8}
services:
  - id: network
    priority: critical
    outlets: [pdu-a/1]
    load: {constant_w: 35}
  - id: db
    priority: critical
    outlets: [pdu-a/2, pdu-b/2]
    depends_on: [network]
    shutdown_s: 90
    startup_s: 120
    idle_w: 8
    throttle: {min_w: 150}
    load: {trace: power.csv, column: active_power_w, mean_w: 250, offset_s: 0}
  - id: batch
    priority: low
    outlets: [pdu-a/3]
    load: {base_w: 120, peak_w: 300, period_s: 86400, noise_ratio: 0.05}
timeline:
  history_s: 86400
  outage_at_s: 86400
  outage_duration_s: 2700
  events:
    - {at_s: 88000, kind: load_step, service: batch, extra_w: 400, duration_s: 300}
"""


def test_the_demo_scenario_loads_with_its_real_trace() -> None:
    scenario = load_scenario(DEMO)
    assert len(scenario.site.services) == 12
    assert [p.id for p in scenario.site.pdus] == ["pdu-a", "pdu-b"]
    storage = [scenario.demand_w("storage", t) for t in range(0, 14 * 86400, 60)]
    assert statistics.fmean(storage) == pytest.approx(120.0, rel=1e-6)
    assert scenario.timeline.outage_duration_s == 2700


def test_the_design_example_is_checked_down_to_its_topology(tmp_path: Path) -> None:
    """The DESIGN.md example names pdu-b without defining it: the error says so."""
    (tmp_path / "power.csv").write_text("timestamp,active_power_w\n0,100\n60,300\n")
    path = tmp_path / "example.yaml"
    path.write_text(DESIGN_EXAMPLE)
    with pytest.raises(ScenarioFileError, match=r"unknown outlet 'pdu-b/2'"):
        load_scenario(path)
    path.write_text(DESIGN_EXAMPLE.replace("[pdu-a/2, pdu-b/2]", "[pdu-a/2, pdu-a/4]"))
    scenario = load_scenario(path)
    assert scenario.demand_w("db", 0) == 125.0
    assert scenario.demand_w("batch", 88000) > 400


def mapping(**changes: Any) -> dict[str, Any]:
    config = copy.deepcopy(SMALL_SITE)
    config.update(changes)
    return config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(colour="red"), "colour: unknown key"),
        (lambda c: c["ups"][0].update(volts=230), r"ups\[0\]\.volts: unknown key"),
        (lambda c: c["ups"][0].pop("rated_w"), r"ups\[0\]\.rated_w: required key not provided"),
        (lambda c: c["ups"][0].update(soc_start_pct=150), r"ups\[0\]\.soc_start_pct"),
        (lambda c: c["pdus"][1].update(limit_w=-5), r"pdus\[1\]\.limit_w"),
        (lambda c: c["services"][1].update(priority="urgent"), r"services\[1\]\.priority"),
        (
            lambda c: c["services"][0]["load"].update(noise_ratio=0.1),
            r"services\[0\]\.load\.noise_ratio: unknown key",
        ),
        (lambda c: c["services"][0].update(load={"watts": 5}), r"services\[0\]\.load: expected"),
        (lambda c: c["services"][0].update(load={"constant_w": "nan"}), "finite"),
        (
            lambda c: c["timeline"].update(events=[{"at_s": 1, "kind": "meteor"}]),
            r"timeline\.events\[0\]",
        ),
        (lambda c: c["services"][2].update(outlets=["pdu-q/1"]), "unknown outlet 'pdu-q/1'"),
        (lambda c: c["services"][0].update(depends_on=["db"]), "dependency cycle"),
    ],
)
def test_mistakes_are_named_with_their_path(change: Any, message: str) -> None:
    config = mapping()
    change(config)
    with pytest.raises(ScenarioFileError, match=message):
        scenario_from_mapping(config, Path("."), "rack.yaml")


def test_a_scenario_must_be_a_mapping() -> None:
    with pytest.raises(ScenarioFileError, match="rack.yaml"):
        scenario_from_mapping(["not", "a", "mapping"], Path("."), "rack.yaml")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioFileError, match="cannot be read"):
        load_scenario(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioFileError, match="not valid YAML"):
        load_scenario(broken)


def test_traces_tolerate_blank_cells(tmp_path: Path) -> None:
    csv_path = tmp_path / "trace.csv"
    csv_path.write_text(
        "timestamp,active_power_w,other\n"
        "2007-01-29T00:00:00,100,1\n"
        "2007-01-29T00:01:00,,2\n"
        "2007-01-29T00:02:00,300,\n"
        ",,\n"
        "2007-01-29T00:03:00,200,4\n"
    )
    trace = read_trace(csv_path, "active_power_w")
    assert trace.offsets_s == (0.0, 120.0, 180.0)
    assert trace.values == (100.0, 300.0, 200.0)
    assert trace.value_at(60) == 100.0


def test_trace_mistakes_name_the_file_and_line(tmp_path: Path) -> None:
    csv_path = tmp_path / "trace.csv"
    csv_path.write_text("timestamp,w\n0,1\n60,lots\n")
    with pytest.raises(ScenarioFileError, match=r"trace.csv line 3"):
        read_trace(csv_path, "w")
    with pytest.raises(ScenarioFileError, match="no column 'watts'"):
        read_trace(csv_path, "watts")
    with pytest.raises(ScenarioFileError, match="cannot be read"):
        read_trace(tmp_path / "absent.csv", "w")


def test_trace_paths_are_relative_to_the_scenario(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t.csv").write_text("timestamp,w\n0,10\n60,30\n")
    config = mapping()
    config["services"][0]["load"] = {"trace": "data/t.csv", "column": "w", "mean_w": 40}
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(config))
    scenario = load_scenario(path)
    assert scenario.demand_w("network", 0) == 20.0
    assert scenario.demand_w("network", 60) == 60.0
