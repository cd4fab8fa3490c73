"""Diagnostics: the site's topology, last telemetry and controller state, credentials redacted."""

from __future__ import annotations

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from . import PowerAllocationConfigEntry

# Broker credentials, and what could point a stranger at the site.
TO_REDACT = {"username", "password", "host"}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: PowerAllocationConfigEntry
) -> dict[str, Any]:
    """What a bug report needs, and no secret."""
    coordinator = entry.runtime_data
    state = coordinator.control.decider.to_state()
    return {
        "entry": {
            "title": entry.title,
            "data": async_redact_data(dict(entry.data), TO_REDACT),
            "options": async_redact_data(dict(entry.options), TO_REDACT),
        },
        "telemetry": coordinator.snapshot_data(),
        "controller": state["controller"],
        "priority_overrides": state["priority_overrides"],
        "outages_s": state["outages_s"],
        "forecasters": sorted(state["demand"]["forecasters"]),
        "unavailable": sorted(coordinator.unavailable_devices),
    }
