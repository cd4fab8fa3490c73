"""Sensors: charge, runtime, power, forecasts, headroom, allocation state and the plan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory, UnitOfEnergy, UnitOfPower, UnitOfTime
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType

from . import PowerAllocationConfigEntry
from .engine.controller import Mode
from .entity import OUTLET, PDU, SERVICE, SITE, UPS, DescribedEntity, ItemDescription
from .site_control import AllocationState, SiteView

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class PowerAllocationSensorDescription(SensorEntityDescription, ItemDescription):
    """A sensor of one kind of item; `value_fn` reads it from that item's view."""

    value_fn: Callable[[Any], StateType]


def _power(key: str, kind: str, value_fn: Callable[[Any], StateType], **kwargs: Any):  # type: ignore[no-untyped-def]
    return PowerAllocationSensorDescription(
        key=key,
        translation_key=key,
        kind=kind,
        device_class=SensorDeviceClass.POWER,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfPower.WATT,
        suggested_display_precision=0,
        value_fn=value_fn,
        **kwargs,
    )


def _duration(key: str, kind: str, value_fn: Callable[[Any], StateType]):  # type: ignore[no-untyped-def]
    return PowerAllocationSensorDescription(
        key=key,
        translation_key=key,
        kind=kind,
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.SECONDS,
        suggested_unit_of_measurement=UnitOfTime.MINUTES,
        suggested_display_precision=0,
        value_fn=value_fn,
    )


def _next_step_attributes(view: SiteView) -> dict[str, Any]:
    step = view.next_step
    if step is None:
        return {}
    return {
        "service": step.service_id,
        "in_s": round(step.in_s, 1),
        "reason": step.reason,
        "plan": [
            {"in_s": round(s.in_s, 1), "service": s.service_id, "action": s.action}
            for s in view.plan
        ],
    }


SENSORS: tuple[PowerAllocationSensorDescription, ...] = (
    # site
    PowerAllocationSensorDescription(
        key="controller_state",
        translation_key="controller_state",
        kind=SITE,
        device_class=SensorDeviceClass.ENUM,
        options=[mode.value for mode in Mode],
        value_fn=lambda view: view.mode.value,
    ),
    _duration("critical_runtime", SITE, lambda view: view.critical_runtime_s),
    _power("budget", SITE, lambda view: view.budget_w),
    PowerAllocationSensorDescription(
        key="next_action",
        translation_key="next_action",
        kind=SITE,
        value_fn=lambda view: None if view.next_step is None else view.next_step.action,
        attributes_fn=_next_step_attributes,
    ),
    # UPS
    PowerAllocationSensorDescription(
        key="state_of_charge",
        translation_key="state_of_charge",
        kind=UPS,
        device_class=SensorDeviceClass.BATTERY,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=PERCENTAGE,
        value_fn=lambda ups: ups.soc_pct,
    ),
    _duration("runtime", UPS, lambda ups: ups.runtime_s),
    _duration("predicted_runtime", UPS, lambda ups: ups.predicted_runtime_s),
    _power("output_power", UPS, lambda ups: ups.output_w),
    PowerAllocationSensorDescription(
        key="energy_left",
        translation_key="energy_left",
        kind=UPS,
        device_class=SensorDeviceClass.ENERGY_STORAGE,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfEnergy.WATT_HOUR,
        suggested_display_precision=0,
        value_fn=lambda ups: ups.energy_left_wh,
    ),
    # PDU
    _power("total_power", PDU, lambda pdu: pdu.power_w),
    _power(
        "headroom",
        PDU,
        lambda pdu: pdu.headroom_w,
        attributes_fn=lambda pdu: {"limit_w": pdu.limit_w},
    ),
    PowerAllocationSensorDescription(
        key="overload_probability",
        translation_key="overload_probability",
        kind=PDU,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=PERCENTAGE,
        suggested_display_precision=0,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda pdu: None
        if pdu.overload_probability is None
        else 100.0 * pdu.overload_probability,
    ),
    # outlets
    _power("power", OUTLET, lambda outlet: outlet.power_w),
    _power("forecast_power", OUTLET, lambda outlet: outlet.forecast_w),
    # services
    PowerAllocationSensorDescription(
        key="allocation",
        translation_key="allocation",
        kind=SERVICE,
        device_class=SensorDeviceClass.ENUM,
        options=list(AllocationState.OPTIONS),
        value_fn=lambda service: service.state,
        attributes_fn=lambda service: {"reason": service.reason, "cap_w": service.cap_w},
    ),
    _power("service_power", SERVICE, lambda service: service.power_w),
    _power(
        "service_forecast",
        SERVICE,
        lambda service: service.forecast_w,
        attributes_fn=lambda service: {"upper_w": round(service.forecast_upper_w, 1)},
    ),
    _duration("planned_shed", SERVICE, lambda service: service.planned_shed_in_s),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PowerAllocationConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """One sensor per description per item of its kind."""
    async_add_entities(PowerAllocationSensor.for_descriptions(entry.runtime_data, SENSORS))


class PowerAllocationSensor(DescribedEntity, SensorEntity):
    """A value of the site's latest view."""

    entity_description: PowerAllocationSensorDescription

    @property
    def native_value(self) -> StateType:
        """The value, from the latest view."""
        return self.entity_description.value_fn(self.item)
