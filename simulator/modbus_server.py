"""Serves a `SimulatedSite` over Modbus TCP: each UPS and each PDU is its own pymodbus server.

One server per device, on its own port, as real devices each have their own network card:
UPS units first, then PDUs, in site order, from `base_port` upwards (`base_port=0` lets the OS
pick free ports; `ports` says which). Any unit id is answered.

The register maps are written out here, as the devices' firmware would have them, independently
of the driver's profiles (`docs/devices-modbus.md` documents both):

- UPS: the APC Smart-UPS network-card map (holding registers, big-endian, 32-bit high word first).
  Writing the outlet command register 1538-1539 switches outlet groups of the simulated UPS.
- PDU: the project's generic switched/metered map: input registers 0 map version, 1 outlet count,
  2-3 total W, 4 inlet voltage x10, 5 total current mA / 10; 100+ outlet W x10, 200+ outlet mA,
  300+ outlet voltage x10; coil n-1 is outlet n's relay (write it to switch the outlet).

`refresh()` copies the site's state into the registers; call it after `site.advance`. Writes act on
the site at once and refresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pymodbus
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusTcpServer

from .site import SimulatedSite, SiteSnapshot

GENERIC_PDU_MAP_VERSION = 1

# APC map (holding registers).
APC_STATUS = 0  # u32 UPSStatus_BF: bit 1 online, bit 2 on battery, bit 4 output off
APC_GROUP_STATUS = {"main": 3, "sog0": 6, "sog1": 9, "sog2": 12}  # u32 OutletStatus_BF
APC_SIGNALING = 18  # u16 SimpleSignalingStatus_BF: bit 0 power failure, bit 1 shutdown imminent
APC_RUNTIME_S = 128  # u32 seconds
APC_SOC = 130  # u16 %, x512
APC_LOAD = 136  # u16 % of the real-power rating, x256
APC_OUTPUT_VOLTAGE = 142  # u16 V, x64
APC_RATED_W = 589  # u16 W
APC_SOG_CONFIG = 590  # u16 SOGRelayConfigSetting_BF: bit 0 main group, bits 1.. switched groups
APC_OUTLET_COMMAND = 1538  # u32 OutletCommand_BF
APC_REGISTER_COUNT = 1540
APC_COMMAND_ACTIONS = {1: "on", 2: "off", 3: "shutdown"}  # command bit -> action
APC_USE_DELAY_BITS = (6, 7)  # use on-delay, use off-delay
APC_TARGET_GROUPS = {8: "main", 9: "sog0", 10: "sog1", 11: "sog2"}  # target bit -> group

# Generic PDU map.
PDU_VERSION, PDU_OUTLET_COUNT, PDU_TOTAL_W, PDU_VOLTAGE, PDU_CURRENT = 0, 1, 2, 4, 5
PDU_OUTLET_POWER, PDU_OUTLET_CURRENT, PDU_OUTLET_VOLTAGE = 100, 200, 300
PDU_OUTLET_TABLES = (PDU_OUTLET_POWER, PDU_OUTLET_CURRENT, PDU_OUTLET_VOLTAGE)
PDU_MAX_OUTLETS = 100

_COIL_WRITES = (5, 15)
_REGISTER_WRITES = (6, 16)


def _u16(value: float) -> int:
    return max(0, min(0xFFFF, round(value)))


def _u32(value: float) -> list[int]:
    raw = max(0, min(0xFFFFFFFF, round(value)))
    return [raw >> 16, raw & 0xFFFF]


_HOLDING_FUNCTIONS = (3, 6, 16, 22, 23)
_INPUT_FUNCTIONS = (4,)
_COIL_FUNCTIONS = (1, 5, 15)
_ILLEGAL_DATA_ADDRESS = 2  # the Modbus exception code


class DeviceTables:
    """A device's tables as its firmware holds them: an address off the map is refused.

    Input registers exist only where the map puts them; the maps have no discrete inputs.
    `on_write` is called after a client writes.
    """

    def __init__(
        self,
        holding: int,
        inputs: Sequence[int],
        coils: int,
        on_write: Callable[[int, int, Sequence[int]], None],
    ) -> None:
        self.holding = [0] * holding
        self.inputs = dict.fromkeys(inputs, 0)
        self.coils = [False] * coils
        self._on_write = on_write

    def _table(self, function_code: int) -> list[int] | dict[int, int] | list[bool] | None:
        if function_code in _HOLDING_FUNCTIONS:
            return self.holding
        if function_code in _INPUT_FUNCTIONS:
            return self.inputs
        if function_code in _COIL_FUNCTIONS:
            return self.coils
        return None

    def mapped(self, function_code: int, address: int, count: int) -> bool:
        table = self._table(function_code)
        if isinstance(table, dict):
            return all(a in table for a in range(address, address + count))
        return table is not None and address >= 0 and address + count <= len(table)

    def read(self, function_code: int, address: int, count: int) -> Any:
        """The values, or the refusal the installed pymodbus takes for an address off the map."""
        table = self._table(function_code)
        if table is None or not self.mapped(function_code, address, count):
            return _refusal(count)
        return [table[a] for a in range(address, address + count)]

    def write(self, function_code: int, address: int, values: Sequence[int]) -> Any:
        """None once written, or the refusal the installed pymodbus takes."""
        table = self._table(function_code)
        if table is None or not self.mapped(function_code, address, len(values)):
            return _refusal(len(values))
        _put(table, address, values)
        self._on_write(function_code, address, values)
        return None


def _put(table: list[Any] | dict[int, int], address: int, values: Sequence[int]) -> None:
    for offset, value in enumerate(values):
        table[address + offset] = value


class _UnitContext:
    """The tables as pymodbus up to 3.12 asks them: through each unit's context."""

    def __init__(self, tables: DeviceTables) -> None:
        self.tables = tables

    def validate(self, function_code: int, address: int, count: int = 1) -> bool:
        return self.tables.mapped(function_code, address, count)

    async def async_getValues(  # noqa: N802 - pymodbus's name
        self, function_code: int, address: int, count: int = 1
    ) -> Any:
        return self.tables.read(function_code, address, count)

    async def async_setValues(  # noqa: N802 - pymodbus's name
        self, function_code: int, address: int, values: Sequence[int]
    ) -> Any:
        return self.tables.write(function_code, address, values)


