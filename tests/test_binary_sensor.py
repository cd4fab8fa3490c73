"""Binary sensors of the small simulated site: on battery, low battery, overload predicted."""

from __future__ import annotations

from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import snapshot_platform
from syrupy.assertion import SnapshotAssertion

from tests.fixtures.modbus_site import ModbusSite
from tests.site_entry import ENTRY_ID, loaded_site

ON_BATTERY = "binary_sensor.rack_a_ups1_on_battery"
LOW_BATTERY = "binary_sensor.rack_a_ups1_low_battery"
OVERLOAD_B = "binary_sensor.rack_a_pdu_b_overload_predicted"


async def test_binary_sensors(
    hass: HomeAssistant,
    modbus_site: ModbusSite,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
) -> None:
    """Every binary sensor, on mains with the PDUs well under their limits."""
    async with loaded_site(hass, modbus_site, ["binary_sensor"]) as site:
        await site.cycle(2)
        await snapshot_platform(hass, entity_registry, snapshot, ENTRY_ID)
        assert len(er.async_entries_for_config_entry(entity_registry, ENTRY_ID)) == 2 + 2


async def test_on_battery_then_low_battery(hass: HomeAssistant, modbus_site: ModbusSite) -> None:
    """Mains fails: on battery at the next cycle; the battery drains: low battery."""
    async with loaded_site(hass, modbus_site, ["binary_sensor"]) as site:
        await site.cycle()
        assert (site.state(ON_BATTERY), site.state(LOW_BATTERY)) == (STATE_OFF, STATE_OFF)
        modbus_site.site.set_mains(False)
        await site.cycle()
        assert (site.state(ON_BATTERY), site.state(LOW_BATTERY)) == (STATE_ON, STATE_OFF)
        # Three times the site's draw on the critical db drains the battery in minutes.
        modbus_site.site.step_load("db", 900.0, 3600.0)
        for _ in range(60):
            await site.cycle()
            if site.state(LOW_BATTERY) == STATE_ON:
                break
        assert site.state(LOW_BATTERY) == STATE_ON
        assert site.state(ON_BATTERY) == STATE_ON
        modbus_site.site.set_mains(True)
        await site.cycle()
        assert site.state(ON_BATTERY) == STATE_OFF


async def test_overload_predicted(hass: HomeAssistant, modbus_site: ModbusSite) -> None:
    """A load stepping towards a PDU's limit: the guard's level shows on its binary sensor."""
    async with loaded_site(hass, modbus_site, ["binary_sensor"]) as site:
        await site.cycle(3)
        assert site.state(OVERLOAD_B) == STATE_OFF
        assert hass.states.get(OVERLOAD_B).attributes["level"] == "normal"
        modbus_site.site.step_load("batch", 1300.0, 3600.0)
        for _ in range(10):
            await site.cycle()
            if site.state(OVERLOAD_B) == STATE_ON:
                break
        assert site.state(OVERLOAD_B) == STATE_ON
        assert hass.states.get(OVERLOAD_B).attributes["level"] in ("warning", "shedding")
        assert site.state("binary_sensor.rack_a_pdu_a_overload_predicted") == STATE_OFF
