"""End to end: Home Assistant runs a site against the simulator over real loopback sockets.

The UPS and both PDUs are the simulator's pymodbus servers; every service has a host agent on the
simulator's MQTT bridge, through a real Mosquitto. Mains fails in the simulator: Home Assistant's
state machine shows the low-priority outlets switch off, dependents before what they depend on,
critical ones untouched; mains returns: everything comes back, dependencies first.

Time is driven by the test: each cycle the simulated site advances 10 s and the coordinator,
whose clock follows the site's, runs once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.power_allocation.const import (
    CONF_SITE_NAME,
    CONF_TOPOLOGY,
    DOMAIN,
    EVENT_DECISION,
    EVENT_STATE_CHANGED,
)
from custom_components.power_allocation.drivers.mqtt import MqttDriver
from custom_components.power_allocation.engine.scenario import build_scenario
from simulator.modbus_server import SiteModbusServer
from simulator.mqtt_bridge import MqttBridge
from simulator.site import SimulatedSite
from tests.fixtures.modbus_site import HOST
from tests.fixtures.mqtt_broker import Mosquitto
from tests.site_entry import wait_applied

CYCLE_S = 10
EPOCH_S = 1_800_000_000.0
PREFIX = "sim"
RACK: dict[str, Any] = {
    "name": "e2e-rack",
    "seed": 11,
    "step_s": 1,
    "ups": [
        {
            "id": "ups1",
            "capacity_wh": 400,
            "rated_w": 1000,
            "runtime_full_load_s": 240,
            "peukert_k": 1.3,
            "efficiency": 0.9,
            "soc_start_pct": 100,
        }
    ],
    "pdus": [
        {"id": "pdu-a", "ups": "ups1", "limit_w": 1500, "outlets": 4},
        {"id": "pdu-b", "ups": "ups1", "limit_w": 1500, "outlets": 4},
    ],
    "services": [
        {"id": "network", "priority": "critical", "outlets": ["pdu-a/1"], "shutdown_s": 5,
         "startup_s": 10, "load": {"constant_w": 40}},
        {"id": "db", "priority": "critical", "outlets": ["pdu-a/2"], "depends_on": ["network"],
         "shutdown_s": 30, "startup_s": 20, "idle_w": 8, "load": {"constant_w": 200}},
        {"id": "web", "priority": "medium", "outlets": ["pdu-b/1"], "depends_on": ["db"],
         "shutdown_s": 20, "startup_s": 20, "idle_w": 5, "load": {"constant_w": 120}},
        {"id": "frontend", "priority": "low", "outlets": ["pdu-b/2"], "depends_on": ["web"],
         "shutdown_s": 10, "startup_s": 10, "idle_w": 3, "load": {"constant_w": 80}},
        {"id": "batch", "priority": "low", "outlets": ["pdu-b/3"], "shutdown_s": 10,
         "startup_s": 10, "idle_w": 3, "load": {"constant_w": 150}},
    ],
    "timeline": {"history_s": 0, "outage_at_s": 3600, "outage_duration_s": 600},
}  # fmt: skip
SWITCH = {
    "network": "switch.rack_e2e_pdu_a_outlet_1",
    "db": "switch.rack_e2e_pdu_a_outlet_2",
    "web": "switch.rack_e2e_pdu_b_outlet_1",
    "frontend": "switch.rack_e2e_pdu_b_outlet_2",
    "batch": "switch.rack_e2e_pdu_b_outlet_3",
}


class Rack:
    """The simulated rack on its Modbus servers and MQTT bridge."""

    def __init__(self, site: SimulatedSite, server: SiteModbusServer, bridge: MqttBridge) -> None:
        self.site = site
        self.server = server
        self.bridge = bridge

    def advance(self, dt_s: float) -> list[str]:
        """Advance the site; the topics its bridge published for the new state."""
        self.site.advance(dt_s)
        self.server.refresh()
        return self.bridge.publish()


@pytest.fixture
async def rack(socket_enabled: None, mqtt_broker: Mosquitto) -> AsyncIterator[Rack]:
    site = SimulatedSite(build_scenario(RACK, {}), follow_timeline=False)
    server = SiteModbusServer(site, HOST)
    bridge = MqttBridge(site, HOST, mqtt_broker.port, "nut", PREFIX, interval_s=0)
    await server.start()
    await bridge.start()
    rack = Rack(site, server, bridge)
    rack.advance(1)
    try:
        yield rack
    finally:
        await bridge.stop()
        await server.stop()


def _entry(rack: Rack, broker_port: int) -> MockConfigEntry:
    def modbus(device_id: str, profile: str) -> dict[str, Any]:
        port = rack.server.ports[device_id]
        return {"kind": "modbus", "host": HOST, "port": port, "profile": profile}

    ups = {
        **{k: RACK["ups"][0][k] for k in ("id", "rated_w", "capacity_wh", "runtime_full_load_s")},
        "peukert_k": 1.3,
        "source": modbus("ups1", "apc_smart_ups"),
    }
    return MockConfigEntry(
        domain=DOMAIN,
        title="Rack e2e",
        unique_id="rack_e2e",
        data={
            CONF_SITE_NAME: "Rack e2e",
            CONF_TOPOLOGY: {
                "mqtt": {"host": HOST, "port": broker_port, "base_topic": PREFIX},
                "ups": [ups],
            },
        },
        options={
            "pdus": [{**p, "source": modbus(p["id"], "generic_pdu")} for p in RACK["pdus"]],
            "services": [
                {**{k: v for k, v in s.items() if k != "load"}, "agent": True}
                for s in RACK["services"]
            ],
        },
    )


async def _cycle(hass: HomeAssistant, rack: Rack, entry: MockConfigEntry) -> None:
    coordinator = entry.runtime_data
    driver = coordinator.drivers.drivers["mqtt"]
    assert isinstance(driver, MqttDriver)
    before = driver.counts().applied
    # The agents' reports of this state must be in before the cycle reads them.
    await hass.async_add_executor_job(wait_applied, driver, rack.advance(CYCLE_S), before)
    # The controller's clock follows the simulated site (paho's threads need the real one).
    coordinator.clock = lambda: EPOCH_S + rack.site.time_s
    await coordinator.async_refresh()
    await hass.async_block_till_done()


def _switch_states(hass: HomeAssistant) -> dict[str, str]:
    return {sid: hass.states.get(entity_id).state for sid, entity_id in SWITCH.items()}


async def test_outage_sheds_in_dependency_order_and_restores(
    hass: HomeAssistant, rack: Rack, mqtt_broker: Mosquitto
) -> None:
    entry = _entry(rack, mqtt_broker.port)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    registry = er.async_get(hass)
    assert all(registry.async_get(entity_id) for entity_id in SWITCH.values())
    decisions = async_capture_events(hass, EVENT_DECISION)
    modes = async_capture_events(hass, EVENT_STATE_CHANGED)
    # A few cycles on mains: everything on, the forecasters have seen every load.
    for _ in range(3):
        await _cycle(hass, rack, entry)
    assert set(_switch_states(hass).values()) == {"on"}
    assert hass.states.get("sensor.rack_e2e_controller_state").state == "normal"

    rack.site.set_mains(False)
    off_at: dict[str, int] = {}
    for cycle in range(60):
        await _cycle(hass, rack, entry)
        for sid, state in _switch_states(hass).items():
            if state == "off":
                off_at.setdefault(sid, cycle)
        if {"web", "frontend", "batch"} <= set(off_at):
            break
    assert hass.states.get("binary_sensor.rack_e2e_ups1_on_battery").state == "on"
    assert {"web", "frontend", "batch"} <= set(off_at), off_at
    assert off_at["frontend"] < off_at["web"], "a dependent goes off before what it needs (I1)"
    assert _switch_states(hass)["network"] == "on"
    assert _switch_states(hass)["db"] == "on"
    stopped = [e.data["service"] for e in decisions if e.data["action"] == "stop"]
    assert stopped.index("frontend") < stopped.index("web")
    assert all(e.data["ok"] for e in decisions), [e.data for e in decisions if not e.data["ok"]]
    assert hass.states.get("sensor.rack_e2e_web_allocation").state == "off"
    # Graceful first (I3): the agent was asked to stop before the outlet was cut.
    web = [e.data["action"] for e in decisions if e.data["service"] == "web"]
    assert web[:2] == ["stop", "outlets_off"]
    assert any(e.data["state"] == "shedding" for e in modes)

    rack.site.set_mains(True)
    on_at: dict[str, int] = {}
    for cycle in range(60):
        await _cycle(hass, rack, entry)
        for sid, state in _switch_states(hass).items():
            if state == "on":
                on_at.setdefault(sid, cycle)
        if set(_switch_states(hass).values()) == {"on"} and (
            hass.states.get("sensor.rack_e2e_controller_state").state == "normal"
        ):
            break
    assert set(_switch_states(hass).values()) == {"on"}
    assert on_at["web"] < on_at["frontend"], "dependencies come back first (I6)"
    assert hass.states.get("sensor.rack_e2e_controller_state").state == "normal"
    assert hass.states.get("binary_sensor.rack_e2e_ups1_on_battery").state == "off"
    assert {e.data["state"] for e in modes} >= {"restoring", "normal"}
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
