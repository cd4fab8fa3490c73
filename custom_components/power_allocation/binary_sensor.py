"""Binary sensors: a UPS on battery or low, a PDU about to be overloaded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from homeassistant.components.binary_sensor import (
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import PowerAllocationConfigEntry
from .coordinator import PowerAllocationCoordinator
from .engine.overload import OverloadLevel
from .entity import PDU, UPS, PowerAllocationEntity, item_ids

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class PowerAllocationBinarySensorDescription(BinarySensorEntityDescription):
    """A flag of one kind of item."""

    kind: str
    is_on_fn: Callable[[Any], bool | None]
    attributes_fn: Callable[[Any], dict[str, Any]] | None = None


BINARY_SENSORS: tuple[PowerAllocationBinarySensorDescription, ...] = (
    PowerAllocationBinarySensorDescription(
        key="on_battery",
        translation_key="on_battery",
        kind=UPS,
        is_on_fn=lambda ups: ups.on_battery,
    ),
    PowerAllocationBinarySensorDescription(
        key="low_battery",
        translation_key="low_battery",
        kind=UPS,
        device_class=BinarySensorDeviceClass.BATTERY,
        is_on_fn=lambda ups: ups.low_battery,
    ),
    PowerAllocationBinarySensorDescription(
        key="overload_predicted",
        translation_key="overload_predicted",
        kind=PDU,
        device_class=BinarySensorDeviceClass.PROBLEM,
        is_on_fn=lambda pdu: pdu.overload_level != OverloadLevel.NORMAL,
        attributes_fn=lambda pdu: {"level": pdu.overload_level},
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PowerAllocationConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """One binary sensor per description per item of its kind."""
    coordinator = entry.runtime_data
    async_add_entities(
        PowerAllocationBinarySensor(coordinator, description, item_id)
        for description in BINARY_SENSORS
        for item_id in item_ids(coordinator.data, description.kind)
    )


class PowerAllocationBinarySensor(PowerAllocationEntity, BinarySensorEntity):
    """A flag of the site's latest view."""

    entity_description: PowerAllocationBinarySensorDescription

    def __init__(
        self,
        coordinator: PowerAllocationCoordinator,
        description: PowerAllocationBinarySensorDescription,
        item_id: str | None,
    ) -> None:
        super().__init__(coordinator, description.kind, item_id, description.key)
        self.entity_description = description

    @property
    def is_on(self) -> bool | None:
        """The flag, from the latest view."""
        return self.entity_description.is_on_fn(self.item)

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """The guard's level, where a description has it."""
        attributes_fn = self.entity_description.attributes_fn
        return None if attributes_fn is None else attributes_fn(self.item)
