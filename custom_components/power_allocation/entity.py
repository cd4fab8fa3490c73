"""Base entity: one item of a site's view (the site, a UPS, a PDU, an outlet or a service).

Devices: the site (a hub), and under it each UPS, PDU and service. An outlet's entities belong to
its PDU's device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import DOMAIN
from .coordinator import PowerAllocationCoordinator
from .site_control import SiteView

SITE = "site"
UPS = "ups"
PDU = "pdu"
OUTLET = "outlet"
SERVICE = "service"

_MODELS = {SITE: "Site", UPS: "UPS", PDU: "PDU", SERVICE: "Service"}


def view_item(view: SiteView, kind: str, item_id: str | None) -> Any:
    """The part of the view an entity shows."""
    match kind:
        case "ups":
            return view.ups[item_id]  # type: ignore[index]
        case "pdu":
            return view.pdus[item_id]  # type: ignore[index]
        case "outlet":
            return view.outlets[item_id]  # type: ignore[index]
        case "service":
            return view.services[item_id]  # type: ignore[index]
    return view


def item_ids(view: SiteView, kind: str) -> list[str | None]:
    """Every item of a kind: one entity of each description per item."""
    match kind:
        case "ups":
            return list(view.ups)
        case "pdu":
            return list(view.pdus)
        case "outlet":
            return list(view.outlets)
        case "service":
            return list(view.services)
    return [None]


def _link_to_site(
    device_info: DeviceInfo, hass: HomeAssistant, entry_id: str, site_identifier: tuple[str, str]
) -> None:
    """Hang a UPS, PDU or service device off the site's device.

    Home Assistant 2026.8 and later link a device to its hub by the hub's registry id
    (`via_device_id`): `via_device`, the hub's identifier, is deprecated there, and reported as an
    error when an entity's device info carries it (the entity is then not added). Earlier versions
    know only `via_device`. The site's device is made before the platforms are set up.
    """
    device_id_of = getattr(dr, "async_get_device_id_by_identifier", None)
    if device_id_of is None:
        device_info["via_device"] = site_identifier
        return
    try:
        via_device_id = device_id_of(hass, site_identifier, config_entry_id=entry_id)
    except ValueError:  # no site device (removed by hand): the device is simply not linked
        return
    device_info["via_device_id"] = via_device_id  # type: ignore[typeddict-unknown-key]


class PowerAllocationEntity(CoordinatorEntity[PowerAllocationCoordinator]):
    """An entity of one item of a site."""

    _attr_has_entity_name = True

    def __init__(
        self, coordinator: PowerAllocationCoordinator, kind: str, item_id: str | None, key: str
    ) -> None:
        super().__init__(coordinator)
        entry = coordinator.config_entry
        self.kind = kind
        self.item_id = item_id
        site_identifier = (DOMAIN, entry.entry_id)
        device_kind, device_id = kind, item_id
        if kind == OUTLET and item_id is not None:
            device_kind, device_id = PDU, item_id.split("/", 1)[0]
            self._attr_translation_placeholders = {"outlet": item_id.split("/", 1)[1]}
        if device_kind == SITE:
            identifier = site_identifier
            name = entry.title
        else:
            identifier = (DOMAIN, f"{entry.entry_id}_{device_kind}_{device_id}")
            name = f"{entry.title} {device_id}"
        self.device_key = device_id
        suffix = (
            key
            if kind != OUTLET
            else f"outlet_{self._attr_translation_placeholders['outlet']}_{key}"
        )
        self._attr_unique_id = f"{identifier[1]}_{suffix}"
        self._attr_device_info = DeviceInfo(
            identifiers={identifier},
            name=name,
            manufacturer="Predictive Power Allocation",
            model=_MODELS[device_kind],
        )
        if device_kind != SITE:
            _link_to_site(self._attr_device_info, coordinator.hass, entry.entry_id, site_identifier)

    @property
    def item(self) -> Any:
        """This entity's part of the latest view."""
        return view_item(self.coordinator.data, self.kind, self.item_id)

    @property
    def available(self) -> bool:
        """Unavailable with the coordinator, and with the UPS or PDU it belongs to."""
        if not super().available:
            return False
        if self.kind in (UPS, PDU, OUTLET) and self.device_key is not None:
            return self.coordinator.device_available(self.device_key)
        return True


@dataclass(frozen=True, kw_only=True)
class ItemDescription(EntityDescription):
    """An entity of one kind of item (`kind`); `attributes_fn` adds its attributes, if any."""

    kind: str
    attributes_fn: Callable[[Any], dict[str, Any]] | None = None


class DescribedEntity(PowerAllocationEntity):
    """An entity built from an `ItemDescription`: one per description per item of its kind."""

    entity_description: ItemDescription

    def __init__(
        self,
        coordinator: PowerAllocationCoordinator,
        description: ItemDescription,
        item_id: str | None,
    ) -> None:
        super().__init__(coordinator, description.kind, item_id, description.key)
        self.entity_description = description

    @classmethod
    def for_descriptions(
        cls, coordinator: PowerAllocationCoordinator, descriptions: Iterable[ItemDescription]
    ) -> list[DescribedEntity]:
        """One entity per description per item of the description's kind."""
        return [
            cls(coordinator, description, item_id)
            for description in descriptions
            for item_id in item_ids(coordinator.data, description.kind)
        ]

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Reasons, bands and levels, where a description has them."""
        attributes_fn = self.entity_description.attributes_fn
        return None if attributes_fn is None else attributes_fn(self.item)
