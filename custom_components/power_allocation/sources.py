"""The drivers of one site, built from its topology, behind one read and one command router.

Modbus devices share one `ModbusDriver` (each device keeps its own connection and backoff); MQTT
sources and host agents share one `MqttDriver` on the site's broker; entity sources share one
`EntitySource`. A command goes to the driver that owns its target, and to no other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from homeassistant.core import HomeAssistant

from .drivers.interface import (
    Command,
    CommandKind,
    CommandResult,
    Driver,
    OutletReading,
    TelemetrySnapshot,
    UpsReading,
)
from .drivers.modbus import ModbusDevice, ModbusDriver
from .drivers.mqtt import MqttDriver, MqttDriverConfig
from .drivers.mqtt_profile import MqttDevice, builtin_profiles
from .drivers.mqtt_tls import CA_CERT, CLIENT_CERT, CLIENT_KEY, TlsOptions
from .drivers.plausibility import ups_max_power_w
from .drivers.profile import PduProfile, UpsProfile, load_profile
from .entity_source import EntitySource
from .mqtt_client_id import new_client_id
from .topology import SOURCE_ENTITIES, SOURCE_MODBUS, SOURCE_MQTT, SiteTopology

AGENT_PROFILE = "power_allocation_agent"
_AGENT_KINDS = frozenset(
    {CommandKind.AGENT_SHUTDOWN, CommandKind.AGENT_START, CommandKind.AGENT_THROTTLE}
)


@dataclass(slots=True)
class SiteDrivers:
    """Every driver of a site and who owns which target."""

    drivers: dict[str, Driver] = field(default_factory=dict)  # "modbus", "mqtt", "entities"
    owner: dict[str, str] = field(default_factory=dict)  # UPS, outlet or agent target -> driver

    async def start(self) -> None:
        """Start every driver; a device that is down is retried by the drivers, not raised."""
        await asyncio.gather(*(driver.start() for driver in self.drivers.values()))

    async def stop(self) -> None:
        """Stop every driver."""
        await asyncio.gather(*(driver.stop() for driver in self.drivers.values()))

    @property
    def broker_connected(self) -> bool:
        """Whether the site's MQTT broker connection is up, subscriptions taken."""
        driver = self.drivers.get(SOURCE_MQTT)
        return isinstance(driver, MqttDriver) and driver.connected

    @property
    def broker_connections(self) -> int:
        """How many times the site's MQTT broker has accepted the connection (0 without one)."""
        driver = self.drivers.get(SOURCE_MQTT)
        return driver.connections if isinstance(driver, MqttDriver) else 0

    async def async_wait_connected(self, timeout_s: float) -> None:
        """Give the MQTT driver (if any) up to `timeout_s` to connect and subscribe."""
        driver = self.drivers.get(SOURCE_MQTT)
        if isinstance(driver, MqttDriver):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await driver.wait_connected()

    async def read(self, monotonic_s: float) -> TelemetrySnapshot:
        """One snapshot of the whole site, read from every driver at once."""
        snapshots = await asyncio.gather(
            *(driver.read(monotonic_s) for driver in self.drivers.values())
        )
        ups: dict[str, UpsReading] = {}
        outlets: dict[str, OutletReading] = {}
        service_power_w: dict[str, float] = {}
        for name, snapshot in zip(self.drivers, snapshots, strict=True):
            ups.update({k: v for k, v in snapshot.ups.items() if self.owner.get(k) == name})
            outlets.update({k: v for k, v in snapshot.outlets.items() if self.owner.get(k) == name})
            service_power_w.update(snapshot.service_power_w)
        return TelemetrySnapshot(monotonic_s, ups, outlets, service_power_w)

    def rejected_readings(self) -> dict[str, Any]:
        """What the drivers refused since start, for diagnostics: values per device that could
        not be readings (above the device's maximum, impossible) and MQTT messages per source
        that could not be parsed."""
        implausible: dict[str, int] = {}
        malformed: dict[str, int] = {}
        for driver in self.drivers.values():
            if isinstance(driver, ModbusDriver):
                implausible.update(driver.implausible_counts)
            elif isinstance(driver, MqttDriver):
                counts = driver.counts()
                implausible.update(counts.implausible)
                malformed.update(counts.malformed)
        return {"implausible": implausible, "malformed": malformed}

    async def execute(self, command: Command) -> CommandResult:
        """Route one command to the driver that owns its target."""
        key = f"agent:{command.target}" if command.kind in _AGENT_KINDS else command.target
        name = self.owner.get(key)
        if name is None:
            return CommandResult(command, ok=False, error=f"no device takes {command.target!r}")
        return await self.drivers[name].execute(command)


