"""Native code's writes to standard output go to stderr, Python's stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from custom_components.power_allocation.drivers.native_stdout import (
    native_stdout_to_stderr,
    run_with_native_stdout_on_stderr,
)

ROOT = Path(__file__).parents[2]


def _native_write(text: str) -> str:
    os.write(1, text.encode())  # what HiGHS's C++ does: straight to file descriptor 1
    return text


def test_native_writes_inside_go_to_stderr_and_stdout_comes_back(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with native_stdout_to_stderr():
        _native_write("tmpSolver.run();\n")
    assert run_with_native_stdout_on_stderr(_native_write, "again\n") == "again\n"
    _native_write("after\n")
    captured = capfd.readouterr()
    assert captured.out == "after\n"
    assert captured.err == "tmpSolver.run();\nagain\n"


def test_a_program_keeps_stdout_for_python_only() -> None:
    program = (
        "import os\n"
        "from custom_components.power_allocation.drivers.native_stdout import"
        " keep_stdout_for_python\n"
        "keep_stdout_for_python()\n"
        "os.write(1, b'native\\n')\n"
        "print('{\"python\": true}')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == {"python": True}
    assert done.stderr == "native\n"
