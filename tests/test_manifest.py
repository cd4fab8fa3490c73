"""What HACS and Home Assistant read: manifest.json and hacs.json.

The rule for `requirements` in manifest.json: it names exactly the third-party distributions the
package `custom_components/power_allocation` imports (any absolute `import`/`from ... import` in
any of its modules, found with `ast`), except the standard library, the package itself and the
distributions Home Assistant itself depends on. "Home Assistant itself" means the direct
`install_requires` (Requires-Dist) of the oldest release we support, Home Assistant 2025.4, which
is what the test venv runs: anything listed there is installed with every Home Assistant, so the
manifest must not pin it (numpy, PyYAML, voluptuous, cryptography, orjson, aiohttp, yarl are).
`HOME_ASSISTANT_PROVIDED` lists the ones we rely on; a test checks each against the installed
Home Assistant's metadata. What Home Assistant only constrains (`package_constraints.txt`, e.g.
paho-mqtt, installed for its MQTT integration) is not provided and must be declared; the ranges
must then admit Home Assistant's pin.

Each range must admit the version the test venv installs (requirements_lock.txt).
"""

from __future__ import annotations

import ast
import json
import re
import sys
from importlib.metadata import packages_distributions, requires, version
from importlib.util import find_spec
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "custom_components/power_allocation"
MANIFEST = PACKAGE / "manifest.json"

# Direct dependencies of Home Assistant 2025.4 that the integration imports (or may import).
HOME_ASSISTANT_PROVIDED = frozenset(
    {"homeassistant", "aiohttp", "cryptography", "numpy", "orjson", "pyyaml", "voluptuous", "yarl"}
)


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


def test_home_assistant_provided_set_is_what_home_assistant_requires() -> None:
    direct = {canonicalize_name(Requirement(r).name) for r in requires("homeassistant") or []}
    assert HOME_ASSISTANT_PROVIDED - {"homeassistant"} <= direct


def test_requirements_are_exactly_the_imported_third_party_distributions() -> None:
    imported = _third_party_distributions() - HOME_ASSISTANT_PROVIDED
    declared = {canonicalize_name(r.name) for r in _requirements()}
    missing = imported - declared
    extra = declared - imported
    assert not missing, f"imported but not in manifest.json requirements: {sorted(missing)}"
    assert not extra, f"in manifest.json requirements but never imported: {sorted(extra)}"
    assert not declared & HOME_ASSISTANT_PROVIDED


def test_each_range_admits_the_installed_version() -> None:
    for requirement in _requirements():
        installed = version(requirement.name)
        assert requirement.specifier.contains(installed), f"{requirement} excludes {installed}"


def test_each_range_admits_home_assistants_constraint() -> None:
    spec = find_spec("homeassistant")
    assert spec is not None
    assert spec.origin is not None
    constraints = Path(spec.origin).parent
    pins: dict[str, str] = {}
    for line in (constraints / "package_constraints.txt").read_text().splitlines():
        if match := re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;#]+)", line.strip()):
            pins[canonicalize_name(match[1])] = match[2]
    for requirement in _requirements():
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is not None:
            assert requirement.specifier.contains(pinned), f"{requirement} excludes HA's {pinned}"


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