class _ServerTables(ModbusServerContext):
    """The tables as pymodbus 3.13 and later asks them: through the server's context.

    Any unit id is answered. pymodbus's own constructor is not called: all it does is build its
    simulator's devices, which the server would then use instead of these tables.
    """

    def __init__(self, tables: DeviceTables) -> None:
        self.tables = tables
        self.simdevices: list[object] = []

    def device_ids(self) -> list[int]:
        return [0]

    async def async_getValues(  # noqa: N802 - pymodbus's name
        self, device_id: int, function_code: int, address: int, count: int = 1
    ) -> Any:
        return self.tables.read(function_code, address, count)

    async def async_setValues(  # noqa: N802 - pymodbus's name
        self, device_id: int, function_code: int, address: int, values: Sequence[int]
    ) -> Any:
        return self.tables.write(function_code, address, values)


_PYMODBUS_VERSION = tuple(int(part) for part in pymodbus.__version__.split(".")[:2])


def _refusal(count: int) -> Any:
    """ "Illegal data address", as the installed pymodbus takes it from a datastore.

    3.10 and later take their `ExcCodes` member, 3.9 the bare code. 3.8 asks `validate` before
    reading or writing registers, but reads bits without asking and cannot answer an error there:
    off-map bits read as 0 on it.
    """
    if _PYMODBUS_VERSION >= (3, 10):
        from pymodbus.constants import ExcCodes  # type: ignore[attr-defined]

        return ExcCodes.ILLEGAL_ADDRESS
    if _PYMODBUS_VERSION >= (3, 9):
        return _ILLEGAL_DATA_ADDRESS
    return [0] * count


def _server_context(tables: DeviceTables) -> ModbusServerContext:
    """One device's tables in the shape the installed pymodbus asks them in."""
    if _PYMODBUS_VERSION >= (3, 13):
        return _ServerTables(tables)
    return ModbusServerContext(_UnitContext(tables), single=True)  # type: ignore[no-untyped-call]


