"""What HACS and Home Assistant read: manifest.json and hacs.json.

The rule for `requirements` in manifest.json: it names exactly the third-party distributions the
package `custom_components/power_allocation` imports (any absolute `import`/`from ... import` in
any of its modules, found with `ast`), except the standard library, the package itself and the
distributions every Home Assistant release we claim installs itself (its Requires-Dist).
tests/home_assistant_releases.json (written by scripts/home_assistant_releases from the wheels on
PyPI) holds, for the first release of each month from 2025.4 to the newest, what it installs and
what it pins (package_constraints.txt, the modbus and mqtt integrations). numpy, installed by
Home Assistant up to 2025.6 and only pinned since, must be declared; voluptuous is provided by all
(from 2026.9 as probatio, which Home Assistant installs under that name). Every range must admit
every release's pin, and the version the test venv installs (requirements_lock.txt); the second
leg's lock (requirements_newest.txt) pins what the newest release pins.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from importlib.metadata import packages_distributions, requires, version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "custom_components/power_allocation"
MANIFEST = PACKAGE / "manifest.json"

RELEASES: dict[str, dict[str, Any]] = json.loads(
    (ROOT / "tests/home_assistant_releases.json").read_text()
)
NEWEST = max(RELEASES, key=Version)
OLDEST = min(RELEASES, key=Version)


def _installed_by(release: str) -> set[str]:
    installs = {canonicalize_name(name) for name in RELEASES[release]["installs"]}
    # Home Assistant installs probatio under the name voluptuous (homeassistant/__init__.py).
    return installs | ({"voluptuous"} if "probatio" in installs else set())


def _home_assistant_provided() -> set[str]:
    """What every claimed release installs itself."""
    return {"homeassistant"} | set.intersection(*(_installed_by(r) for r in RELEASES))


def _manifest() -> dict[str, object]:
    return json.loads(MANIFEST.read_text())


def _requirements() -> list[Requirement]:
    requirements = _manifest()["requirements"]
    assert isinstance(requirements, list)
    return [Requirement(r) for r in requirements]


def _imported_top_level_names() -> set[str]:
    names: set[str] = set()
    for module in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(), filename=str(module))):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return names


def _third_party_distributions() -> set[str]:
    """The distributions the package imports, less the standard library and itself."""
    distributions = packages_distributions()
    found: set[str] = set()
    for name in _imported_top_level_names() - set(sys.stdlib_module_names):
        if name == "custom_components":
            continue
        assert name in distributions, f"{name} is imported but no installed distribution has it"
        found.update(canonicalize_name(d) for d in distributions[name])
    return found


def test_manifest_keys_are_in_the_order_home_assistant_expects() -> None:
    manifest = _manifest()
    keys = list(manifest)
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:])
    assert manifest["domain"] == "power_allocation"
    assert manifest["integration_type"] == "hub"
    assert manifest["config_flow"] is True
    assert "version" in manifest


def test_requirements_are_bounded_ranges() -> None:
    for requirement in _requirements():
        operators = {spec.operator for spec in requirement.specifier}
        assert operators == {">=", "<"}, f"{requirement} is not a >=,< range"
        assert not requirement.extras
        assert requirement.marker is None


def test_the_releases_file_reads_the_oldest_release_as_the_installed_one_is() -> None:
    direct = {canonicalize_name(Requirement(r).name) for r in requires("homeassistant") or []}
    assert Version(OLDEST).release[:2] == Version(version("homeassistant")).release[:2]
    assert _installed_by(OLDEST) == direct
    assert Version(NEWEST) >= Version("2026.11.0")


def test_requirements_are_exactly_the_imported_third_party_distributions() -> None:
    provided = _home_assistant_provided()
    imported = _third_party_distributions() - provided
    declared = {canonicalize_name(r.name) for r in _requirements()}
    missing = imported - declared
    extra = declared - imported
    assert not missing, f"imported but not in manifest.json requirements: {sorted(missing)}"
    assert not extra, f"in manifest.json requirements but never imported: {sorted(extra)}"
    assert not declared & provided


def test_each_range_admits_the_installed_version() -> None:
    for requirement in _requirements():
        installed = version(requirement.name)
        assert requirement.specifier.contains(installed), f"{requirement} excludes {installed}"


@pytest.mark.parametrize("release", sorted(RELEASES, key=Version))
def test_each_range_admits_every_releases_pin(release: str) -> None:
    pins = {canonicalize_name(name): pin for name, pin in RELEASES[release]["pins"].items()}
    for requirement in _requirements():
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is not None:
            assert requirement.specifier.contains(pinned), (
                f"{requirement} excludes {release}'s {pinned}"
            )


def test_the_second_legs_lock_pins_what_the_newest_release_pins() -> None:
    locked = {}
    for line in (ROOT / "requirements_newest.txt").read_text().splitlines():
        if match := re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;#]+)", line.strip()):
            locked[canonicalize_name(match[1])] = match[2]
    newest = {canonicalize_name(n): p for n, p in RELEASES[NEWEST]["pins"].items()}
    shared = locked.keys() & newest.keys()
    assert {"pymodbus", "paho-mqtt", "numpy", "probatio"} <= shared
    assert {n: locked[n] for n in shared} == {n: newest[n] for n in shared}
    assert f"Home Assistant {NEWEST}" in (ROOT / "requirements_newest.txt").read_text()


def test_hacs_json_has_only_keys_hacs_accepts() -> None:
    hacs = json.loads((ROOT / "hacs.json").read_text())
    assert hacs == {"name": "Predictive Power Allocation", "homeassistant": "2025.4.0"}


def test_stated_minimum_home_assistant_is_what_ci_runs() -> None:
    """hacs.json and the README state the minimum; the test venv (CI) runs that release."""
    running = Version(version("homeassistant"))
    minimum = Version(json.loads((ROOT / "hacs.json").read_text())["homeassistant"])
    assert running.release[:2] == minimum.release[:2]
    assert running >= minimum
    stated = f"Home Assistant {minimum.major}.{minimum.minor} or newer"
    assert stated in (ROOT / "README.md").read_text()
