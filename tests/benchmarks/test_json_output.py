"""Standard output stays clean: HiGHS prints nothing to it, and every `--json` parses.

`capfd` captures file descriptor 1 itself, so it sees what C code (HiGHS's printf) writes there,
which `capsys` (Python's sys.stdout only) would miss.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from benchmarks import (
    allocator,
    forecast,
    modbus_poll,
    overload,
    planner,
    policies,
    sweep,
    telemetry,
)
from custom_components.power_allocation.engine.allocator import (
    _solver_stdout_discarded,
    allocate,
)
from tests.benchmarks.test_forecast_benchmark import _messy_csv
from tests.benchmarks.test_overload_benchmark import TINY_SCENARIO
from tests.engine.outage_scenarios import RACK
from tests.fixtures.mqtt_broker import Mosquitto


def test_what_c_code_prints_during_a_solve_never_reaches_stdout(
    capfd: pytest.CaptureFixture[str],
) -> None:
    libc = ctypes.CDLL(None)
    print("before", flush=True)
    with _solver_stdout_discarded(), _solver_stdout_discarded():  # nested, as two threads would
        libc.printf(b"HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();\n")
        os.write(1, b"raw write\n")
    print("after", flush=True)
    assert capfd.readouterr().out == "before\nafter\n"


def test_allocations_print_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    methods = set()
    for n, seed in ((40, 1), (120, 2), (240, 3)):
        site, demand = allocator.random_site(n, seed)
        methods.add(allocate(site, demand).method)
    assert "milp" in methods
    captured = capfd.readouterr()
    assert captured.out == ""


@pytest.fixture
def policy_folder(tmp_path: Path) -> Path:
    config = copy.deepcopy(RACK)
    config["timeline"]["outage_duration_s"] = 900
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


def _parses(capfd: pytest.CaptureFixture[str], run: Callable[[], Any]) -> Any:
    run()
    return json.loads(capfd.readouterr().out)


def test_allocator_json(capfd: pytest.CaptureFixture[str]) -> None:
    # 300 services: greedy; 40: MILP.
    rows = _parses(capfd, lambda: allocator.main(["--sizes", "40,300", "--repeats", "1", "--json"]))
    assert [r["services"] for r in rows] == [40, 300]


def test_planner_json(capfd: pytest.CaptureFixture[str]) -> None:
    rows = _parses(capfd, lambda: planner.main(["--sizes", "40", "--repeats", "1", "--json"]))
    assert [r["services"] for r in rows] == [40]


def test_policies_json(policy_folder: Path, capfd: pytest.CaptureFixture[str]) -> None:
    argv = ["--scenarios", str(policy_folder), "--policies", "predictive", "--json"]
    reports = _parses(capfd, lambda: policies.main(argv))
    assert set(reports) == {"tiny-rack"}
    assert set(reports["tiny-rack"]) == {"predictive"}


def test_overload_json(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY_SCENARIO, encoding="utf-8")
    results = _parses(capfd, lambda: overload.main(["--scenario", str(scenario), "--json"]))
    assert len(results) == 1


def test_forecast_json(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    csv_path = tmp_path / "messy.csv"
    _messy_csv(csv_path)
    argv = ["--csv", str(csv_path), "--value-column", "watts", "--json"]
    assert "horizons" in _parses(capfd, lambda: forecast.main(argv))


def test_modbus_poll_json(socket_enabled: None, capfd: pytest.CaptureFixture[str]) -> None:
    argv = ["--cycles", "1", "--pdus", "1", "--outlets", "2", "--ups", "1", "--json"]
    assert _parses(capfd, lambda: modbus_poll.main(argv))["cycles"] == 1


def test_sweep_gen_json(capfd: pytest.CaptureFixture[str]) -> None:
    # `sweep` has no --json; its `gen` prints a scenario as JSON.
    assert _parses(capfd, lambda: sweep.main(["gen", "3"])) == sweep.gen(3)


def test_telemetry_json(mqtt_broker: Mosquitto, capfd: pytest.CaptureFixture[str]) -> None:
    argv = [
        *("--messages", "50", "--plugs", "2", "--rounds", "1"),
        *("--mqtt-port", str(mqtt_broker.port)),
        *("--modbus-cycles", "0", "--json"),
    ]
    assert "mqtt_ingest" in _parses(capfd, lambda: telemetry.main(argv))
