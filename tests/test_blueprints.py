"""The blueprints load and validate with Home Assistant's own blueprint code, and they act."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from homeassistant.components.automation.config import AUTOMATION_BLUEPRINT_SCHEMA
from homeassistant.components.blueprint import models
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from homeassistant.util.yaml import load_yaml_dict
from pytest_homeassistant_custom_component.common import async_mock_service

BLUEPRINTS = Path(__file__).parent.parent / "blueprints" / "automation" / "power_allocation"
NAMES = sorted(path.name for path in BLUEPRINTS.glob("*.yaml"))


def test_five_blueprints_ship() -> None:
    assert NAMES == [
        "decision_notify.yaml",
        "grid_trouble_conservative.yaml",
        "mains_back_report.yaml",
        "on_battery_plan.yaml",
        "overload_predicted.yaml",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_blueprint_is_valid(name: str) -> None:
    blueprint = models.Blueprint(
        load_yaml_dict(BLUEPRINTS / name),
        expected_domain="automation",
        schema=AUTOMATION_BLUEPRINT_SCHEMA,
    )
    metadata = blueprint.metadata
    assert metadata["source_url"].endswith(f"/blueprints/automation/power_allocation/{name}")
    assert metadata["homeassistant"]["min_version"] == "2025.4.0"
    raw = (BLUEPRINTS / name).read_text(encoding="utf-8")
    assert "triggers:" in raw
    assert "actions:" in raw


async def _automation(hass: HomeAssistant, name: str, inputs: dict[str, Any]) -> None:
    target = Path(hass.config.path("blueprints", "automation", "power_allocation"))
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(BLUEPRINTS / name, target / name)
    config = {
        "automation": {
            "id": name,
            "use_blueprint": {"path": f"power_allocation/{name}", "input": inputs},
        }
    }
    assert await async_setup_component(hass, "automation", config)
    await hass.async_block_till_done()
    states = hass.states.async_all("automation")
    assert len(states) == 1
    assert states[0].state == "on", states[0].attributes


async def test_decision_notify_reports_a_stop_with_its_reason(hass: HomeAssistant) -> None:
    calls = async_mock_service(hass, "notify", "notify")
    await _automation(hass, "decision_notify.yaml", {})
    data = {"site": "Rack A", "service": "batch", "action": "stop", "reason": "plan: low"}
    hass.bus.async_fire("power_allocation_decision", {**data, "ok": True, "error": None})
    hass.bus.async_fire("power_allocation_decision", {**data, "action": "outlets_off", "ok": True})
    await hass.async_block_till_done()
    assert len(calls) == 1
    assert calls[0].data["title"] == "Rack A: batch stop"
    assert calls[0].data["message"] == "plan: low"


async def test_overload_notifies_and_sheds_what_was_chosen(hass: HomeAssistant) -> None:
    calls = async_mock_service(hass, "notify", "notify")
    sheds = async_mock_service(hass, "power_allocation", "shed_service")
    await _automation(
        hass, "overload_predicted.yaml", {"site": "entry1", "shed_services": ["batch", "gpu"]}
    )
    hass.bus.async_fire(
        "power_allocation_overload_predicted",
        {"site": "Rack A", "node": "pdu-a", "level": "shedding", "probability": 0.8,
         "draw_w": 1700.0, "upper_w": 1900.0, "limit_w": 1800.0},
    )  # fmt: skip
    await hass.async_block_till_done()
    assert calls[0].data["title"] == "Overload predicted on pdu-a"
    assert "80" in calls[0].data["message"]
    assert [c.data for c in sheds] == [
        {"config_entry_id": "entry1", "service": "batch"},
        {"config_entry_id": "entry1", "service": "gpu"},
    ]


async def test_grid_trouble_switches_the_conservative_plan(hass: HomeAssistant) -> None:
    turned_on = async_mock_service(hass, "switch", "turn_on")
    turned_off = async_mock_service(hass, "switch", "turn_off")
    hass.states.async_set("binary_sensor.storm", "off")
    await _automation(
        hass,
        "grid_trouble_conservative.yaml",
        {"warning": "binary_sensor.storm", "conservative_plan": "switch.rack_a_conservative_plan"},
    )
    hass.states.async_set("binary_sensor.storm", "on")
    await hass.async_block_till_done()
    hass.states.async_set("binary_sensor.storm", "off")
    await hass.async_block_till_done()
    assert [c.data["entity_id"] for c in turned_on] == [["switch.rack_a_conservative_plan"]]
    assert [c.data["entity_id"] for c in turned_off] == [["switch.rack_a_conservative_plan"]]


async def test_mains_back_lists_what_stays_off(hass: HomeAssistant) -> None:
    calls = async_mock_service(hass, "notify", "notify")
    hass.states.async_set("sensor.web_allocation", "on", {"friendly_name": "web"})
    hass.states.async_set("sensor.batch_allocation", "off", {"friendly_name": "batch"})
    await _automation(
        hass,
        "mains_back_report.yaml",
        {"allocations": ["sensor.web_allocation", "sensor.batch_allocation"]},
    )
    hass.bus.async_fire("power_allocation_state_changed", {"site": "Rack A", "state": "normal"})
    await hass.async_block_till_done()
    assert calls[0].data["message"] == "Restored: web. Still off: batch."


async def test_on_battery_sends_the_plan(hass: HomeAssistant) -> None:
    calls = async_mock_service(hass, "notify", "notify")
    cycles = async_mock_service(hass, "power_allocation", "allocate")
    hass.states.async_set("binary_sensor.ups_on_battery", "off")
    hass.states.async_set(
        "sensor.next_action",
        "shutdown",
        {"plan": [{"service": "batch", "action": "shutdown", "in_s": 120.0}]},
    )
    hass.states.async_set("sensor.critical_runtime", "42", {"unit_of_measurement": "min"})
    await _automation(
        hass,
        "on_battery_plan.yaml",
        {
            "on_battery": "binary_sensor.ups_on_battery",
            "next_action": "sensor.next_action",
            "critical_runtime": "sensor.critical_runtime",
            "site": "entry1",
        },
    )
    hass.states.async_set("binary_sensor.ups_on_battery", "on")
    await hass.async_block_till_done()
    assert [c.data for c in cycles] == [{"config_entry_id": "entry1"}]
    message = calls[0].data["message"]
    assert "42 min" in message
    assert "batch: shutdown in 2.0 min." in message
