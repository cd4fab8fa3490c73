"""A `Driver` over entities Home Assistant already has: a UPS from the NUT integration, smart plugs.

It reads states from the state machine and switches outlets with `<domain>.turn_on/turn_off` on
the switch entity it was configured with, and nothing else. An entity that is missing,
`unavailable` or `unknown` reads as unavailable; a value that is not a number (or not in a unit
it knows) reads as None, never as a guess.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from homeassistant.const import STATE_UNAVAILABLE, STATE_UNKNOWN, UnitOfPower, UnitOfTime
from homeassistant.core import HomeAssistant, State
from homeassistant.exceptions import HomeAssistantError

from .drivers.interface import (
    Command,
    CommandKind,
    CommandResult,
    OutletReading,
    TelemetrySnapshot,
    UpsReading,
)

_SECONDS_PER_UNIT = {
    UnitOfTime.SECONDS: 1.0,
    UnitOfTime.MINUTES: 60.0,
    UnitOfTime.HOURS: 3600.0,
    None: 1.0,  # NUT's battery.runtime is in seconds; a sensor without a unit is taken as such
}
_WATTS_PER_UNIT = {UnitOfPower.WATT: 1.0, UnitOfPower.KILO_WATT: 1000.0, None: 1.0}
# NUT's ups.status flags, and the words of the NUT integration's translated status sensor.
_ON_BATTERY_WORDS = ("OB", "On Battery")
_ONLINE_WORDS = ("OL", "Online")
_LOW_BATTERY_WORDS = ("LB", "Low Battery")


def _usable(state: State | None) -> State | None:
    if state is None or state.state in (STATE_UNAVAILABLE, STATE_UNKNOWN):
        return None
    return state


def _number(state: State | None, scale: Mapping[Any, float]) -> float | None:
    state = _usable(state)
    if state is None:
        return None
    factor = scale.get(state.attributes.get("unit_of_measurement"))
    try:
        value = float(state.state)
    except ValueError:
        return None
    if factor is None or not math.isfinite(value):
        return None
    return value * factor


def _has_flag(text: str, words: tuple[str, ...]) -> bool:
    tokens = text.replace(",", " ").split()
    return any(word in tokens if " " not in word else word in text for word in words)


class EntitySource:
    """Reads UPS units and outlets from entities; switches only the configured switches."""

    def __init__(
        self,
        hass: HomeAssistant,
        ups: Mapping[str, Mapping[str, Any]],
        outlets: Mapping[str, Mapping[str, Any]],
        rated_w: Mapping[str, float],
    ) -> None:
        """`ups`: UPS id -> its entity source; `outlets`: outlet id -> {switch, power}."""
        self._hass = hass
        self._ups = dict(ups)
        self._outlets = dict(outlets)
        self._rated_w = dict(rated_w)

    async def start(self) -> None:
        """Nothing to connect: the state machine is always there."""

    async def stop(self) -> None:
        """Nothing to release."""

    async def read(self, monotonic_s: float) -> TelemetrySnapshot:
        """The entities' current states."""
        states = self._hass.states
        ups = {ups_id: self._ups_reading(ups_id, source) for ups_id, source in self._ups.items()}
        outlets = {}
        for outlet_id, entities in self._outlets.items():
            switch = _usable(states.get(entities["switch"])) if "switch" in entities else None
            power = states.get(entities["power"]) if "power" in entities else None
            outlets[outlet_id] = OutletReading(
                outlet_id=outlet_id,
                available=("switch" not in entities or switch is not None)
                and ("power" not in entities or _usable(power) is not None),
                power_w=_number(power, _WATTS_PER_UNIT),
                is_on=None if switch is None else switch.state == "on",
            )
        return TelemetrySnapshot(monotonic_s=monotonic_s, ups=ups, outlets=outlets)

    def _ups_reading(self, ups_id: str, source: Mapping[str, Any]) -> UpsReading:
        states = self._hass.states
        on_battery: bool | None = None
        online: bool | None = None
        low_battery: bool | None = None
        if "on_battery" in source:
            flag = _usable(states.get(source["on_battery"]))
            if flag is not None:
                on_battery = flag.state == "on"
                online = not on_battery
        elif "status" in source:
            status = _usable(states.get(source["status"]))
            if status is not None:
                on_battery = _has_flag(status.state, _ON_BATTERY_WORDS)
                online = _has_flag(status.state, _ONLINE_WORDS)
                low_battery = _has_flag(status.state, _LOW_BATTERY_WORDS)
        load = states.get(source["load"]) if "load" in source else None
        output_w = _number(load, _WATTS_PER_UNIT)
        if output_w is None and _usable(load) is not None:
            percent = _number(load, {"%": 1.0})
            if percent is not None:
                output_w = percent / 100.0 * self._rated_w[ups_id]
        return UpsReading(
            ups_id=ups_id,
            available=on_battery is not None,
            on_battery=on_battery,
            online=online,
            low_battery=low_battery,
            runtime_s=_number(states.get(source.get("runtime", "")), _SECONDS_PER_UNIT),
            soc_pct=_number(states.get(source.get("charge", "")), {"%": 1.0, None: 1.0}),
            output_w=output_w,
        )

    async def execute(self, command: Command) -> CommandResult:
        """Switch one configured outlet's switch entity."""
        entities = self._outlets.get(command.target, {})
        if (
            command.kind not in (CommandKind.OUTLET_ON, CommandKind.OUTLET_OFF)
            or "switch" not in entities
        ):
            return CommandResult(command, ok=False, error=f"no switch entity for {command.target}")
        entity_id = entities["switch"]
        service = "turn_on" if command.kind is CommandKind.OUTLET_ON else "turn_off"
        try:
            await self._hass.services.async_call(
                entity_id.split(".", 1)[0], service, {"entity_id": entity_id}, blocking=True
            )
        except HomeAssistantError as error:
            return CommandResult(command, ok=False, error=f"{entity_id}: {error}")
        return CommandResult(command, ok=True)
