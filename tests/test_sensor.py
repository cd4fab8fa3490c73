"""Sensors of the small simulated site, read over real Modbus TCP, snapshotted; and the entity
model every platform shares: devices, unique ids, translated names.

`loaded_site` is the harness of the platform tests (binary sensor, switch, select): it sets the
site up with a fixed entry id, so unique ids and device identifiers are stable, and with the
coordinator's clock following the simulated site, so every cycle sees the same time.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import ATTR_FRIENDLY_NAME, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, snapshot_platform
from pytest_homeassistant_custom_component.syrupy import HomeAssistantSnapshotExtension
from syrupy.assertion import SnapshotAssertion

from custom_components.power_allocation import PLATFORMS
from custom_components.power_allocation.binary_sensor import BINARY_SENSORS
from custom_components.power_allocation.const import DOMAIN
from custom_components.power_allocation.coordinator import PowerAllocationCoordinator
from custom_components.power_allocation.drivers.mqtt import MqttDriver
from custom_components.power_allocation.select import SELECTS
from custom_components.power_allocation.sensor import SENSORS
from simulator.mqtt_bridge import MqttBridge
from tests.fixtures.modbus_site import HOST, ModbusSite
from tests.fixtures.mqtt_broker import Mosquitto
from tests.site_entry import small_site_entry

ENTRY_ID = "01JRACKA0000000000000000AA"
EPOCH_S = 1_800_000_000.0
CYCLE_S = 10.0
MQTT_DELIVERY_TIMEOUT_S = 10.0
COMPONENT = Path(__file__).parents[1] / "custom_components" / DOMAIN


@dataclass
class LoadedSite:
    """The small site, set up in Home Assistant; `cycle` runs the coordinator as time passes."""

    hass: HomeAssistant
    modbus_site: ModbusSite
    entry: MockConfigEntry
    bridge: MqttBridge | None = None  # the simulated hosts' agents, when services have them

    @property
    def coordinator(self) -> PowerAllocationCoordinator:
        coordinator: PowerAllocationCoordinator = self.entry.runtime_data
        return coordinator

    def advance(self, dt_s: float) -> None:
        self.modbus_site.site.advance(dt_s)
        self.modbus_site.server.refresh()

    async def cycle(self, count: int = 1) -> None:
        """`count` cycles, each after the simulated site has run for a cycle's time (and, with
        agents, once the coordinator's MQTT driver has had what they published)."""
        for _ in range(count):
            self.advance(CYCLE_S)
            if self.bridge is not None:
                driver = self.coordinator.drivers.drivers["mqtt"]
                assert isinstance(driver, MqttDriver)
                before = driver.counts().applied
                published = self.bridge.publish()
                wanted = before + sum(1 for t in published if t in driver.subscriptions)
                await self.hass.async_add_executor_job(_wait_applied, driver, wanted)
            await self.coordinator.async_refresh()
            await self.hass.async_block_till_done()

    def state(self, entity_id: str) -> str:
        state = self.hass.states.get(entity_id)
        assert state is not None, entity_id
        return state.state

    def outlet_on(self, outlet_id: str) -> bool:
        """The relay as the simulator has it (not as Home Assistant last read it)."""
        return self.modbus_site.site.snapshot().outlets[outlet_id].is_on


def _wait_applied(driver: MqttDriver, count: int) -> None:
    """Until the driver has applied `count` messages (it reads them on paho's thread)."""
    deadline = time.monotonic() + MQTT_DELIVERY_TIMEOUT_S
    while driver.counts().applied < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"applied {driver.counts().applied} of {count} messages")
        time.sleep(0.005)


@asynccontextmanager
async def loaded_site(
    hass: HomeAssistant,
    modbus_site: ModbusSite,
    platforms: Iterable[str] = PLATFORMS,
    broker: Mosquitto | None = None,
    login: Mapping[str, str] | None = None,
) -> AsyncIterator[LoadedSite]:
    """The small site with only `platforms` set up; unloaded at the end. With a `broker` (and
    the `login` it is given), every service has a host agent: the simulator's, on its bridge."""
    mqtt = None
    if broker is not None:
        mqtt = {"host": HOST, "port": broker.port, "base_topic": "sim", **(login or {})}
    small = small_site_entry(modbus_site, mqtt=mqtt, agents=broker is not None)
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=small.title,
        unique_id=small.unique_id,
        data=small.data,
        options=small.options,
        entry_id=ENTRY_ID,
    )
    entry.add_to_hass(hass)
    site = modbus_site.site
    init = PowerAllocationCoordinator.__init__

    def init_following_the_site(coordinator: PowerAllocationCoordinator, *args: Any) -> None:
        init(coordinator, *args)
        coordinator.clock = lambda: EPOCH_S + site.time_s

    bridge = None
    if broker is not None:
        bridge = MqttBridge(site, HOST, broker.port, "nut", "sim", interval_s=0)
        await bridge.start()
    loaded = LoadedSite(hass, modbus_site, entry, bridge)
    loaded.advance(1.0)
    try:
        with (
            patch("custom_components.power_allocation.PLATFORMS", list(platforms)),
            patch.object(PowerAllocationCoordinator, "__init__", init_following_the_site),
        ):
            assert await hass.config_entries.async_setup(entry.entry_id)
            await hass.async_block_till_done()
            assert entry.state is ConfigEntryState.LOADED
            yield loaded
            assert await hass.config_entries.async_unload(entry.entry_id)
            await hass.async_block_till_done()
    finally:
        if bridge is not None:
            await bridge.stop()


def ha_snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Snapshots that leave out ids and times (the plugin's own `snapshot` fixture loses to
    syrupy's here)."""
    return snapshot.use_extension(HomeAssistantSnapshotExtension)


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
        await snapshot_platform(hass, entity_registry, ha_snapshot(snapshot), ENTRY_ID)
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
        assert devices == ha_snapshot(snapshot)
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
