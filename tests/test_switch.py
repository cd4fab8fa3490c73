"""Outlet switches: off holds the service off through the controller (its host stops first, then
the outlet is cut), on releases it and the controller brings it back."""

from __future__ import annotations

import re

from homeassistant.components.switch import DOMAIN as SWITCH_DOMAIN
from homeassistant.const import (
    ATTR_ENTITY_ID,
    SERVICE_TURN_OFF,
    SERVICE_TURN_ON,
    STATE_OFF,
    STATE_ON,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import async_capture_events, snapshot_platform
from syrupy.assertion import SnapshotAssertion

from custom_components.power_allocation.const import EVENT_DECISION
from simulator.site import ServiceMode
from tests.fixtures.modbus_site import ModbusSite
from tests.fixtures.mqtt_broker import Mosquitto
from tests.site_entry import ENTRY_ID, SiteRun, loaded_site

BATCH = "switch.rack_a_pdu_b_outlet_3"
CONSERVATIVE = "switch.rack_a_conservative_plan"


async def _switch(hass: HomeAssistant, service: str, entity_id: str) -> None:
    await hass.services.async_call(
        SWITCH_DOMAIN, service, {ATTR_ENTITY_ID: entity_id}, blocking=True
    )
    await hass.async_block_till_done()


def _mode(site: SiteRun, service_id: str) -> ServiceMode:
    return site.simulated.snapshot().services[service_id].mode


async def test_switches(
    hass: HomeAssistant,
    modbus_site: ModbusSite,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
) -> None:
    """The site's conservative plan, and a switch per outlet a service is bound to (4 of the 8),
    none for the others."""
    async with loaded_site(hass, modbus_site, ["switch"]) as site:
        await site.cycle()
        await snapshot_platform(hass, entity_registry, snapshot, ENTRY_ID)
        assert {
            e.entity_id for e in er.async_entries_for_config_entry(entity_registry, ENTRY_ID)
        } == {
            CONSERVATIVE,
            "switch.rack_a_pdu_a_outlet_1",
            "switch.rack_a_pdu_a_outlet_2",
            "switch.rack_a_pdu_b_outlet_2",
            BATCH,
        }


async def test_off_stops_the_host_then_cuts_and_on_brings_it_back(
    hass: HomeAssistant, modbus_site: ModbusSite, mqtt_broker: Mosquitto
) -> None:
    """Off: the agent is told to stop, the outlet stays on for its shutdown, then goes off with
    the host already down; on: the outlet comes back and the host boots."""
    async with loaded_site(hass, modbus_site, broker=mqtt_broker) as site:
        await site.cycle(2)
        assert site.state(BATCH) == STATE_ON
        decisions = async_capture_events(hass, EVENT_DECISION)

        await _switch(hass, SERVICE_TURN_OFF, BATCH)
        assert site.state("select.rack_a_batch_hold") == "held_off"
        # The agent acknowledged before the action returned: the host is shutting down, powered.
        assert _mode(site, "batch") is ServiceMode.STOPPING
        assert site.outlet_on("pdu-b/3")
        assert site.state(BATCH) == STATE_ON
        for _ in range(3):
            await site.cycle()
            if not site.outlet_on("pdu-b/3"):
                break
        assert not site.outlet_on("pdu-b/3")
        assert _mode(site, "batch") is ServiceMode.UNPOWERED
        assert modbus_site.site.unclean_power_losses["batch"] == 0
        await site.cycle()
        assert site.state(BATCH) == STATE_OFF
        assert [e.data["action"] for e in decisions] == ["stop", "outlets_off"]
        assert all(e.data["ok"] for e in decisions)
        # Nothing else was touched.
        assert site.outlet_on("pdu-a/1")
        assert site.outlet_on("pdu-a/2")

        await _switch(hass, SERVICE_TURN_ON, BATCH)
        assert site.state("select.rack_a_batch_hold") == "auto"
        for _ in range(6):
            await site.cycle()
            if _mode(site, "batch") is ServiceMode.RUNNING:
                break
        assert _mode(site, "batch") is ServiceMode.RUNNING
        assert site.outlet_on("pdu-b/3")
        assert site.state(BATCH) == STATE_ON
        assert site.state("sensor.rack_a_batch_allocation") in ("starting", "on")
        assert [e.data["action"] for e in decisions][2:] == ["start"]


async def test_conservative_plan_expects_longer_outages(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    """On: the plan reckons an outage more likely to go on (the small site's batch is shed at
    the earliest already, so the reason shows it); off: the usual prior again."""
    async with loaded_site(hass, modbus_site) as site:
        await site.cycle(2)

        def goes_on_pct() -> int:
            state = hass.states.get("sensor.rack_a_next_planned_action")
            assert state is not None
            assert state.attributes["service"] == "batch"
            found = re.search(r"goes on with (\d+)% probability", state.attributes["reason"])
            assert found is not None, state.attributes["reason"]
            return int(found.group(1))

        assert site.state(CONSERVATIVE) == STATE_OFF
        usual = goes_on_pct()
        await _switch(hass, SERVICE_TURN_ON, CONSERVATIVE)
        assert site.state(CONSERVATIVE) == STATE_ON
        assert site.coordinator.control.decider.conservative
        assert goes_on_pct() > usual
        await _switch(hass, SERVICE_TURN_OFF, CONSERVATIVE)
        assert site.state(CONSERVATIVE) == STATE_OFF
        assert not site.coordinator.control.decider.conservative
        assert goes_on_pct() == usual
