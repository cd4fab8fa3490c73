"""Diagnostics: the site's topology, last telemetry and controller state, secrets redacted."""

from __future__ import annotations

from typing import Any

from homeassistant.core import HomeAssistant

from . import PowerAllocationConfigEntry
from .redact import redact

# No secrets (`redact` finds those anywhere), but they point a stranger at the site and its hosts;
# with the site's MQTT client id, another client could take its place on the broker.
ALWAYS_REDACTED = ("host", "username", "client_id", "mqtt_client_id", "mac", "wol_broadcast")


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: PowerAllocationConfigEntry
) -> dict[str, Any]:
    """What a bug report needs, and no secret."""
    coordinator = entry.runtime_data
    state = coordinator.control.decider.to_state()
    return {
        "entry": {
            "title": entry.title,
            "data": redact(dict(entry.data), ALWAYS_REDACTED),
            "options": redact(dict(entry.options), ALWAYS_REDACTED),
        },
        "telemetry": coordinator.snapshot_data(),
        "rejected_readings": coordinator.drivers.rejected_readings(),
        "controller": state["controller"],
        "priority_overrides": state["priority_overrides"],
        "outages_s": state["outages_s"],
        "forecasters": sorted(state["demand"]["forecasters"]),
        "unavailable": sorted(coordinator.unavailable_devices),
    }
