"""The integration sets up against the simulated site over real Modbus TCP, and unloads."""

from __future__ import annotations

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er

from custom_components.power_allocation.const import DOMAIN
from tests.fixtures.modbus_site import ModbusSite
from tests.site_entry import SiteRun


async def test_setup_and_unload(hass: HomeAssistant, modbus_site: ModbusSite) -> None:
    run = SiteRun.small(hass, modbus_site)
    await run.set_up()
    entry = run.entry
    assert entry.state is ConfigEntryState.LOADED
    entities = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    assert all(hass.states.get(e.entity_id).state != "unavailable" for e in entities)
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.NOT_LOADED


async def test_removed_service_loses_its_device(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    run = SiteRun.small(hass, modbus_site)
    await run.set_up()
    entry = run.entry
    devices = dr.async_get(hass)
    batch = (DOMAIN, f"{entry.entry_id}_service_batch")
    assert devices.async_get_device(identifiers={batch}) is not None

    services = [s for s in entry.options["services"] if s["id"] != "batch"]
    hass.config_entries.async_update_entry(entry, options={**entry.options, "services": services})
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert devices.async_get_device(identifiers={batch}) is None
    assert devices.async_get_device(identifiers={(DOMAIN, f"{entry.entry_id}_service_db")})


async def test_a_held_on_service_is_not_planned_to_be_shed(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    await SiteRun.small(hass, modbus_site).set_up()
    planned = "sensor.rack_a_batch_planned_shed_in"
    assert hass.states.get(planned).state not in ("unknown", "unavailable")

    await hass.services.async_call(
        "select",
        "select_option",
        {"entity_id": "select.rack_a_batch_hold", "option": "held_on"},
        blocking=True,
    )
    assert hass.states.get(planned).state == "unknown"
    plan = hass.states.get("sensor.rack_a_next_planned_action").attributes.get("plan", [])
    assert all(step["service"] != "batch" for step in plan)
