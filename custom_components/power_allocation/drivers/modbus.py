"""Modbus TCP driver: UPS units and PDUs read through declarative profiles (`drivers/profile.py`).

Each device has its own `AsyncModbusTcpClient` and its own timeout; devices are polled
concurrently and, within a device, adjacent registers are fetched in one request. A device that
times out, refuses the connection or answers with an exception is marked unavailable for that
cycle — nothing is raised into the caller and no half-read value is reported. Connection faults
are retried with exponential backoff measured on the caller's monotonic clock (pymodbus's own
background reconnect is off, so nothing runs between polls). The driver only ever writes when
`execute` is called, and only to a target it was configured with.

UPS outlet groups appear in the snapshot's `outlets` as `<ups>/<group>` (e.g. `ups1/main`), the
same id a `UPS_GROUP_*` command targets.

A register holding its type's "not available" pattern is a missing value, and a number outside
what the device can physically report (`plausibility`: above its `max_power_w`, a negative power,
a charge outside 0-100 %) is reported as None for that cycle and counted per device.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from .interface import (
    Command,
    CommandKind,
    CommandResult,
    OutletReading,
    TelemetrySnapshot,
    UpsReading,
)
from .plausibility import (
    PERCENT,
    RUNTIME,
    VOLTAGE,
    ImplausibleReadings,
    Span,
    mains_online,
    power_span,
)
from .profile import Function, PduProfile, RegisterSpec, UpsProfile, ValueType

_LOGGER = logging.getLogger(__name__)

# Modbus limits a single read to 125 registers or 2000 bits.
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000
# Reading a few unused registers is cheaper than another round trip.
MAX_GAP_REGISTERS = 16


class DeviceError(Exception):
    """A device answered, but not with what was asked for (an exception response)."""


@dataclass(frozen=True, slots=True)
class ModbusDevice:
    """One UPS or PDU: where it is, which profile reads it, how long to wait for it."""

    device_id: str  # the UPS or PDU id of the site
    host: str
    profile: UpsProfile | PduProfile
    port: int = 502
    unit_id: int = 1
    outlet_count: int = 0  # PDUs: outlets 1..outlet_count
    timeout_s: float = 1.0
    # The site's own ceiling for power readings (per outlet; a UPS's output), over the profile's:
    # for a UPS, `plausibility.ups_max_power_w` of its rating.
    max_power_w: float | None = None

    def power_span(self) -> Span:
        """Where a power reading of this device must lie."""
        ceiling = self.profile.max_power_w if self.max_power_w is None else self.max_power_w
        return power_span(ceiling)


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: `count` registers (or bits) of one table from `address`."""

    function: Function
    address: int
    count: int

    def slice(self, words: Sequence[int], spec: RegisterSpec) -> Sequence[int]:
        """The words of `spec` within this block's response."""
        start = spec.address - self.address
        return words[start : start + spec.width]

    def holds(self, spec: RegisterSpec) -> bool:
        """Whether `spec` lies within this block."""
        return (
            spec.function is self.function
            and self.address <= spec.address
            and spec.address + spec.width <= self.address + self.count
        )


def plan_reads(
    specs: Iterable[RegisterSpec], max_gap: int = MAX_GAP_REGISTERS
) -> tuple[ReadBlock, ...]:
    """The fewest read requests covering every spec, merging neighbours up to `max_gap` apart."""
    blocks: list[ReadBlock] = []
    ordered = sorted({(s.function, s.address, s.width) for s in specs})
    for function, address, width in ordered:
        limit = MAX_BITS_PER_READ if function.is_bit_table else MAX_REGISTERS_PER_READ
        last = blocks[-1] if blocks else None
        if (
            last is not None
            and last.function is function
            and address <= last.address + last.count + max_gap
            and address + width - last.address <= limit
        ):
            end = max(last.address + last.count, address + width)
            blocks[-1] = ReadBlock(function, last.address, end - last.address)
        else:
            blocks.append(ReadBlock(function, address, width))
    return tuple(blocks)


