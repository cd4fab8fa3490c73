"""Predictive Power Allocation: keeps the most important services up while the UPS is on battery."""

from __future__ import annotations

from typing import TYPE_CHECKING

# Home Assistant is imported for type checking only: the simulator and the benchmarks import the
# engine and the drivers through this package, and must not pay seconds of Home Assistant start-up.
if TYPE_CHECKING:
    from homeassistant.config_entries import ConfigEntry
    from homeassistant.const import Platform
    from homeassistant.core import HomeAssistant

PLATFORMS: list[Platform] = []

type PowerAllocationConfigEntry = ConfigEntry[None]


async def async_setup_entry(hass: HomeAssistant, entry: PowerAllocationConfigEntry) -> bool:
    """Set up a site from a config entry."""
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: PowerAllocationConfigEntry) -> bool:
    """Unload a site."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
