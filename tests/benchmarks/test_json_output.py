"""Each benchmark that solves, run as a program: its standard output is nothing but the JSON."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from tests.engine.outage_scenarios import RACK

ROOT = Path(__file__).parents[2]


@pytest.fixture
def scenarios(tmp_path: Path) -> Path:
    config = copy.deepcopy(RACK)
    config["timeline"]["outage_duration_s"] = 900
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("benchmark", "arguments"),
    [
        ("allocator", ["--sizes", "40", "--repeats", "1"]),
        ("planner", ["--sizes", "40", "--repeats", "1"]),
        ("policies", ["--policies", "predictive,oracle", "--scenarios", "{scenarios}"]),
        ("overload", ["--scenario", "{scenarios}/tiny.yaml"]),
    ],
)
def test_the_solving_benchmarks_print_json_only(
    scenarios: Path, benchmark: str, arguments: list[str]
) -> None:
    """Run as programs, as users run them: every byte of standard output is the JSON."""
    argv = [a.format(scenarios=scenarios) for a in arguments]
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{benchmark}", *argv, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout)
