"""Sensors of the small simulated site, read over real Modbus TCP, snapshotted; and the entity
model every platform shares: devices, unique ids, translated names. The harness of these
platform tests is `tests.site_entry.loaded_site`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from homeassistant.const import ATTR_FRIENDLY_NAME, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import snapshot_platform
from syrupy.assertion import SnapshotAssertion

from custom_components.power_allocation import PLATFORMS
from custom_components.power_allocation.binary_sensor import BINARY_SENSORS
from custom_components.power_allocation.const import DOMAIN
from custom_components.power_allocation.select import SELECTS
from custom_components.power_allocation.sensor import SENSORS
from tests.fixtures.modbus_site import ModbusSite
from tests.site_entry import ENTRY_ID, loaded_site

COMPONENT = Path(__file__).parents[1] / "custom_components" / DOMAIN


def strings() -> dict[str, Any]:
    strings: dict[str, Any] = json.loads((COMPONENT / "strings.json").read_text())
    return strings


async def test_sensors(
    hass: HomeAssistant,
    modbus_site: ModbusSite,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
) -> None:
    """Every sensor of every item, after two cycles on mains."""
    async with loaded_site(hass, modbus_site, ["sensor"]) as site:
        await site.cycle(2)
        await snapshot_platform(hass, entity_registry, snapshot, ENTRY_ID)
        # 4 site, 5 per UPS, 3 per PDU (2), 2 per outlet (8), 4 per service (3).
        assert (
            len(er.async_entries_for_config_entry(entity_registry, ENTRY_ID)) == 4 + 5 + 6 + 16 + 12
        )


async def test_devices(
    hass: HomeAssistant,
    modbus_site: ModbusSite,
    device_registry: dr.DeviceRegistry,
    snapshot: SnapshotAssertion,
) -> None:
    """The site is the hub; each UPS, PDU and service hangs off it."""
    async with loaded_site(hass, modbus_site):
        devices = sorted(
            dr.async_entries_for_config_entry(device_registry, ENTRY_ID), key=lambda d: d.name
        )
        assert devices == snapshot
        hub = device_registry.async_get_device(identifiers={(DOMAIN, ENTRY_ID)})
        assert hub is not None
        assert hub.via_device_id is None
        assert {d.name for d in devices if d.via_device_id == hub.id} == {
            "Rack A ups1",
            "Rack A pdu-a",
            "Rack A pdu-b",
            "Rack A network",
            "Rack A db",
            "Rack A batch",
        }
        assert len(devices) == 7


async def test_every_entity_has_its_translated_name(
    hass: HomeAssistant,
    modbus_site: ModbusSite,
    entity_registry: er.EntityRegistry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Each entity is called "<device> <its translated name>", never after its key or nothing."""
    names = strings()["entity"]
    async with loaded_site(hass, modbus_site):
        entries = er.async_entries_for_config_entry(entity_registry, ENTRY_ID)
        assert {e.domain for e in entries} == set(PLATFORMS)
        for entry in entries:
            assert entry.translation_key is not None, entry.entity_id
            template = names[entry.domain][entry.translation_key]["name"]
            outlet = re.search(r"_outlet_(\d+)_", entry.unique_id)
            expected = template.format(outlet=outlet.group(1)) if outlet else template
            device = device_registry.async_get(entry.device_id)
            assert device is not None
            state = hass.states.get(entry.entity_id)
            assert state is not None
            assert state.attributes[ATTR_FRIENDLY_NAME] == f"{device.name} {expected}"


async def test_strings_name_every_translation_key_and_no_other(
    hass: HomeAssistant, modbus_site: ModbusSite, entity_registry: er.EntityRegistry
) -> None:
    """strings.json has an entry per translation key the platforms use (and none unused), a
    state name per option of an enum sensor or a select, and en.json is the same file."""
    entity = strings()["entity"]
    described = {
        "sensor": {d.translation_key for d in SENSORS},
        "binary_sensor": {d.translation_key for d in BINARY_SENSORS},
        "select": {d.translation_key for d in SELECTS},
    }
    async with loaded_site(hass, modbus_site):
        registered: dict[str, set[str | None]] = {}
        for entry in er.async_entries_for_config_entry(entity_registry, ENTRY_ID):
            registered.setdefault(entry.domain, set()).add(entry.translation_key)
    assert {k: v for k, v in registered.items() if k in described} == described
    assert {platform: set(keys) for platform, keys in entity.items()} == registered
    for platform, descriptions in (("sensor", SENSORS), ("select", SELECTS)):
        for description in descriptions:
            if description.options is not None:
                states = entity[platform][description.translation_key]["state"]
                assert set(description.options) == set(states), description.key
    assert json.loads((COMPONENT / "translations" / "en.json").read_text()) == strings()


async def test_unavailable_when_no_device_answers(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    """Every device silent: the cycle fails and every entity, the site's too, goes unavailable."""
    async with loaded_site(hass, modbus_site, ["sensor"]) as site:
        await site.cycle()
        assert site.state("sensor.rack_a_controller_state") == "normal"
        await modbus_site.server.stop()
        await site.cycle()
        assert not site.coordinator.last_update_success
        for entity_id in (
            "sensor.rack_a_controller_state",
            "sensor.rack_a_ups1_state_of_charge",
            "sensor.rack_a_pdu_b_outlet_3_power",
            "sensor.rack_a_batch_allocation",
        ):
            assert site.state(entity_id) == STATE_UNAVAILABLE, entity_id
        assert site.coordinator.unavailable_devices == {"ups1", "pdu-a", "pdu-b"}
