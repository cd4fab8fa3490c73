"""Declarative Modbus device profiles: which register holds which reading, and how to decode it.

A profile is data (`drivers/profiles/*.yaml`), validated here on load, so supporting another UPS
or PDU means writing a file, not code. Two kinds exist:

- `ups`: `values` maps `UpsReading` fields (plus `output_load_pct` and `rated_w`, from which
  `output_w` is derived when a device has no direct watt reading) to registers; a register with a
  `bit` reads as a boolean. `outlet_groups` gives each group's status register (bit `on_bit` set
  means on) and its target bit in the `outlet_command` register.
- `pdu`: `outlets` gives the first outlet's register for each per-outlet reading and the
  `stride` to the next outlet; `switch` is the coil (or register) that switches outlet n.

Either declares `max_power_w`: above it a power reading (per outlet; a UPS's output) is not a
reading. A register holding its type's "not available" pattern (0xFFFF for u16, 0x8000 or 0x7FFF
for s16, 0xFFFFFFFF for 32-bit values, also 0x80000000 and 0x7FFFFFFF for s32) decodes as None.

Loading reads a file: callers inside an event loop run `load_profile` in an executor.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import voluptuous as vol
import yaml  # type: ignore[import-untyped]

from .bounded_yaml import load_bounded_yaml
from .plausibility import OUTLET_MAX_POWER_W, UPS_MAX_POWER_W

PROFILES_DIR = Path(__file__).parent / "profiles"


class ProfileError(ValueError):
    """A profile file that cannot be used: names the file and the problem."""


class Function(StrEnum):
    """Which Modbus table a value lives in."""

    HOLDING = "holding"  # read 0x03, write 0x06 / 0x10
    INPUT = "input"  # read 0x04
    COIL = "coil"  # read 0x01, write 0x05
    DISCRETE = "discrete"  # read 0x02

    @property
    def is_bit_table(self) -> bool:
        """Coils and discrete inputs hold bits, not 16-bit words."""
        return self in (Function.COIL, Function.DISCRETE)


class ValueType(StrEnum):
    """How the words of a register value are laid out."""

    U16 = "u16"
    S16 = "s16"
    U32 = "u32"
    S32 = "s32"
    FLOAT32 = "float32"
    BOOL = "bool"  # a coil or discrete input

    @property
    def width(self) -> int:
        """Registers (or bits) the value spans."""
        return 2 if self in (ValueType.U32, ValueType.S32, ValueType.FLOAT32) else 1


_STRUCT_FORMAT = {
    ValueType.U16: ">H",
    ValueType.S16: ">h",
    ValueType.U32: ">I",
    ValueType.S32: ">i",
    ValueType.FLOAT32: ">f",
}
# Raw word patterns devices (and the SunSpec and APC maps) use for "no value": a register a
# device does not fill, a sensor it does not have. A float32 NaN is caught as not finite.
_NOT_AVAILABLE: dict[ValueType, frozenset[int]] = {
    ValueType.U16: frozenset({0xFFFF}),
    ValueType.S16: frozenset({0x8000, 0x7FFF}),
    ValueType.U32: frozenset({0xFFFFFFFF}),
    ValueType.S32: frozenset({0x80000000, 0x7FFFFFFF, 0xFFFFFFFF}),
}


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """One value: where it is, its type, its scale, and optionally a bit within it."""

    function: Function
    address: int  # 0-based protocol address
    type: ValueType = ValueType.U16
    scale: float = 1.0
    bit: int | None = None
    word_order: str = "big"  # "big": high word first

    @property
    def width(self) -> int:
        """Registers (or bits) the value spans."""
        return self.type.width

    def decode(self, words: Sequence[int]) -> float | bool | None:
        """The value from exactly `width` raw words (or bits); None for "not available"."""
        if self.type is ValueType.BOOL:
            return bool(words[0])
        ordered = list(words) if self.word_order == "big" else list(reversed(words))
        raw_bytes = b"".join(w.to_bytes(2, "big") for w in ordered)
        if int.from_bytes(raw_bytes, "big") in _NOT_AVAILABLE.get(self.type, ()):
            return None
        raw = struct.unpack(_STRUCT_FORMAT[self.type], raw_bytes)[0]
        if self.bit is not None:
            return bool(int(raw) >> self.bit & 1)
        return float(raw) * self.scale

    def at_offset(self, offset: int) -> RegisterSpec:
        """The same value `offset` registers further on (outlet n of a strided table)."""
        return RegisterSpec(
            self.function, self.address + offset, self.type, self.scale, self.bit, self.word_order
        )


@dataclass(frozen=True, slots=True)
class OutletGroupSpec:
    """A UPS outlet group: its status register and its target bit in the command register."""

    status: RegisterSpec
    target_bit: int


@dataclass(frozen=True, slots=True)
class OutletCommandSpec:
    """The UPS outlet-group command register (a bit field written in one request)."""

    address: int
    type: ValueType
    on_bit: int
    off_bit: int
    shutdown_bit: int
    use_on_delay_bit: int
    use_off_delay_bit: int


@dataclass(frozen=True, slots=True)
class UpsProfile:
    """How to read and command one kind of UPS."""

    name: str
    values: Mapping[str, RegisterSpec]
    outlet_groups: Mapping[str, OutletGroupSpec]
    outlet_command: OutletCommandSpec | None
    max_power_w: float = UPS_MAX_POWER_W  # output


@dataclass(frozen=True, slots=True)
class StridedSpec:
    """A per-outlet value: outlet n is at `first` plus (n - 1) · `stride`."""

    first: RegisterSpec
    stride: int

    def for_outlet(self, number: int) -> RegisterSpec:
        """The register of outlet `number` (1-based)."""
        return self.first.at_offset((number - 1) * self.stride)


@dataclass(frozen=True, slots=True)
class SwitchSpec:
    """How outlet n is switched: a coil, or a holding register written with on/off values."""

    function: Function
    first_address: int
    stride: int
    on_value: int
    off_value: int

    def address(self, number: int) -> int:
        """The coil or register that switches outlet `number` (1-based)."""
        return self.first_address + (number - 1) * self.stride


@dataclass(frozen=True, slots=True)
class PduProfile:
    """How to read and switch one kind of PDU."""

    name: str
    outlets: Mapping[str, StridedSpec]  # "power_w", "is_on" (and more the map offers)
    switch: SwitchSpec | None
    max_power_w: float = OUTLET_MAX_POWER_W  # per outlet


UPS_VALUE_NAMES = (
    "on_battery",
    "online",
    "low_battery",
    "forced_shutdown",
    "runtime_s",
    "soc_pct",
    "output_w",
    "output_voltage_v",
    "output_load_pct",
    "rated_w",
)
PDU_OUTLET_VALUE_NAMES = ("power_w", "is_on", "current_a", "voltage_v")

_REGISTER = vol.Schema(
    {
        vol.Required("function"): vol.Coerce(Function),
        vol.Required("address"): vol.All(int, vol.Range(min=0, max=65535)),
        vol.Optional("type", default="u16"): vol.Coerce(ValueType),
        vol.Optional("scale", default=1.0): vol.All(vol.Coerce(float), vol.Range(min=1e-12)),
        vol.Optional("bit"): vol.All(int, vol.Range(min=0, max=31)),
        vol.Optional("word_order", default="big"): vol.In(["big", "little"]),
    }
)
_STRIDED = _REGISTER.extend({vol.Optional("stride", default=1): vol.All(int, vol.Range(min=1))})
_BIT = vol.All(int, vol.Range(min=0, max=31))
_MAX_POWER_W = vol.All(vol.Coerce(float), vol.Range(min=0, min_included=False, max=1e6))

_UPS_SCHEMA = vol.Schema(
    {
        vol.Required("name"): str,
        vol.Required("kind"): "ups",
        vol.Optional("max_power_w", default=UPS_MAX_POWER_W): _MAX_POWER_W,
        vol.Required("values"): {vol.In(UPS_VALUE_NAMES): _REGISTER},
        vol.Optional("outlet_groups", default={}): {
            str: {vol.Required("status"): _REGISTER, vol.Required("target_bit"): _BIT}
        },
        vol.Optional("outlet_command"): {
            vol.Required("address"): vol.All(int, vol.Range(min=0, max=65535)),
            vol.Optional("type", default="u32"): vol.All(
                vol.Coerce(ValueType), vol.In(["u16", "u32"])
            ),
            vol.Required("on_bit"): _BIT,
            vol.Required("off_bit"): _BIT,
            vol.Required("shutdown_bit"): _BIT,
            vol.Required("use_on_delay_bit"): _BIT,
            vol.Required("use_off_delay_bit"): _BIT,
        },
    }
)
_PDU_SCHEMA = vol.Schema(
    {
        vol.Required("name"): str,
        vol.Required("kind"): "pdu",
        vol.Optional("max_power_w", default=OUTLET_MAX_POWER_W): _MAX_POWER_W,
        vol.Required("outlets"): {vol.In(PDU_OUTLET_VALUE_NAMES): _STRIDED},
        vol.Optional("switch"): {
            vol.Required("function"): vol.All(vol.Coerce(Function), vol.In(["coil", "holding"])),
            vol.Required("address"): vol.All(int, vol.Range(min=0, max=65535)),
            vol.Optional("stride", default=1): vol.All(int, vol.Range(min=1)),
            vol.Optional("on_value", default=1): int,
            vol.Optional("off_value", default=0): int,
        },
    }
)


def _register(config: Mapping[str, Any]) -> RegisterSpec:
    function = config["function"]
    value_type = ValueType.BOOL if function.is_bit_table else config["type"]
    return RegisterSpec(
        function=function,
        address=config["address"],
        type=value_type,
        scale=config["scale"],
        bit=config.get("bit"),
        word_order=config["word_order"],
    )


def profile_from_mapping(config: Mapping[str, Any]) -> UpsProfile | PduProfile:
    """A validated profile from its parsed YAML; raises `vol.Invalid` naming the bad key."""
    if not isinstance(config, Mapping):
        raise vol.Invalid("a profile must be a mapping")
    if config.get("kind") == "pdu":
        pdu = _PDU_SCHEMA(dict(config))
        switch = pdu.get("switch")
        return PduProfile(
            name=pdu["name"],
            outlets={
                name: StridedSpec(_register(spec), spec["stride"])
                for name, spec in pdu["outlets"].items()
            },
            switch=None
            if switch is None
            else SwitchSpec(
                function=switch["function"],
                first_address=switch["address"],
                stride=switch["stride"],
                on_value=switch["on_value"],
                off_value=switch["off_value"],
            ),
            max_power_w=pdu["max_power_w"],
        )
    ups = _UPS_SCHEMA(dict(config))
    command = ups.get("outlet_command")
    return UpsProfile(
        name=ups["name"],
        values={name: _register(spec) for name, spec in ups["values"].items()},
        outlet_groups={
            group: OutletGroupSpec(_register(spec["status"]), spec["target_bit"])
            for group, spec in ups["outlet_groups"].items()
        },
        outlet_command=None
        if command is None
        else OutletCommandSpec(
            address=command["address"],
            type=command["type"],
            on_bit=command["on_bit"],
            off_bit=command["off_bit"],
            shutdown_bit=command["shutdown_bit"],
            use_on_delay_bit=command["use_on_delay_bit"],
            use_off_delay_bit=command["use_off_delay_bit"],
        ),
        max_power_w=ups["max_power_w"],
    )


def load_profile(name_or_path: str | Path) -> UpsProfile | PduProfile:
    """A bundled profile by name (`apc_smart_ups`, `generic_pdu`) or a profile file by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    try:
        config = load_bounded_yaml(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ProfileError(f"profile {path}: cannot be read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise ProfileError(f"profile {path}: not valid YAML ({error})") from None
    try:
        return profile_from_mapping(config)
    except vol.Invalid as error:
        raise ProfileError(f"profile {path}: {error}") from None