class _DeviceLink:
    """The connection to one device, its read plan, and its failure bookkeeping."""

    def __init__(
        self,
        device: ModbusDevice,
        backoff_initial_s: float,
        backoff_max_s: float,
        implausible: ImplausibleReadings,
    ):
        self.device = device
        self.implausible = implausible
        self.client = AsyncModbusTcpClient(
            device.host,
            port=device.port,
            timeout=device.timeout_s,
            retries=0,
            reconnect_delay=0,  # reconnects are ours, with backoff, at poll time
            name=device.device_id,
        )
        self.specs = _specs_to_read(device)
        self.blocks = plan_reads(self.specs.values())
        self.available = False
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.backoff_s = 0.0
        self.retry_at_s = -math.inf
        self.error_count = 0

    async def ensure_connected(self, monotonic_s: float, force: bool = False) -> bool:
        """Connect if needed and the backoff allows (a command forces a try)."""
        if self.client.connected:
            return True
        if not force and monotonic_s < self.retry_at_s:
            return False
        if await self.client.connect():
            return True
        self.failed(monotonic_s, ConnectionError("connection refused or timed out"))
        return False

    async def read_values(self, monotonic_s: float) -> dict[str, float | bool] | None:
        """Every profile value of this device, or None when the device could not be read."""
        if not await self.ensure_connected(monotonic_s):
            return None
        try:
            responses = [(block, await self.read_block(block)) for block in self.blocks]
        except (ModbusException, DeviceError, OSError, TimeoutError) as error:
            self.failed(monotonic_s, error)
            return None
        values: dict[str, float | bool] = {}
        for name, spec in self.specs.items():
            block, words = next((b, w) for b, w in responses if b.holds(spec))
            value = spec.decode(block.slice(words, spec))
            if value is not None:
                values[name] = value
        self.succeeded()
        return values

    def admit(
        self, reading: str, value: float | bool | None, span: Span, now_s: float
    ) -> float | None:
        """A number within `span`, or None; a number outside it is counted as implausible."""
        if value is None or isinstance(value, bool) or not math.isfinite(value):
            return None
        admitted = span.admit(value)
        if admitted is None:
            self.implausible.record(self.device.device_id, reading, value, now_s)
        return admitted

    async def read_block(self, block: ReadBlock) -> Sequence[int]:
        """The raw words (bits as 0/1) of one block; raises on any fault."""
        unit = self.device.unit_id
        match block.function:
            case Function.HOLDING:
                reply = await self.client.read_holding_registers(
                    block.address, count=block.count, **_unit(unit)
                )
            case Function.INPUT:
                reply = await self.client.read_input_registers(
                    block.address, count=block.count, **_unit(unit)
                )
            case Function.COIL:
                reply = await self.client.read_coils(
                    block.address, count=block.count, **_unit(unit)
                )
            case Function.DISCRETE:
                reply = await self.client.read_discrete_inputs(
                    block.address, count=block.count, **_unit(unit)
                )
        _check(reply)
        if block.function.is_bit_table:
            if len(reply.bits) < block.count:
                raise DeviceError(f"short reply: {len(reply.bits)} of {block.count} bits")
            return [int(bit) for bit in reply.bits[: block.count]]
        if len(reply.registers) < block.count:
            raise DeviceError(f"short reply: {len(reply.registers)} of {block.count} registers")
        return list(reply.registers)

    def failed(self, monotonic_s: float, error: BaseException) -> None:
        self.error_count += 1
        if isinstance(error, DeviceError):
            # The device answers; it is the request it refused. Try again next cycle.
            self.retry_at_s = monotonic_s
        else:
            # A stale reply could pair with the next request: drop the connection and back off.
            self.client.close()
            self.backoff_s = min(
                self.backoff_max_s, max(self.backoff_initial_s, 2.0 * self.backoff_s)
            )
            self.retry_at_s = monotonic_s + self.backoff_s
        if self.available or self.error_count == 1:
            _LOGGER.warning(
                "Modbus device %s (%s:%s) unavailable: %s",
                self.device.device_id,
                self.device.host,
                self.device.port,
                str(error) or type(error).__name__,
            )
        else:
            _LOGGER.debug("Modbus device %s still unavailable: %s", self.device.device_id, error)
        self.available = False

    def succeeded(self) -> None:
        if not self.available and self.error_count:
            _LOGGER.info("Modbus device %s available again", self.device.device_id)
        self.available = True
        self.backoff_s = 0.0
        self.retry_at_s = -math.inf


# pymodbus 3.10 renamed the keyword naming the unit from `slave` to `device_id` (Home Assistant
# 2025.4 ships 3.8, 2025.9 and later 3.11 and newer): calls name it as the installed one does.
_UNIT_KEYWORD = (
    "device_id"
    if "device_id" in inspect.signature(AsyncModbusTcpClient.read_coils).parameters
    else "slave"
)


def _unit(unit: int) -> dict[str, Any]:
    return {_UNIT_KEYWORD: unit}


def _check(reply: ModbusPDU) -> None:
    if reply.isError():
        raise DeviceError(f"exception response (code {getattr(reply, 'exception_code', '?')})")