def mqtt_tls_options(broker: Mapping[str, Any]) -> TlsOptions | None:
    """TLS to the site's broker as configured, or None."""
    if not broker.get("tls"):
        return None
    return TlsOptions(
        ca_pem=broker.get(CA_CERT), cert_pem=broker.get(CLIENT_CERT), key_pem=broker.get(CLIENT_KEY)
    )


def mqtt_driver_config(
    broker: Mapping[str, Any],
    devices: tuple[MqttDevice, ...],
    agent_secrets: Mapping[str, str],
) -> MqttDriverConfig:
    """The MQTT driver's settings for the site's broker. A broker without the entry's client id
    (a document only being checked) gets a random one: never a predictable one."""
    return MqttDriverConfig(
        host=broker["host"],
        port=broker["port"],
        username=broker.get("username"),
        password=broker.get("password"),
        tls=mqtt_tls_options(broker),
        base_topic=broker["base_topic"],
        client_id=broker.get("client_id") or new_client_id(),
        devices=devices,
        agent_secrets=agent_secrets,
    )


def _read_profiles(topology: SiteTopology) -> dict[str, UpsProfile | PduProfile]:
    """Every Modbus profile the site names, and the built-in MQTT ones (reads files)."""
    builtin_profiles()
    names = {
        source["profile"]
        for source in (*topology.ups_sources.values(), *topology.pdu_sources.values())
        if source["kind"] == SOURCE_MODBUS
    }
    return {name: load_profile(name) for name in names}


def _build(
    hass: HomeAssistant, topology: SiteTopology, profiles: Mapping[str, UpsProfile | PduProfile]
) -> SiteDrivers:
    """The drivers (in the event loop: pymodbus clients bind to it)."""
    site = topology.site
    result = SiteDrivers()
    modbus_devices: list[ModbusDevice] = []
    mqtt_devices: list[MqttDevice] = []
    agent_secrets: dict[str, str] = {}
    entity_ups: dict[str, Mapping[str, Any]] = {}
    entity_outlets: dict[str, Mapping[str, Any]] = {}

    def modbus(
        device_id: str,
        source: Mapping[str, Any],
        outlet_count: int = 0,
        max_power_w: float | None = None,
    ) -> None:
        modbus_devices.append(
            ModbusDevice(
                device_id=device_id,
                host=source["host"],
                profile=profiles[source["profile"]],
                port=source["port"],
                unit_id=source["unit_id"],
                outlet_count=outlet_count,
                timeout_s=source["timeout_s"],
                max_power_w=max_power_w,
            )
        )

    # A UPS's output reading above what its rating allows for a moment is not a reading.
    rated_w = {u.id: u.rated_w for u in site.ups}

    for ups_id, source in topology.ups_sources.items():
        result.owner[ups_id] = source["kind"]
        match source["kind"]:
            case "modbus":
                modbus(ups_id, source, max_power_w=ups_max_power_w(rated_w[ups_id]))
            case "mqtt":
                mqtt_devices.append(
                    MqttDevice(
                        source["profile"],
                        ups_id,
                        source["variables"],
                        max_power_w=ups_max_power_w(rated_w[ups_id]),
                    )
                )
            case "entities":
                entity_ups[ups_id] = source
    for pdu in site.pdus:
        source = topology.pdu_sources[pdu.id]
        for outlet in pdu.outlets:
            result.owner[outlet.id] = source["kind"]
        match source["kind"]:
            case "modbus":
                modbus(pdu.id, source, len(pdu.outlets))
            case "mqtt":
                for number, variables in source["outlets"].items():
                    mqtt_devices.append(
                        MqttDevice(source["profile"], f"{pdu.id}/{number}", variables)
                    )
            case "entities":
                for number, entities in source["outlets"].items():
                    entity_outlets[f"{pdu.id}/{number}"] = entities
    for service_id, controls in topology.controls.items():
        if controls.agent:
            result.owner[f"agent:{service_id}"] = SOURCE_MQTT
            mqtt_devices.append(MqttDevice(AGENT_PROFILE, service_id, {}))
            if controls.agent_secret is not None:
                agent_secrets[service_id] = controls.agent_secret

    if modbus_devices:
        result.drivers[SOURCE_MODBUS] = ModbusDriver(modbus_devices)
    if mqtt_devices:
        assert topology.mqtt is not None  # parse_topology insists on a broker
        result.drivers[SOURCE_MQTT] = MqttDriver(
            mqtt_driver_config(topology.mqtt, tuple(mqtt_devices), agent_secrets)
        )
    if entity_ups or entity_outlets:
        result.drivers[SOURCE_ENTITIES] = EntitySource(hass, entity_ups, entity_outlets, rated_w)
    return result


async def async_build_drivers(hass: HomeAssistant, topology: SiteTopology) -> SiteDrivers:
    """The site's drivers, not yet started (profile files are read in an executor)."""
    profiles = await hass.async_add_executor_job(_read_profiles, topology)
    return _build(hass, topology, profiles)
