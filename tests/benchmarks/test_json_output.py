"""Each benchmark that solves, run as a program: its standard output is nothing but the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


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
    folder: Path, benchmark: str, arguments: list[str]
) -> None:
    """Run as programs, as users run them: every byte of standard output is the JSON."""
    argv = [a.format(scenarios=folder) for a in arguments]
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{benchmark}", *argv, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout)
