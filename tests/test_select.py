"""The priority and hold selects change what the controller does on the simulated site. Where a
service must stop, its host has the simulator's agent: the controller cuts an outlet only once
the draw shows its host has stopped."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from homeassistant.components.select import ATTR_OPTION, SERVICE_SELECT_OPTION
from homeassistant.components.select import DOMAIN as SELECT_DOMAIN
from homeassistant.const import ATTR_ENTITY_ID
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import snapshot_platform
from syrupy.assertion import SnapshotAssertion

from custom_components.power_allocation.const import EVENT_DECISION
from tests.fixtures.modbus_site import ModbusSite
from tests.fixtures.mqtt_broker import Mosquitto
from tests.site_entry import ENTRY_ID, SiteRun, loaded_site


async def _select(hass: HomeAssistant, entity_id: str, option: str) -> None:
    await hass.services.async_call(
        SELECT_DOMAIN,
        SERVICE_SELECT_OPTION,
        {ATTR_ENTITY_ID: entity_id, ATTR_OPTION: option},
        blocking=True,
    )
    await hass.async_block_till_done()


@dataclass(frozen=True)
class Decision:
    service: str
    action: str
    at_s: float  # the simulated site's time


def _capture_decisions(site: SiteRun) -> list[Decision]:
    """Every decision the coordinator carries out from now, with the site's time."""
    decisions: list[Decision] = []

    @callback
    def record(event: Event) -> None:
        decisions.append(
            Decision(event.data["service"], event.data["action"], site.simulated.time_s)
        )

    site.entry.async_on_unload(site.hass.bus.async_listen(EVENT_DECISION, record))
    return decisions


def _decisions(decisions: list[Decision]) -> list[tuple[str, str]]:
    return [(d.service, d.action) for d in decisions]


def _at_s(decisions: list[Decision], service: str, action: str) -> float:
    return next(d.at_s for d in decisions if (d.service, d.action) == (service, action))


async def test_selects(
    hass: HomeAssistant,
    modbus_site: ModbusSite,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
) -> None:
    """A priority and a hold select per service, configuration entities."""
    async with loaded_site(hass, modbus_site, ["select"]):
        await snapshot_platform(hass, entity_registry, snapshot, ENTRY_ID)
        assert len(er.async_entries_for_config_entry(entity_registry, ENTRY_ID)) == 2 * 3


