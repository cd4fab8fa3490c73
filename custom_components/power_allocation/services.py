"""Actions: allocate, simulate an outage, shed / restore / hold / release, priorities, topology.

Every action names its site by config entry; every call is validated, and a bad one raises
`ServiceValidationError` with a message that says what is wrong. What changes what runs or the
site itself (shed, restore, hold, release, tiers, restore all, load a topology) is for
administrators: a call from any other user raises `Unauthorized`. What only reads (`allocate`,
whose cycle is the one the site runs every 10 s anyway, and `simulate_outage`) is open.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import voluptuous as vol
from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import ServiceValidationError, Unauthorized, UnknownUser
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.service import async_register_admin_service

from . import entry_topology
from .const import ATTR_SERVICE, CONF_TOPOLOGY, DOMAIN
from .drivers.bounded_yaml import MAX_TEXT_CHARS
from .engine.model import TIERS_MOST_IMPORTANT_FIRST, Priority, TopologyError
from .site_check import async_check_site
from .topology import OPTION_KEYS, load_yaml_document

if TYPE_CHECKING:
    from .coordinator import PowerAllocationCoordinator

SERVICE_ALLOCATE = "allocate"
SERVICE_SIMULATE_OUTAGE = "simulate_outage"
SERVICE_SHED = "shed_service"
SERVICE_RESTORE = "restore_service"
SERVICE_HOLD = "hold_service"
SERVICE_RELEASE = "release_service"
SERVICE_SET_PRIORITY = "set_priority"
SERVICE_RESTORE_ALL = "restore_all"
SERVICE_LOAD_TOPOLOGY = "load_topology"

ATTR_CONFIG_ENTRY_ID = "config_entry_id"
ATTR_DRY_RUN = "dry_run"
ATTR_DURATION = "duration"
ATTR_STATE = "state"
ATTR_PRIORITY = "priority"
ATTR_TOPOLOGY = "topology"

_SITE: dict[vol.Marker, Any] = {vol.Required(ATTR_CONFIG_ENTRY_ID): cv.string}
_SERVICE: dict[vol.Marker, Any] = {**_SITE, vol.Required(ATTR_SERVICE): cv.string}
# Up to a week: beyond that the outage prior has nothing to say.
MAX_SIMULATED_MINUTES = 7 * 24 * 60


def _entry(hass: HomeAssistant, call: ServiceCall) -> ConfigEntry:
    entry_id = call.data[ATTR_CONFIG_ENTRY_ID]
    entry = hass.config_entries.async_get_entry(entry_id)
    if entry is None or entry.domain != DOMAIN:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="unknown_site",
            translation_placeholders={"entry_id": entry_id},
        )
    return entry


def _coordinator(hass: HomeAssistant, call: ServiceCall) -> PowerAllocationCoordinator:
    entry = _entry(hass, call)
    if entry.state is not ConfigEntryState.LOADED:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="site_not_loaded",
            translation_placeholders={"site": entry.title},
        )
    coordinator: PowerAllocationCoordinator = entry.runtime_data
    return coordinator


def _service_id(coordinator: PowerAllocationCoordinator, service_id: str | None) -> str:
    site = coordinator.control.site
    if service_id not in site.service_by_id:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="unknown_service",
            translation_placeholders={
                "service": str(service_id),
                "services": ", ".join(site.service_by_id),
            },
        )
    return service_id


async def async_hold(
    coordinator: PowerAllocationCoordinator, service_id: str | None, on: bool | None
) -> None:
    """Hold a service on or off (None releases it), then run a cycle so it takes effect."""
    sid = _service_id(coordinator, service_id)
    async with coordinator.lock:
        try:
            coordinator.control.decider.hold(sid, on)
        except ValueError as error:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="hold_conflict",
                translation_placeholders={"error": str(error)},
            ) from error
    await coordinator.async_refresh()


def _admin_only(
    hass: HomeAssistant, handler: Callable[[ServiceCall], Coroutine[Any, Any, ServiceResponse]]
) -> Callable[[ServiceCall], Coroutine[Any, Any, ServiceResponse]]:
    """`async_register_admin_service`'s check, for an action with a response: the Home
    Assistant this integration supports (2025.4) drops an admin action's response."""

    async def admin_handler(call: ServiceCall) -> ServiceResponse:
        if call.context.user_id:
            user = await hass.auth.async_get_user(call.context.user_id)
            if user is None:
                raise UnknownUser(context=call.context)
            if not user.is_admin:
                raise Unauthorized(context=call.context)
        return await handler(call)

    return admin_handler


async def async_set_priority(
    coordinator: PowerAllocationCoordinator, service_id: str | None, priority: Priority
) -> None:
    """Change a service's tier from now on, then run a cycle."""
    sid = _service_id(coordinator, service_id)
    async with coordinator.lock:
        coordinator.control.decider.set_priority(sid, priority)
    await coordinator.async_refresh()


