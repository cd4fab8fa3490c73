"""End to end: Home Assistant runs a site against the simulator over real loopback sockets.

The UPS and both PDUs are the simulator's pymodbus servers; every service has a host agent on the
simulator's MQTT bridge, through a real Mosquitto. Mains fails in the simulator: Home Assistant's
state machine shows the low-priority outlets switch off, dependents before what they depend on,
critical ones untouched; mains returns: everything comes back, dependencies first.

Time is driven by the test: each cycle the simulated site advances 10 s and the coordinator,
whose clock follows the site's, runs once (`tests.site_entry.SiteRun`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.power_allocation.const import (
    EVENT_DECISION,
    EVENT_STATE_CHANGED,
)
from custom_components.power_allocation.engine.scenario import build_scenario
from tests.fixtures.modbus_site import HOST, ModbusSite, serving
from tests.fixtures.mqtt_broker import Mosquitto
from tests.site_entry import (
    SiteRun,
    agents_bridge,
    modbus_source,
    site_clock,
    site_entry,
    ups_item,
)

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


def _entry(rack: ModbusSite, broker_port: int) -> MockConfigEntry:
    return site_entry(
        "Rack e2e",
        RACK,
        ups=[
            {
                **ups_item(RACK["ups"][0], modbus_source(rack, "ups1", "apc_smart_ups")),
                "peukert_k": 1.3,
            }
        ],
        pdus=[{**p, "source": modbus_source(rack, p["id"], "generic_pdu")} for p in RACK["pdus"]],
        mqtt={"host": HOST, "port": broker_port, "base_topic": PREFIX},
        agents=True,
    )


def _switch_states(run: SiteRun) -> dict[str, str]:
    return {sid: run.state(entity_id) for sid, entity_id in SWITCH.items()}


@pytest.fixture
async def run(
    hass: HomeAssistant, socket_enabled: None, mqtt_broker: Mosquitto
) -> AsyncIterator[SiteRun]:
    """The rack on its Modbus servers, its agents on the bridge, in Home Assistant (not set up)."""
    async with (
        serving(build_scenario(RACK, {})) as rack,
        agents_bridge(rack.site, mqtt_broker, "nut", PREFIX) as bridge,
    ):
        entry = _entry(rack, mqtt_broker.port)
        run = SiteRun(hass, entry, rack.site, server=rack.server, bridge=bridge)
        run.advance(1)
        with site_clock(rack.site):
            yield run


async def test_outage_sheds_in_dependency_order_and_restores(
    hass: HomeAssistant, run: SiteRun
) -> None:
    await run.set_up()
    registry = er.async_get(hass)
    assert all(registry.async_get(entity_id) for entity_id in SWITCH.values())
    decisions = async_capture_events(hass, EVENT_DECISION)
    modes = async_capture_events(hass, EVENT_STATE_CHANGED)
    # A few cycles on mains: everything on, the forecasters have seen every load.
    for _ in range(3):
        await run.cycle()
    assert set(_switch_states(run).values()) == {"on"}
    assert run.state("sensor.rack_e2e_controller_state") == "normal"

    run.simulated.set_mains(False)
    off_at: dict[str, int] = {}
    for cycle in range(60):
        await run.cycle()
        for sid, state in _switch_states(run).items():
            if state == "off":
                off_at.setdefault(sid, cycle)
        if {"web", "frontend", "batch"} <= set(off_at):
            break
    assert run.state("binary_sensor.rack_e2e_ups1_on_battery") == "on"
    assert {"web", "frontend", "batch"} <= set(off_at), off_at
    assert off_at["frontend"] < off_at["web"], "a dependent goes off before what it needs (I1)"
    assert _switch_states(run)["network"] == "on"
    assert _switch_states(run)["db"] == "on"
    stopped = [e.data["service"] for e in decisions if e.data["action"] == "stop"]
    assert stopped.index("frontend") < stopped.index("web")
    assert all(e.data["ok"] for e in decisions), [e.data for e in decisions if not e.data["ok"]]
    assert run.state("sensor.rack_e2e_web_allocation") == "off"
    # Graceful first (I3): the agent was asked to stop before the outlet was cut.
    web = [e.data["action"] for e in decisions if e.data["service"] == "web"]
    assert web[:2] == ["stop", "outlets_off"]
    assert any(e.data["state"] == "shedding" for e in modes)

    run.simulated.set_mains(True)
    on_at: dict[str, int] = {}
    for cycle in range(60):
        await run.cycle()
        for sid, state in _switch_states(run).items():
            if state == "on":
                on_at.setdefault(sid, cycle)
        if set(_switch_states(run).values()) == {"on"} and (
            run.state("sensor.rack_e2e_controller_state") == "normal"
        ):
            break
    assert set(_switch_states(run).values()) == {"on"}
    assert on_at["web"] < on_at["frontend"], "dependencies come back first (I6)"
    assert run.state("sensor.rack_e2e_controller_state") == "normal"
    assert run.state("binary_sensor.rack_e2e_ups1_on_battery") == "off"
    assert {e.data["state"] for e in modes} >= {"restoring", "normal"}
    await run.unload()
