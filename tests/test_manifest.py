"""What HACS and Home Assistant read: manifest.json and hacs.json."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_manifest_keys_are_in_the_order_home_assistant_expects() -> None:
    manifest = json.loads((ROOT / "custom_components/power_allocation/manifest.json").read_text())
    keys = list(manifest)
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:])
    assert manifest["domain"] == "power_allocation"
    assert manifest["integration_type"] == "hub"
    assert manifest["config_flow"] is True
    assert "version" in manifest


def test_requirements_are_ranges_and_leave_numpy_to_home_assistant() -> None:
    manifest = json.loads((ROOT / "custom_components/power_allocation/manifest.json").read_text())
    names = [r.split(">")[0].split("=")[0].split("<")[0] for r in manifest["requirements"]]
    assert "numpy" not in names
    assert all("==" not in r and ">=" in r and "<" in r for r in manifest["requirements"])


def test_hacs_json_has_only_keys_hacs_accepts() -> None:
    hacs = json.loads((ROOT / "hacs.json").read_text())
    assert hacs == {"name": "Predictive Power Allocation", "homeassistant": "2025.4.0"}