def async_setup_services(hass: HomeAssistant) -> None:
    """Register every action of the integration."""

    async def allocate_now(call: ServiceCall) -> ServiceResponse:
        coordinator = _coordinator(hass, call)
        if not call.data[ATTR_DRY_RUN]:
            await coordinator.async_refresh()
        allocation = await coordinator.async_run_engine(coordinator.control.decider.allocate_now)
        return {
            "optimal": allocation.optimal,
            "method": allocation.method,
            "within_limits": allocation.within_limits,
            "decisions": {
                sid: {
                    "state": d.state.value,
                    "draw_w": round(d.draw_w, 1),
                    "cap_w": d.cap_w,
                    "reason": d.reason,
                }
                for sid, d in allocation.decisions.items()
            },
            "node_load_w": {n: round(w, 1) for n, w in allocation.node_load_w.items()},
        }

    async def simulate_outage(call: ServiceCall) -> ServiceResponse:
        coordinator = _coordinator(hass, call)
        duration_s = call.data[ATTR_DURATION] * 60.0
        now_s = coordinator.clock()
        return await coordinator.async_run_engine(
            coordinator.control.simulate_outage, now_s, duration_s
        )

    async def shed(call: ServiceCall) -> None:
        await async_hold(_coordinator(hass, call), call.data[ATTR_SERVICE], False)

    async def release(call: ServiceCall) -> None:
        await async_hold(_coordinator(hass, call), call.data[ATTR_SERVICE], None)

    async def hold_service(call: ServiceCall) -> None:
        on = call.data[ATTR_STATE] == "on"
        await async_hold(_coordinator(hass, call), call.data[ATTR_SERVICE], on)

    async def set_priority(call: ServiceCall) -> None:
        coordinator = _coordinator(hass, call)
        await async_set_priority(
            coordinator, call.data[ATTR_SERVICE], Priority(call.data[ATTR_PRIORITY])
        )

    async def restore_all(call: ServiceCall) -> None:
        coordinator = _coordinator(hass, call)
        async with coordinator.lock:
            coordinator.control.decider.release_all()
        await coordinator.async_refresh()

    async def load_topology(call: ServiceCall) -> ServiceResponse:
        # Any site, loaded or not: this is how a site whose stored topology setup refuses is
        # repaired.
        entry = _entry(hass, call)
        try:
            document = load_yaml_document(call.data[ATTR_TOPOLOGY])
            # What the YAML leaves out (the UPS units, the broker, the planner's settings)
            # stays as configured.
            configured = entry_topology(entry)
            for key in ("ups", "mqtt", "planner"):
                if key not in document and key in configured:
                    document[key] = configured[key]
            # Checked as setup checks it: nothing is stored that setup would refuse.
            topology, _drivers = await async_check_site(hass, document)
            checked = topology.document
        except TopologyError as error:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="invalid_topology",
                translation_placeholders={"error": str(error)},
            ) from error
        site_part: dict[str, Any] = {"ups": checked["ups"]}
        if "mqtt" in checked:
            site_part["mqtt"] = checked["mqtt"]
        # A loaded entry reloads with the new topology (its update listener); one that failed
        # to set up has no listener, and is set up anew here.
        hass.config_entries.async_update_entry(
            entry,
            data={**entry.data, CONF_TOPOLOGY: site_part},
            options={key: checked[key] for key in OPTION_KEYS if key in checked},
        )
        if entry.state is not ConfigEntryState.LOADED:
            hass.config_entries.async_schedule_reload(entry.entry_id)
        return {
            "ups": len(checked["ups"]),
            "pdus": len(checked["pdus"]),
            "services": len(checked["services"]),
        }

    hass.services.async_register(
        DOMAIN,
        SERVICE_ALLOCATE,
        allocate_now,
        schema=vol.Schema({**_SITE, vol.Optional(ATTR_DRY_RUN, default=False): cv.boolean}),
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_SIMULATE_OUTAGE,
        simulate_outage,
        schema=vol.Schema(
            {
                **_SITE,
                vol.Required(ATTR_DURATION): vol.All(
                    vol.Coerce(float), vol.Range(min=0.1, max=MAX_SIMULATED_MINUTES)
                ),
            }
        ),
        supports_response=SupportsResponse.ONLY,
    )
    service_schema = vol.Schema(_SERVICE)
    async_register_admin_service(hass, DOMAIN, SERVICE_SHED, shed, schema=service_schema)
    async_register_admin_service(hass, DOMAIN, SERVICE_RESTORE, release, schema=service_schema)
    async_register_admin_service(hass, DOMAIN, SERVICE_RELEASE, release, schema=service_schema)
    async_register_admin_service(
        hass,
        DOMAIN,
        SERVICE_HOLD,
        hold_service,
        schema=vol.Schema({**_SERVICE, vol.Required(ATTR_STATE): vol.In(("on", "off"))}),
    )
    async_register_admin_service(
        hass,
        DOMAIN,
        SERVICE_SET_PRIORITY,
        set_priority,
        schema=vol.Schema(
            {
                **_SERVICE,
                vol.Required(ATTR_PRIORITY): vol.In([t.value for t in TIERS_MOST_IMPORTANT_FIRST]),
            }
        ),
    )
    async_register_admin_service(
        hass, DOMAIN, SERVICE_RESTORE_ALL, restore_all, schema=vol.Schema(_SITE)
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_LOAD_TOPOLOGY,
        _admin_only(hass, load_topology),
        schema=vol.Schema(
            {
                **_SITE,
                vol.Required(ATTR_TOPOLOGY): vol.All(cv.string, vol.Length(max=MAX_TEXT_CHARS)),
            }
        ),
        supports_response=SupportsResponse.OPTIONAL,
    )
