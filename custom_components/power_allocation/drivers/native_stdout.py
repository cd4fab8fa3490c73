"""Standard output kept for the program's own words: what native code prints there goes to stderr.

scipy's HiGHS, the allocator's MILP solver, prints debugging lines such as
`HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();` from C++ straight to
file descriptor 1 during some solves, past Python's `sys.stdout` and past `disp=False`. They would
break a benchmark's `--json` and land on Home Assistant's console; on stderr they are still seen.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_STDOUT_FD = 1
_STDERR_FD = 2
# File descriptor 1 is the process's: two solves in two threads must not swap it back and forth.
_redirect_lock = threading.Lock()


@contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """While inside, whatever anything writes to file descriptor 1 goes to stderr instead."""
    with _redirect_lock:
        sys.stdout.flush()
        saved = os.dup(_STDOUT_FD)
        try:
            os.dup2(_STDERR_FD, _STDOUT_FD)
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, _STDOUT_FD)
            os.close(saved)


def run_with_native_stdout_on_stderr[T](job: Callable[..., T], *args: object) -> T:
    """`job(*args)` with native writes to standard output sent to stderr (for executor jobs)."""
    with native_stdout_to_stderr():
        return job(*args)


def keep_stdout_for_python() -> None:
    """For a program's whole run: Python's `print` keeps standard output, native code gets stderr.

    Called first by each benchmark run as a program, so its `--json` stays valid JSON.
    """
    sys.stdout.flush()
    python_stdout = os.dup(_STDOUT_FD)
    os.dup2(_STDERR_FD, _STDOUT_FD)
    sys.stdout = os.fdopen(python_stdout, "w", buffering=1, encoding="utf-8")