async def test_raising_a_priority_takes_the_service_off_the_plan(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    """Low batch is planned to be shed first; raised to critical it no longer is, and back."""
    async with loaded_site(hass, modbus_site) as site:
        await site.cycle(2)
        assert site.state("select.rack_a_batch_priority") == "low"
        planned_low = site.state("sensor.rack_a_batch_planned_shed_in")
        assert float(planned_low) < float(site.state("sensor.rack_a_db_planned_shed_in"))
        assert site.state("sensor.rack_a_next_planned_action") == "shutdown"
        assert hass.states.get("sensor.rack_a_next_planned_action").attributes["service"] == "batch"

        await _select(hass, "select.rack_a_batch_priority", "critical")
        assert site.state("select.rack_a_batch_priority") == "critical"
        assert site.coordinator.control.decider.priority_overrides == {"batch": "critical"}
        planned_critical = site.state("sensor.rack_a_batch_planned_shed_in")
        assert planned_critical != planned_low
        assert planned_critical == site.state("sensor.rack_a_db_planned_shed_in")

        await _select(hass, "select.rack_a_batch_priority", "low")
        assert site.coordinator.control.decider.priority_overrides == {}
        assert site.state("sensor.rack_a_batch_planned_shed_in") == planned_low


async def test_raised_priority_keeps_the_service_through_an_outage(
    hass: HomeAssistant, modbus_site: ModbusSite, mqtt_broker: Mosquitto
) -> None:
    """In an outage the low batch is shed; raised to critical before, it stays on."""
    async with loaded_site(hass, modbus_site, broker=mqtt_broker) as site:
        await site.cycle(2)
        shed_s = _planned_shed_s(site, "batch")
        await _select(hass, "select.rack_a_batch_priority", "critical")
        modbus_site.site.set_mains(False)
        # Well past the time it was planned to go, with its 10 s shutdown.
        await site.cycle(int(shed_s // 10) + 4)
        assert site.state("sensor.rack_a_controller_state") != "normal"
        assert site.outlet_on("pdu-b/3")
        assert site.state("sensor.rack_a_batch_allocation") == "on"


async def test_held_off_stops_then_cuts_after_its_shutdown_time(
    hass: HomeAssistant, modbus_site: ModbusSite, mqtt_broker: Mosquitto
) -> None:
    """batch (shutdown_s 10) held off: stop at once, outlet off once 10 s have passed."""
    async with loaded_site(hass, modbus_site, broker=mqtt_broker) as site:
        await site.cycle(2)
        decisions = _capture_decisions(site)
        await _select(hass, "select.rack_a_batch_hold", "held_off")
        assert site.state("select.rack_a_batch_hold") == "held_off"
        assert _decisions(decisions) == [("batch", "stop")]
        assert site.state("sensor.rack_a_batch_allocation") == "stopping"
        assert site.outlet_on("pdu-b/3")
        await _cycle_until_off(site, "pdu-b/3", cycles=2)
        assert _decisions(decisions) == [("batch", "stop"), ("batch", "outlets_off")]
        assert _at_s(decisions, "batch", "outlets_off") - _at_s(decisions, "batch", "stop") >= 10
        # Off once a reading has confirmed the cut.
        await site.cycle()
        assert site.state("sensor.rack_a_batch_allocation") == "off"
        assert site.state("switch.rack_a_pdu_b_outlet_3") == "off"
        # Held off is held: more cycles on mains do not bring it back.
        await site.cycle(3)
        assert not site.outlet_on("pdu-b/3")

        await _select(hass, "select.rack_a_batch_hold", "auto")
        assert site.state("select.rack_a_batch_hold") == "auto"
        for _ in range(6):
            await site.cycle()
            if site.outlet_on("pdu-b/3"):
                break
        assert site.outlet_on("pdu-b/3")
        assert ("batch", "start") in _decisions(decisions)


async def test_held_off_takes_its_dependents_first(
    hass: HomeAssistant, modbus_site: ModbusSite, mqtt_broker: Mosquitto
) -> None:
    """network held off: db, which depends on it, stops and loses power before network does."""
    async with loaded_site(hass, modbus_site, broker=mqtt_broker) as site:
        await site.cycle(2)
        decisions = _capture_decisions(site)
        await _select(hass, "select.rack_a_network_hold", "held_off")
        # db's 30 s shutdown, then network's (the default 60 s).
        await _cycle_until_off(site, "pdu-a/1", cycles=12)
        assert not site.outlet_on("pdu-a/2")
        assert not site.outlet_on("pdu-b/2")
        order = _decisions(decisions)
        assert order.index(("db", "stop")) < order.index(("db", "outlets_off"))
        assert order.index(("db", "outlets_off")) < order.index(("network", "stop"))
        assert _at_s(decisions, "db", "outlets_off") - _at_s(decisions, "db", "stop") >= 30
        assert (
            _at_s(decisions, "network", "outlets_off") - _at_s(decisions, "network", "stop") >= 60
        )
        await site.cycle()
        assert site.state("sensor.rack_a_db_allocation") == "off"
        assert site.state("sensor.rack_a_network_allocation") == "off"
        # batch does not depend on network: untouched.
        assert site.outlet_on("pdu-b/3")
        assert ("batch", "stop") not in order


async def test_held_on_keeps_a_service_through_an_outage_until_released(
    hass: HomeAssistant, modbus_site: ModbusSite, mqtt_broker: Mosquitto
) -> None:
    """batch held on is not shed on battery; back to auto, the controller sheds it."""
    async with loaded_site(hass, modbus_site, broker=mqtt_broker) as site:
        await site.cycle(2)
        shed_s = _planned_shed_s(site, "batch")
        await _select(hass, "select.rack_a_batch_hold", "held_on")
        assert site.state("select.rack_a_batch_hold") == "held_on"
        modbus_site.site.set_mains(False)
        await site.cycle(int(shed_s // 10) + 4)
        assert site.state("binary_sensor.rack_a_ups1_on_battery") == "on"
        assert site.outlet_on("pdu-b/3")
        assert site.state("sensor.rack_a_batch_allocation") == "on"

        await _select(hass, "select.rack_a_batch_hold", "auto")
        await _cycle_until_off(site, "pdu-b/3", cycles=4)


async def test_a_hold_that_contradicts_another_is_refused(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    """db held on needs network: holding network off is refused, and nothing changes."""
    async with loaded_site(hass, modbus_site) as site:
        await site.cycle()
        await _select(hass, "select.rack_a_db_hold", "held_on")
        with pytest.raises(ServiceValidationError, match="contradicts"):
            await _select(hass, "select.rack_a_network_hold", "held_off")
        assert site.state("select.rack_a_network_hold") == "auto"
        assert site.state("select.rack_a_db_hold") == "held_on"


def _planned_shed_s(site: SiteRun, service_id: str) -> float:
    """When the plan would shed a service if mains failed now (the sensor shows minutes)."""
    return 60.0 * float(site.state(f"sensor.rack_a_{service_id}_planned_shed_in"))


async def _cycle_until_off(site: SiteRun, outlet_id: str, cycles: int) -> None:
    for _ in range(cycles):
        await site.cycle()
        if not site.outlet_on(outlet_id):
            return
    raise AssertionError(f"{outlet_id} still on after {cycles} cycles")
