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
from .engine.overload import OverloadLevel
from .entity import PDU, UPS, DescribedEntity, ItemDescription

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class PowerAllocationBinarySensorDescription(BinarySensorEntityDescription, ItemDescription):
    """A flag of one kind of item."""

    is_on_fn: Callable[[Any], bool | None]


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
    async_add_entities(
        PowerAllocationBinarySensor.for_descriptions(entry.runtime_data, BINARY_SENSORS)
    )


class PowerAllocationBinarySensor(DescribedEntity, BinarySensorEntity):
    """A flag of the site's latest view."""

    entity_description: PowerAllocationBinarySensorDescription

    @property
    def is_on(self) -> bool | None:
        """The flag, from the latest view."""
        return self.entity_description.is_on_fn(self.item)