class SiteModbusServer:
    """Every UPS and PDU of a simulated site on its own Modbus TCP server."""

    def __init__(self, site: SimulatedSite, host: str = "127.0.0.1", base_port: int = 0) -> None:
        self.site = site
        self.host = host
        self.base_port = base_port
        topology = site.scenario.site
        self.tables: dict[str, DeviceTables] = {}
        for ups in topology.ups:
            self.tables[ups.id] = DeviceTables(APC_REGISTER_COUNT, (), 0, self._ups_writer(ups.id))
        for pdu in topology.pdus:
            if len(pdu.outlets) > PDU_MAX_OUTLETS:
                raise ValueError(f"PDU {pdu.id!r}: the generic map holds {PDU_MAX_OUTLETS} outlets")
            count = len(pdu.outlets)
            inputs = [
                *range(PDU_CURRENT + 1),
                *(first + n for first in PDU_OUTLET_TABLES for n in range(count)),
            ]
            self.tables[pdu.id] = DeviceTables(0, inputs, count, self._pdu_writer(pdu.id))
        self._servers: dict[str, ModbusTcpServer] = {}
        self.ports: dict[str, int] = {}

    async def start(self) -> None:
        """Listen on one port per device."""
        self.refresh()
        for index, (device_id, tables) in enumerate(self.tables.items()):
            port = self.base_port + index if self.base_port else 0
            server = ModbusTcpServer(
                _server_context(tables),
                address=(self.host, port),
            )
            self._servers[device_id] = server
            await server.serve_forever(background=True)
            listener = server.transport
            if not isinstance(listener, asyncio.Server):
                await self.stop()
                raise OSError(f"cannot listen on {self.host}:{port} for {device_id}")
            self.ports[device_id] = listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close every server and every client connection."""
        for server in self._servers.values():
            await server.shutdown()  # type: ignore[no-untyped-call]
        self._servers.clear()

    def refresh(self) -> None:
        """Copy the site's current state into every device's registers."""
        snapshot = self.site.snapshot()
        for ups in self.site.scenario.site.ups:
            self._write_ups(ups.id, snapshot)
        for pdu in self.site.scenario.site.pdus:
            self._write_pdu(pdu.id, snapshot)

    def _write_ups(self, ups_id: str, snapshot: SiteSnapshot) -> None:
        state = snapshot.ups[ups_id]
        rated_w = next(u.rated_w for u in self.site.scenario.site.ups if u.id == ups_id)
        holding = self.tables[ups_id].holding
        status = (state.online << 1) | (state.on_battery << 2) | ((not state.alive) << 4)
        _put(holding, APC_STATUS, _u32(status))
        for group, address in APC_GROUP_STATUS.items():
            _put(holding, address, _u32(1 if state.groups_on[group] else 2))
        _put(holding, APC_SIGNALING, [(not snapshot.mains_on) | (state.low_battery << 1)])
        _put(holding, APC_RUNTIME_S, _u32(state.runtime_s))
        _put(holding, APC_SOC, [_u16(state.soc_pct * 512)])
        _put(holding, APC_LOAD, [_u16(100 * state.output_w / rated_w * 256)])
        _put(holding, APC_OUTPUT_VOLTAGE, [_u16(state.output_voltage_v * 64)])
        _put(holding, APC_RATED_W, [_u16(rated_w)])
        pdus = sum(1 for p in self.site.scenario.site.pdus if p.ups == ups_id)
        _put(holding, APC_SOG_CONFIG, [(1 << (1 + min(pdus, 3))) - 1])

    def _write_pdu(self, pdu_id: str, snapshot: SiteSnapshot) -> None:
        pdu = self.site.scenario.site.pdu_by_id[pdu_id]
        ups = snapshot.ups[pdu.ups]
        voltage_v = ups.output_voltage_v
        outlets = [snapshot.outlets[o.id] for o in pdu.outlets]
        total_w = sum(o.power_w for o in outlets)
        tables = self.tables[pdu_id]
        inputs = tables.inputs
        _put(inputs, PDU_VERSION, [GENERIC_PDU_MAP_VERSION, len(outlets)])
        _put(inputs, PDU_TOTAL_W, _u32(total_w))
        _put(inputs, PDU_VOLTAGE, [_u16(voltage_v * 10)])
        _put(inputs, PDU_CURRENT, [_u16(_amps(total_w, voltage_v) * 100)])
        _put(inputs, PDU_OUTLET_POWER, [_u16(o.power_w * 10) for o in outlets])
        _put(
            inputs, PDU_OUTLET_CURRENT, [_u16(_amps(o.power_w, voltage_v) * 1000) for o in outlets]
        )
        _put(
            inputs, PDU_OUTLET_VOLTAGE, [_u16(voltage_v * 10 if o.powered else 0) for o in outlets]
        )
        _put(tables.coils, 0, [o.is_on for o in outlets])

    def _ups_writer(self, ups_id: str) -> Callable[[int, int, Sequence[int]], None]:
        def on_write(function_code: int, address: int, values: Sequence[int]) -> None:
            command_low_word = APC_OUTLET_COMMAND + 1
            if function_code not in _REGISTER_WRITES or not (
                address <= command_low_word < address + len(values)
            ):
                return
            holding = self.tables[ups_id].holding
            high, low = holding[APC_OUTLET_COMMAND : APC_OUTLET_COMMAND + 2]
            command = high << 16 | low
            _put(holding, APC_OUTLET_COMMAND, [0, 0])  # the card clears it once taken
            actions = [a for bit, a in APC_COMMAND_ACTIONS.items() if command >> bit & 1]
            if len(actions) != 1:
                return
            use_delay = any(command >> bit & 1 for bit in APC_USE_DELAY_BITS)
            for bit, group in APC_TARGET_GROUPS.items():
                if command >> bit & 1:
                    self.site.ups_group(ups_id, group, actions[0], use_delay)
            self.refresh()

        return on_write

    def _pdu_writer(self, pdu_id: str) -> Callable[[int, int, Sequence[int]], None]:
        def on_write(function_code: int, address: int, values: Sequence[int]) -> None:
            if function_code not in _COIL_WRITES:
                return
            for offset, value in enumerate(values):
                self.site.set_outlet(f"{pdu_id}/{address + offset + 1}", bool(value))
            self.refresh()

        return on_write


def _amps(power_w: float, voltage_v: float) -> float:
    return power_w / voltage_v if voltage_v > 0 else 0.0
