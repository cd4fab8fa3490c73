"""Selects per service: its priority, and a manual hold (I8)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from homeassistant.components.select import SelectEntity, SelectEntityDescription
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import PowerAllocationConfigEntry
from .coordinator import PowerAllocationCoordinator
from .engine.model import TIERS_MOST_IMPORTANT_FIRST, Priority
from .entity import SERVICE, PowerAllocationEntity
from .services import async_hold, async_set_priority

PARALLEL_UPDATES = 1
HOLD_OPTIONS = {"auto": None, "held_on": True, "held_off": False}


@dataclass(frozen=True, kw_only=True)
class ServiceSelectDescription(SelectEntityDescription):
    """A choice about one service."""

    current_fn: Callable[[Any], str]
    select_fn: Callable[[PowerAllocationCoordinator, str, str], Awaitable[None]]


async def _set_priority(coordinator: PowerAllocationCoordinator, sid: str, option: str) -> None:
    await async_set_priority(coordinator, sid, Priority(option))


async def _set_hold(coordinator: PowerAllocationCoordinator, sid: str, option: str) -> None:
    await async_hold(coordinator, sid, HOLD_OPTIONS[option])


SELECTS: tuple[ServiceSelectDescription, ...] = (
    ServiceSelectDescription(
        key="priority",
        translation_key="priority",
        entity_category=EntityCategory.CONFIG,
        options=[tier.value for tier in TIERS_MOST_IMPORTANT_FIRST],
        current_fn=lambda service: service.priority.value,
        select_fn=_set_priority,
    ),
    ServiceSelectDescription(
        key="hold",
        translation_key="hold",
        entity_category=EntityCategory.CONFIG,
        options=list(HOLD_OPTIONS),
        current_fn=lambda service: next(k for k, v in HOLD_OPTIONS.items() if v is service.held),
        select_fn=_set_hold,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PowerAllocationConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """A priority and a hold select for every service."""
    coordinator = entry.runtime_data
    async_add_entities(
        ServiceSelect(coordinator, description, service_id)
        for description in SELECTS
        for service_id in coordinator.data.services
    )


class ServiceSelect(PowerAllocationEntity, SelectEntity):
    """A choice about one service, applied at once."""

    entity_description: ServiceSelectDescription

    def __init__(
        self,
        coordinator: PowerAllocationCoordinator,
        description: ServiceSelectDescription,
        service_id: str,
    ) -> None:
        super().__init__(coordinator, SERVICE, service_id, description.key)
        self.entity_description = description

    @property
    def current_option(self) -> str:
        """The service's current setting."""
        return self.entity_description.current_fn(self.item)

    async def async_select_option(self, option: str) -> None:
        """Apply the choice; the next cycle acts on it."""
        assert self.item_id is not None
        await self.entity_description.select_fn(self.coordinator, self.item_id, option)
