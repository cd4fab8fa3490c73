"""Predictive Power Allocation: keeps the most important services up while the UPS is on battery."""

from __future__ import annotations

from copy import copy
from typing import TYPE_CHECKING, Any

# Home Assistant is imported inside the functions (and for type checking): the simulator and the
# benchmarks import the engine and the drivers through this package, and must not pay seconds of
# Home Assistant start-up.
if TYPE_CHECKING:
    from homeassistant.config_entries import ConfigEntry
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers.typing import ConfigType

    from .coordinator import PowerAllocationCoordinator
    from .topology import SiteTopology

PLATFORMS = ["binary_sensor", "select", "sensor", "switch"]

type PowerAllocationConfigEntry = ConfigEntry[PowerAllocationCoordinator]


def entry_topology(entry: ConfigEntry) -> dict[str, Any]:
    """The site document of an entry: UPS units and broker in data; PDUs, services and the
    planner's settings in options."""
    from .const import CONF_TOPOLOGY
    from .topology import OPTION_KEYS

    return {
        **entry.data.get(CONF_TOPOLOGY, {}),
        "pdus": [],
        "services": [],
        **{key: copy(entry.options[key]) for key in OPTION_KEYS if key in entry.options},
    }


def _with_client_id(entry: ConfigEntry, document: dict[str, Any]) -> dict[str, Any]:
    """The document setup connects with: its broker takes the entry's own MQTT client id (kept
    apart in the entry's data, so that no stored or loaded topology carries it)."""
    from .mqtt_client_id import CONF_MQTT_CLIENT_ID

    if "mqtt" in document and CONF_MQTT_CLIENT_ID in entry.data:
        document["mqtt"] = {**document["mqtt"], "client_id": entry.data[CONF_MQTT_CLIENT_ID]}
    return document


async def async_migrate_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    """1.1 -> 1.2: the entry gets its own random MQTT client id."""
    from .mqtt_client_id import CONF_MQTT_CLIENT_ID, new_client_id

    if entry.version > 1:
        return False
    if entry.minor_version < 2:
        hass.config_entries.async_update_entry(
            entry,
            data={**entry.data, CONF_MQTT_CLIENT_ID: new_client_id()},
            minor_version=2,
        )
    return True


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the actions (they find their site by config entry) and the dashboard card."""
    # The glue pulls in scipy and river, which import submodules with importlib as they load:
    # in the import executor, not in the event loop, where Home Assistant reports it as blocking.
    await hass.async_add_import_executor_job(_import_glue)
    from .card import async_register_card
    from .services import async_setup_services

    async_setup_services(hass)
    await async_register_card(hass)
    return True


def _import_glue() -> None:
    from . import coordinator, services, site_check, sources, topology  # noqa: F401


async def async_setup_entry(hass: HomeAssistant, entry: PowerAllocationConfigEntry) -> bool:
    """Set up a site from a config entry."""
    from homeassistant.exceptions import ConfigEntryError
    from homeassistant.helpers import device_registry as dr
    from homeassistant.helpers import issue_registry as ir

    from .broker_check import async_watch_anonymous_access
    from .const import DOMAIN, ISSUE_TOPOLOGY
    from .coordinator import PowerAllocationCoordinator
    from .engine.model import TopologyError
    from .site_check import async_check_site

    issue_id = f"{ISSUE_TOPOLOGY}_{entry.entry_id}"
    try:
        topology, drivers = await async_check_site(
            hass, _with_client_id(entry, entry_topology(entry))
        )
    except TopologyError as error:
        ir.async_create_issue(
            hass,
            DOMAIN,
            issue_id,
            is_fixable=False,
            severity=ir.IssueSeverity.ERROR,
            translation_key=ISSUE_TOPOLOGY,
            translation_placeholders={"site": entry.title, "error": str(error)},
        )
        raise ConfigEntryError(
            translation_domain=DOMAIN,
            translation_key="broken_topology",
            translation_placeholders={"error": str(error)},
        ) from error
    ir.async_delete_issue(hass, DOMAIN, issue_id)

    # The site is the hub every UPS, PDU and service device hangs off.
    dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id,
        identifiers={(DOMAIN, entry.entry_id)},
        name=entry.title,
        manufacturer="Predictive Power Allocation",
        model="Site",
        entry_type=dr.DeviceEntryType.SERVICE,
    )
    coordinator = PowerAllocationCoordinator(hass, entry, topology, drivers)
    # A failed first refresh unloads the entry, which shuts the coordinator and its drivers down.
    await coordinator.async_config_entry_first_refresh()
    entry.runtime_data = coordinator
    entry.async_on_unload(entry.add_update_listener(_async_reload))
    if topology.mqtt is not None:
        entry.async_on_unload(async_watch_anonymous_access(hass, entry, topology.mqtt, coordinator))
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    _remove_stale_devices(hass, entry, topology)
    return True


def _remove_stale_devices(hass: HomeAssistant, entry: ConfigEntry, topology: SiteTopology) -> None:
    """Devices of UPS units, PDUs and services no longer in the topology."""
    from homeassistant.helpers import device_registry as dr

    from .const import DOMAIN

    site = topology.site
    wanted = {(DOMAIN, entry.entry_id)}
    wanted |= {(DOMAIN, f"{entry.entry_id}_ups_{u.id}") for u in site.ups}
    wanted |= {(DOMAIN, f"{entry.entry_id}_pdu_{p.id}") for p in site.pdus}
    wanted |= {(DOMAIN, f"{entry.entry_id}_service_{s.id}") for s in site.services}
    registry = dr.async_get(hass)
    for device in dr.async_entries_for_config_entry(registry, entry.entry_id):
        if not device.identifiers & wanted:
            registry.async_remove_device(device.id)


async def _async_reload(hass: HomeAssistant, entry: PowerAllocationConfigEntry) -> None:
    await hass.config_entries.async_reload(entry.entry_id)


async def async_unload_entry(hass: HomeAssistant, entry: PowerAllocationConfigEntry) -> bool:
    """Unload a site; its coordinator then saves what it learnt and disconnects its devices."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
