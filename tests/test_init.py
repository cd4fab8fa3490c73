"""The integration sets up against the simulated site over real Modbus TCP, and unloads."""

from __future__ import annotations

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er

from tests.fixtures.modbus_site import ModbusSite
from tests.site_entry import small_site_entry


async def test_setup_and_unload(hass: HomeAssistant, modbus_site: ModbusSite) -> None:
    entry = small_site_entry(modbus_site)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    entities = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    for e in entities:
        print(e.entity_id, hass.states.get(e.entity_id).state)
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.NOT_LOADED
