"""Imports point downward only (DESIGN.md "Layers"), checked on the source, file by file."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "custom_components" / "power_allocation"

# Besides the standard library (minus what does I/O or reads a clock).
ENGINE_THIRD_PARTY = {"numpy", "river", "scipy"}
ENGINE_FORBIDDEN_STDLIB = {
    "asyncio", "socket", "subprocess", "threading", "time", "os", "shutil", "pathlib", "urllib",
    "http", "ssl", "select", "selectors", "sqlite3", "multiprocessing",
}  # fmt: skip
# orjson, like numpy, comes with Home Assistant itself rather than from manifest.json.
DRIVERS_THIRD_PARTY = {
    "numpy",
    "orjson",
    "pymodbus",
    "paho",
    "voluptuous",
    "yaml",
    "scipy",
    "river",
    # Home Assistant's own dependency: certificates are checked before a TLS handshake.
    "cryptography",
}


def modules_imported(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, level) for every import; level > 0 for relative ones."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def resolve(path: Path, module: str, level: int) -> str:
    """The dotted name a relative import points at."""
    if level == 0:
        return module
    parts = list(path.relative_to(ROOT).with_suffix("").parts)[:-level]
    return ".".join([*parts, module] if module else parts)


def files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


@pytest.mark.parametrize("path", files(PACKAGE / "engine"), ids=str)
def test_engine_is_pure(path: Path) -> None:
    for module, level in modules_imported(path):
        name = resolve(path, module, level)
        top = name.split(".")[0]
        if name.startswith("custom_components.power_allocation."):
            assert name.startswith("custom_components.power_allocation.engine"), name
            continue
        assert top in ENGINE_THIRD_PARTY or (
            top in sys.stdlib_module_names and top not in ENGINE_FORBIDDEN_STDLIB
        ), f"{path.name} imports {name}"
    calls = [
        node.func.id
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    assert "open" not in calls, f"{path.name} opens a file"


@pytest.mark.parametrize("path", files(PACKAGE / "drivers"), ids=str)
def test_drivers_never_import_home_assistant(path: Path) -> None:
    for module, level in modules_imported(path):
        name = resolve(path, module, level)
        top = name.split(".")[0]
        if name.startswith("custom_components.power_allocation."):
            assert name.startswith(
                (
                    "custom_components.power_allocation.engine",
                    "custom_components.power_allocation.drivers",
                )
            ), name
            continue
        assert top in DRIVERS_THIRD_PARTY or top in sys.stdlib_module_names, (
            f"{path.name} imports {name}"
        )


@pytest.mark.parametrize("path", files(ROOT / "simulator"), ids=str)
def test_simulator_uses_only_engine_and_drivers(path: Path) -> None:
    for module, level in modules_imported(path):
        name = resolve(path, module, level)
        assert not name.startswith("homeassistant"), f"{path.name} imports {name}"
        if name.startswith("custom_components"):
            assert name.startswith(
                (
                    "custom_components.power_allocation.engine",
                    "custom_components.power_allocation.drivers",
                )
            ), name


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    bad = PACKAGE / "engine" / "model.py"
    assert resolve(bad, "homeassistant.core", 0) == "homeassistant.core"
    assert resolve(bad, "", 2) == "custom_components.power_allocation"
    assert resolve(bad, "graph", 1) == "custom_components.power_allocation.engine.graph"
    sample = tmp_path / "sample.py"
    sample.write_text("from homeassistant.core import HomeAssistant\nimport time\n")
    assert modules_imported(sample) == [("homeassistant.core", 0), ("time", 0)]
