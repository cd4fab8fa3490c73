"""Switches: the site's conservative plan, and one per managed outlet. An outlet switch goes
through the controller, so it never cuts a service
uncleanly: off holds the service off (it and what depends on it stop gracefully, dependents
first), on releases that hold (the controller powers it back, dependencies first)."""

from __future__ import annotations

from typing import Any

from homeassistant.components.switch import SwitchDeviceClass, SwitchEntity
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import PowerAllocationConfigEntry
from .coordinator import PowerAllocationCoordinator
from .entity import OUTLET, SITE, PowerAllocationEntity
from .services import async_hold

PARALLEL_UPDATES = 1


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PowerAllocationConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """A switch for every outlet a service is bound to."""
    coordinator = entry.runtime_data
    async_add_entities(
        [
            ConservativePlanSwitch(coordinator),
            *(
                OutletSwitch(coordinator, outlet_id)
                for outlet_id, outlet in coordinator.data.outlets.items()
                if outlet.service_id is not None
            ),
        ]
    )


class ConservativePlanSwitch(PowerAllocationEntity, SwitchEntity):
    """Plans for long outages while the grid is in trouble (a storm, planned works): the lower
    tiers are shed sooner if mains fails, so the critical ones run longer."""

    _attr_translation_key = "conservative_plan"

    def __init__(self, coordinator: PowerAllocationCoordinator) -> None:
        super().__init__(coordinator, SITE, None, "conservative_plan")

    @property
    def is_on(self) -> bool:
        """Whether the conservative outage prior is in use."""
        return self.coordinator.control.decider.conservative

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Plan for long outages."""
        await self._set(True)

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Back to the usual outage prior."""
        await self._set(False)

    async def _set(self, conservative: bool) -> None:
        async with self.coordinator.lock:
            self.coordinator.control.decider.conservative = conservative
        await self.coordinator.async_refresh()


class OutletSwitch(PowerAllocationEntity, SwitchEntity):
    """A managed outlet: its relay state; switching it holds or releases its service."""

    _attr_device_class = SwitchDeviceClass.OUTLET
    _attr_translation_key = "outlet"

    def __init__(self, coordinator: PowerAllocationCoordinator, outlet_id: str) -> None:
        super().__init__(coordinator, OUTLET, outlet_id, "switch")

    @property
    def is_on(self) -> bool | None:
        """The relay state the outlet reports."""
        is_on: bool | None = self.item.is_on
        return is_on

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """The service the outlet powers."""
        return {"service": self.item.service_id}

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Release the service's hold: the controller brings it back when it fits."""
        await async_hold(self.coordinator, self.item.service_id, None)

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Hold the service off: it and its dependents stop gracefully."""
        await async_hold(self.coordinator, self.item.service_id, False)