def _specs_to_read(device: ModbusDevice) -> dict[str, RegisterSpec]:
    profile = device.profile
    if isinstance(profile, UpsProfile):
        specs = dict(profile.values)
        specs.update({f"group:{g}": spec.status for g, spec in profile.outlet_groups.items()})
        return specs
    return {
        f"{name}:{number}": strided.for_outlet(number)
        for name, strided in profile.outlets.items()
        if name in ("power_w", "is_on")
        for number in range(1, device.outlet_count + 1)
    }


def _flag(values: Mapping[str, float | bool], name: str) -> bool | None:
    value = values.get(name)
    return None if value is None else bool(value)


def _derived_output_w(values: Mapping[str, float | bool]) -> float | None:
    """A UPS's output from its load percentage and rating, when it has no watt reading."""
    load_pct, rated_w = values.get("output_load_pct"), values.get("rated_w")
    if load_pct is None or rated_w is None or isinstance(load_pct, bool):
        return None
    return load_pct / 100.0 * rated_w


def _ups_reading(
    link: _DeviceLink, values: Mapping[str, float | bool] | None, now_s: float
) -> UpsReading:
    device = link.device
    if values is None:
        return UpsReading(device.device_id, available=False)
    power = device.power_span()
    direct_w = values.get("output_w")
    output_w = link.admit(
        "output_w", _derived_output_w(values) if direct_w is None else direct_w, power, now_s
    )
    on_battery = _flag(values, "on_battery")
    return UpsReading(
        ups_id=device.device_id,
        available=True,
        on_battery=on_battery,
        online=mains_online(_flag(values, "online"), on_battery),
        low_battery=_flag(values, "low_battery"),
        forced_shutdown=_flag(values, "forced_shutdown"),
        runtime_s=link.admit("runtime_s", values.get("runtime_s"), RUNTIME, now_s),
        soc_pct=link.admit("soc_pct", values.get("soc_pct"), PERCENT, now_s),
        output_w=output_w,
        output_voltage_v=link.admit(
            "output_voltage_v", values.get("output_voltage_v"), VOLTAGE, now_s
        ),
    )


def _outlet_readings(
    link: _DeviceLink, values: Mapping[str, float | bool] | None, now_s: float
) -> dict[str, OutletReading]:
    device = link.device
    profile = device.profile
    if isinstance(profile, UpsProfile):
        return {
            f"{device.device_id}/{group}": OutletReading(
                f"{device.device_id}/{group}",
                available=values is not None,
                is_on=None if values is None else _flag(values, f"group:{group}"),
            )
            for group in profile.outlet_groups
        }
    readings = {}
    power = device.power_span()
    for number in range(1, device.outlet_count + 1):
        outlet_id = f"{device.device_id}/{number}"
        if values is None:
            readings[outlet_id] = OutletReading(outlet_id, available=False)
            continue
        power_w = link.admit(
            f"outlet {number} power_w", values.get(f"power_w:{number}"), power, now_s
        )
        readings[outlet_id] = OutletReading(
            outlet_id, available=True, power_w=power_w, is_on=_flag(values, f"is_on:{number}")
        )
    return readings


class ModbusDriver:
    """The `Driver` for a set of Modbus TCP devices."""

    def __init__(
        self,
        devices: Sequence[ModbusDevice],
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
    ) -> None:
        ids = [d.device_id for d in devices]
        if len(set(ids)) != len(ids):
            raise ValueError("each Modbus device needs its own id")
        self._implausible = ImplausibleReadings()
        self._links = {
            d.device_id: _DeviceLink(d, backoff_initial_s, backoff_max_s, self._implausible)
            for d in devices
        }

    @property
    def requests_per_cycle(self) -> int:
        """Read requests one `read` sends when every device answers."""
        return sum(len(link.blocks) for link in self._links.values())

    @property
    def error_counts(self) -> dict[str, int]:
        """Failed polls and connects per device since start."""
        return {device_id: link.error_count for device_id, link in self._links.items()}

    @property
    def implausible_counts(self) -> dict[str, int]:
        """Values per device reported unknown because they could not be readings, since start."""
        return self._implausible.counts()

    async def start(self) -> None:
        """Open every connection once; a device that is down is retried by `read`."""
        await asyncio.gather(*(link.ensure_connected(0.0) for link in self._links.values()))

    async def stop(self) -> None:
        """Close every connection."""
        for link in self._links.values():
            link.client.close()

    async def read(self, monotonic_s: float) -> TelemetrySnapshot:
        """Poll every device concurrently; unreachable ones appear unavailable."""
        links = list(self._links.values())
        results = await asyncio.gather(*(link.read_values(monotonic_s) for link in links))
        snapshot = TelemetrySnapshot(monotonic_s)
        for link, values in zip(links, results, strict=True):
            if isinstance(link.device.profile, UpsProfile):
                snapshot.ups[link.device.device_id] = _ups_reading(link, values, monotonic_s)
            snapshot.outlets.update(_outlet_readings(link, values, monotonic_s))
        return snapshot

    async def execute(self, command: Command) -> CommandResult:
        """Switch a configured PDU outlet or UPS outlet group; anything else is refused."""
        device_id, _, part = command.target.partition("/")
        link = self._links.get(device_id)
        if link is None or command.kind not in _MODBUS_COMMANDS:
            return CommandResult(command, ok=False, error="not a target of this Modbus driver")
        try:
            write = _write_for(link.device, command.kind, part, command.use_delay)
        except ValueError as error:
            return CommandResult(command, ok=False, error=str(error))
        # A command does not wait out the backoff, and its failure lets the next poll retry.
        if not await link.ensure_connected(-math.inf, force=True):
            return CommandResult(command, ok=False, error="device unreachable")
        try:
            await write(link)
        except (ModbusException, DeviceError, OSError, TimeoutError) as error:
            link.failed(-math.inf, error)
            return CommandResult(command, ok=False, error=str(error) or type(error).__name__)
        return CommandResult(command, ok=True)


