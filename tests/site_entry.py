"""The harness of the tests that run a simulated site in Home Assistant.

`site_entry` makes a config entry of a site (`small_site_entry`: the small site of
tests/fixtures/modbus_site.py, on its Modbus servers); `SiteRun` drives an entry a cycle at a
time, each cycle advancing the simulated site `CYCLE_S` and running the coordinator once on a
clock that follows the site (`site_clock`); `agents_bridge` runs the services' host agents on the
simulator's MQTT bridge; `loaded_site` is the platform tests' harness: the small site with only
some platforms, under a fixed entry id so unique ids and device identifiers are stable. A pytest
plugin (tests/conftest.py), for its fixture `small_site_clock`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.power_allocation import PLATFORMS
from custom_components.power_allocation import coordinator as coordinator_module
from custom_components.power_allocation.const import CONF_SITE_NAME, CONF_TOPOLOGY, DOMAIN
from custom_components.power_allocation.coordinator import PowerAllocationCoordinator
from custom_components.power_allocation.drivers.mqtt import MqttDriver
from simulator.modbus_server import SiteModbusServer
from simulator.mqtt_bridge import MqttBridge
from simulator.site import SimulatedSite
from tests.agent_secrets import agent_secret
from tests.fixtures.modbus_site import HOST, SMALL_SITE, ModbusSite
from tests.fixtures.mqtt_broker import Mosquitto

EPOCH_S = 1_800_000_000.0
CYCLE_S = 10.0
ENTRY_ID = "01JRACKA0000000000000000AA"
APPLY_TIMEOUT_S = 10.0
UPS_RATINGS = ("id", "rated_w", "capacity_wh", "runtime_full_load_s")
# The small site's outlets: the low-priority batch's, and those of what is critical.
BATCH_OUTLET = "pdu-b/3"
CRITICAL_OUTLETS = ("pdu-a/1", "pdu-a/2", "pdu-b/2")


def modbus_source(modbus_site: ModbusSite, device_id: str, profile: str) -> dict[str, Any]:
    """A Modbus source pointing at one of the simulator's servers."""
    return {
        "kind": "modbus",
        "host": HOST,
        "port": modbus_site.server.ports[device_id],
        "unit_id": 1,
        "profile": profile,
        "timeout_s": 1.0,
    }


def ups_item(scenario_ups: Mapping[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    """A scenario's UPS as a topology item: its ratings, read from `source`."""
    return {**{k: scenario_ups[k] for k in UPS_RATINGS}, "source": dict(source)}


def site_entry(
    title: str,
    scenario: Mapping[str, Any],
    *,
    ups: list[dict[str, Any]],
    pdus: list[dict[str, Any]],
    mqtt: Mapping[str, Any] | None = None,
    agents: bool = False,
    entry_id: str | None = None,
) -> MockConfigEntry:
    """An entry for the site of a simulator `scenario`: its services as they are there (the
    simulated load left out), with host agents if `agents`; `ups` and `pdus` as topology items.
    Its unique id is the title in snake case."""
    topology: dict[str, Any] = {"ups": ups}
    if mqtt is not None:
        topology["mqtt"] = dict(mqtt)
    services = [
        {
            **{k: v for k, v in s.items() if k != "load"},
            "agent": agents,
            **({"agent_secret": agent_secret(s["id"])} if agents else {}),
        }
        for s in scenario["services"]
    ]
    return MockConfigEntry(
        domain=DOMAIN,
        title=title,
        unique_id=title.lower().replace(" ", "_"),
        data={CONF_SITE_NAME: title, CONF_TOPOLOGY: topology},
        options={"pdus": pdus, "services": services},
        entry_id=entry_id,
    )


def small_site_entry(
    modbus_site: ModbusSite,
    *,
    mqtt: dict[str, Any] | None = None,
    agents: bool = False,
    entry_id: str | None = None,
) -> MockConfigEntry:
    """The small site, every device on Modbus TCP; with `agents`, services have host agents."""
    return site_entry(
        "Rack A",
        SMALL_SITE,
        ups=[
            ups_item(u, modbus_source(modbus_site, u["id"], "apc_smart_ups"))
            for u in SMALL_SITE["ups"]
        ],
        pdus=[
            {**p, "source": modbus_source(modbus_site, p["id"], "generic_pdu")}
            for p in SMALL_SITE["pdus"]
        ],
        mqtt=mqtt,
        agents=agents,
        entry_id=entry_id,
    )


@contextmanager
def site_clock(site: SimulatedSite) -> Iterator[None]:
    """Every coordinator's clock follows the simulated site, from its first refresh on."""
    now = SimpleNamespace(utcnow=lambda: datetime.fromtimestamp(EPOCH_S + site.time_s, UTC))
    with patch.object(coordinator_module, "dt_util", now):
        yield


@pytest.fixture
def small_site_clock(modbus_site: ModbusSite) -> Iterator[None]:
    """Every coordinator's clock follows the small simulated site (`site_clock`)."""
    with site_clock(modbus_site.site):
        yield


@asynccontextmanager
async def agents_bridge(
    site: SimulatedSite, broker: Mosquitto, profile: str, prefix: str
) -> AsyncIterator[MqttBridge]:
    """The simulator's MQTT bridge for `site` (its devices speaking `profile`), publishing only
    when asked; each agent checks commands with its `agent_secret`."""
    secrets = {s.id: agent_secret(s.id) for s in site.scenario.site.services}
    bridge = MqttBridge(
        site, HOST, broker.port, profile, prefix, interval_s=0, agent_secrets=secrets
    )
    await bridge.start()
    try:
        yield bridge
    finally:
        await bridge.stop()


def wait_applied(driver: MqttDriver, topics: list[str], before: int) -> None:
    """Until the driver has applied the round a bridge just published on `topics` (blocking:
    run it in an executor); `before` is its applied count from before the round."""
    count = before + sum(1 for topic in topics if topic in driver.subscriptions)
    deadline = time.monotonic() + APPLY_TIMEOUT_S
    while driver.counts().applied < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"applied {driver.counts().applied} of {count} messages")
        time.sleep(0.005)


class SiteRun:
    """A config entry of a simulated site in Home Assistant, driven one cycle at a time.

    `server` serves the site over Modbus TCP, `bridge` publishes it over MQTT (the host agents at
    least); a cycle runs once what the bridge published for the new state has reached the
    coordinator's MQTT driver.
    """

    def __init__(
        self,
        hass: HomeAssistant,
        entry: MockConfigEntry,
        simulated: SimulatedSite,
        *,
        server: SiteModbusServer | None = None,
        bridge: MqttBridge | None = None,
    ) -> None:
        self.hass = hass
        self.entry = entry
        self.simulated = simulated
        self.server = server
        self.bridge = bridge
        entry.add_to_hass(hass)

    @classmethod
    def small(
        cls,
        hass: HomeAssistant,
        modbus_site: ModbusSite,
        entry: MockConfigEntry | None = None,
        *,
        bridge: MqttBridge | None = None,
    ) -> SiteRun:
        """The small site on its Modbus servers (`small_site_entry` unless `entry` is given)."""
        return cls(
            hass,
            entry or small_site_entry(modbus_site),
            modbus_site.site,
            server=modbus_site.server,
            bridge=bridge,
        )

    @property
    def coordinator(self) -> PowerAllocationCoordinator:
        coordinator: PowerAllocationCoordinator = self.entry.runtime_data
        return coordinator

    async def set_up(self) -> None:
        assert await self.hass.config_entries.async_setup(self.entry.entry_id)
        await self.hass.async_block_till_done()
        assert self.entry.state is ConfigEntryState.LOADED

    async def unload(self) -> None:
        assert await self.hass.config_entries.async_unload(self.entry.entry_id)
        await self.hass.async_block_till_done()

    def advance(self, dt_s: float) -> None:
        """Advance the site, and serve its new state over Modbus."""
        self.simulated.advance(dt_s)
        if self.server is not None:
            self.server.refresh()

    async def cycle(self, count: int = 1) -> None:
        for _ in range(count):
            self.advance(CYCLE_S)
            if self.bridge is not None:
                driver = self.coordinator.drivers.drivers["mqtt"]
                assert isinstance(driver, MqttDriver)
                before = driver.counts().applied
                topics = self.bridge.publish()
                await self.hass.async_add_executor_job(wait_applied, driver, topics, before)
            await self.coordinator.async_refresh()
            await self.hass.async_block_till_done()

    async def cycle_until(self, done: Callable[[], bool], limit: int = 30) -> int:
        """Cycles until `done()`; how many it took."""
        for count in range(1, limit + 1):
            await self.cycle()
            if done():
                return count
        raise AssertionError(f"not done within {limit} cycles")

    def outlet_on(self, outlet_id: str) -> bool:
        """The relay as the simulator has it (not as Home Assistant last read it)."""
        return self.simulated.snapshot().outlets[outlet_id].is_on

    def state(self, entity_id: str) -> str:
        state = self.hass.states.get(entity_id)
        assert state is not None, entity_id
        return state.state

    async def call(self, action: str, **data: Any) -> Any:
        """Call an action of this site; its response, if it has one."""
        response = await self.hass.services.async_call(
            DOMAIN,
            action,
            {"config_entry_id": self.entry.entry_id, **data},
            blocking=True,
            return_response=action in ("allocate", "simulate_outage", "load_topology"),
        )
        await self.hass.async_block_till_done()
        return response


@asynccontextmanager
async def loaded_site(
    hass: HomeAssistant,
    modbus_site: ModbusSite,
    platforms: Iterable[str] = PLATFORMS,
    broker: Mosquitto | None = None,
    login: Mapping[str, str] | None = None,
) -> AsyncIterator[SiteRun]:
    """The small site with only `platforms` set up; unloaded at the end. With a `broker` (and
    the `login` it is given), every service has a host agent: the simulator's, on its bridge."""
    mqtt = None
    if broker is not None:
        mqtt = {"host": HOST, "port": broker.port, "base_topic": "sim", **(login or {})}
    entry = small_site_entry(modbus_site, mqtt=mqtt, agents=broker is not None, entry_id=ENTRY_ID)
    async with _bridge_if(modbus_site.site, broker) as bridge:
        run = SiteRun.small(hass, modbus_site, entry, bridge=bridge)
        run.advance(1.0)
        with (
            patch("custom_components.power_allocation.PLATFORMS", list(platforms)),
            site_clock(modbus_site.site),
        ):
            await run.set_up()
            yield run
            await run.unload()


@asynccontextmanager
async def _bridge_if(
    site: SimulatedSite, broker: Mosquitto | None
) -> AsyncIterator[MqttBridge | None]:
    if broker is None:
        yield None
        return
    async with agents_bridge(site, broker, "nut", "sim") as bridge:
        yield bridge