_MODBUS_COMMANDS = {
    CommandKind.OUTLET_ON,
    CommandKind.OUTLET_OFF,
    CommandKind.UPS_GROUP_ON,
    CommandKind.UPS_GROUP_OFF,
    CommandKind.UPS_GROUP_SHUTDOWN,
}


class _Write:
    """A prepared write, checked against the profile before anything is sent."""

    def __init__(self, function: Function, address: int, registers: list[int]) -> None:
        self.function = function
        self.address = address
        self.registers = registers
        self.verify: RegisterSpec | None = None
        self.expect_on = False

    async def __call__(self, link: _DeviceLink) -> None:
        client, unit = link.client, link.device.unit_id
        if self.function is Function.COIL:
            reply = await client.write_coil(self.address, bool(self.registers[0]), **_unit(unit))
        elif len(self.registers) == 1:
            reply = await client.write_register(self.address, self.registers[0], **_unit(unit))
        else:
            reply = await client.write_registers(self.address, self.registers, **_unit(unit))
        _check(reply)
        if self.verify is not None:
            block = plan_reads([self.verify])[0]
            words = await link.read_block(block)
            if bool(self.verify.decode(block.slice(words, self.verify))) != self.expect_on:
                raise DeviceError("the outlet did not switch")


def _write_for(device: ModbusDevice, kind: CommandKind, part: str, use_delay: bool) -> _Write:
    profile = device.profile
    if isinstance(profile, PduProfile):
        if kind not in (CommandKind.OUTLET_ON, CommandKind.OUTLET_OFF):
            raise ValueError(f"{device.device_id} is a PDU: only outlet commands apply")
        if profile.switch is None:
            raise ValueError(f"{device.device_id}: profile {profile.name} cannot switch outlets")
        if not part.isdigit() or not 1 <= int(part) <= device.outlet_count:
            raise ValueError(f"{device.device_id}: no outlet {part!r}")
        on = kind is CommandKind.OUTLET_ON
        switch = profile.switch
        write = _Write(
            switch.function,
            switch.address(int(part)),
            [switch.on_value if on else switch.off_value],
        )
        if "is_on" in profile.outlets:
            write.verify = profile.outlets["is_on"].for_outlet(int(part))
            write.expect_on = on
        return write
    if kind in (CommandKind.OUTLET_ON, CommandKind.OUTLET_OFF):
        raise ValueError(f"{device.device_id} is a UPS: use outlet-group commands")
    group = profile.outlet_groups.get(part)
    command = profile.outlet_command
    if group is None or command is None:
        raise ValueError(f"{device.device_id}: no outlet group {part!r} to command")
    action_bit = {
        CommandKind.UPS_GROUP_ON: command.on_bit,
        CommandKind.UPS_GROUP_OFF: command.off_bit,
        CommandKind.UPS_GROUP_SHUTDOWN: command.shutdown_bit,
    }[kind]
    value = 1 << action_bit | 1 << group.target_bit
    if use_delay:
        value |= 1 << (
            command.use_on_delay_bit
            if kind is CommandKind.UPS_GROUP_ON
            else command.use_off_delay_bit
        )
    registers = [value >> 16, value & 0xFFFF] if command.type is ValueType.U32 else [value]
    return _Write(Function.HOLDING, command.address, registers)
