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

from pymodbus.datastore import (
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
    ModbusSparseDataBlock,
)
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


class _DeviceContext(ModbusSlaveContext):
    """A device's tables, calling `on_write` after a client writes to them."""

    def __init__(
        self,
        holding: int,
        inputs: Sequence[int],
        coils: int,
        on_write: Callable[[int, int, Sequence[int]], None],
    ) -> None:
        # pymodbus's context adds 1 to every address; blocks starting at 1 undo that. Input
        # registers exist only where the map puts them, so reading past them is refused.
        super().__init__(  # type: ignore[no-untyped-call]
            di=_block([0]),
            co=_block([False] * max(coils, 1)),
            hr=_block([0] * max(holding, 1)),
            ir=ModbusSparseDataBlock(  # type: ignore[no-untyped-call]
                {address + 1: 0 for address in inputs} or {1: 0}, mutable=False
            ),
        )
        self._on_write = on_write

    def setValues(self, fc_as_hex: int, address: int, values: Sequence[int]) -> None:  # noqa: N802
        super().setValues(fc_as_hex, address, values)  # type: ignore[no-untyped-call]
        self._on_write(fc_as_hex, address, values)


class SiteModbusServer:
    """Every UPS and PDU of a simulated site on its own Modbus TCP server."""

    def __init__(self, site: SimulatedSite, host: str = "127.0.0.1", base_port: int = 0) -> None:
        self.site = site
        self.host = host
        self.base_port = base_port
        topology = site.scenario.site
        self._contexts: dict[str, _DeviceContext] = {}
        for ups in topology.ups:
            self._contexts[ups.id] = _DeviceContext(
                APC_REGISTER_COUNT, (), 0, self._ups_writer(ups.id)
            )
        for pdu in topology.pdus:
            if len(pdu.outlets) > PDU_MAX_OUTLETS:
                raise ValueError(f"PDU {pdu.id!r}: the generic map holds {PDU_MAX_OUTLETS} outlets")
            count = len(pdu.outlets)
            inputs = [
                *range(PDU_CURRENT + 1),
                *(first + n for first in PDU_OUTLET_TABLES for n in range(count)),
            ]
            self._contexts[pdu.id] = _DeviceContext(0, inputs, count, self._pdu_writer(pdu.id))
        self._servers: dict[str, ModbusTcpServer] = {}
        self.ports: dict[str, int] = {}

    async def start(self) -> None:
        """Listen on one port per device."""
        self.refresh()
        for index, (device_id, context) in enumerate(self._contexts.items()):
            port = self.base_port + index if self.base_port else 0
            server = ModbusTcpServer(
                ModbusServerContext(slaves=context, single=True),  # type: ignore[no-untyped-call]
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
        context = self._contexts[ups_id]
        status = (state.online << 1) | (state.on_battery << 2) | ((not state.alive) << 4)
        context.store["h"].setValues(1 + APC_STATUS, _u32(status))
        for group, address in APC_GROUP_STATUS.items():
            context.store["h"].setValues(1 + address, _u32(1 if state.groups_on[group] else 2))
        context.store["h"].setValues(
            1 + APC_SIGNALING, [(not snapshot.mains_on) | (state.low_battery << 1)]
        )
        context.store["h"].setValues(1 + APC_RUNTIME_S, _u32(state.runtime_s))
        context.store["h"].setValues(1 + APC_SOC, [_u16(state.soc_pct * 512)])
        context.store["h"].setValues(1 + APC_LOAD, [_u16(100 * state.output_w / rated_w * 256)])
        context.store["h"].setValues(1 + APC_OUTPUT_VOLTAGE, [_u16(state.output_voltage_v * 64)])
        context.store["h"].setValues(1 + APC_RATED_W, [_u16(rated_w)])
        pdus = sum(1 for p in self.site.scenario.site.pdus if p.ups == ups_id)
        context.store["h"].setValues(1 + APC_SOG_CONFIG, [(1 << (1 + min(pdus, 3))) - 1])

    def _write_pdu(self, pdu_id: str, snapshot: SiteSnapshot) -> None:
        pdu = self.site.scenario.site.pdu_by_id[pdu_id]
        ups = snapshot.ups[pdu.ups]
        voltage_v = ups.output_voltage_v
        outlets = [snapshot.outlets[o.id] for o in pdu.outlets]
        total_w = sum(o.power_w for o in outlets)
        context = self._contexts[pdu_id]
        inputs = context.store["i"]
        inputs.setValues(1 + PDU_VERSION, [GENERIC_PDU_MAP_VERSION, len(outlets)])
        inputs.setValues(1 + PDU_TOTAL_W, _u32(total_w))
        inputs.setValues(1 + PDU_VOLTAGE, [_u16(voltage_v * 10)])
        inputs.setValues(1 + PDU_CURRENT, [_u16(_amps(total_w, voltage_v) * 100)])
        inputs.setValues(1 + PDU_OUTLET_POWER, [_u16(o.power_w * 10) for o in outlets])
        inputs.setValues(
            1 + PDU_OUTLET_CURRENT, [_u16(_amps(o.power_w, voltage_v) * 1000) for o in outlets]
        )
        inputs.setValues(
            1 + PDU_OUTLET_VOLTAGE, [_u16(voltage_v * 10 if o.powered else 0) for o in outlets]
        )
        context.store["c"].setValues(1, [o.is_on for o in outlets])

    def _ups_writer(self, ups_id: str) -> Callable[[int, int, Sequence[int]], None]:
        def on_write(function_code: int, address: int, values: Sequence[int]) -> None:
            command_low_word = APC_OUTLET_COMMAND + 1
            if function_code not in _REGISTER_WRITES or not (
                address <= command_low_word < address + len(values)
            ):
                return
            holding = self._contexts[ups_id].store["h"]
            high, low = holding.getValues(1 + APC_OUTLET_COMMAND, 2)
            command = high << 16 | low
            holding.setValues(1 + APC_OUTLET_COMMAND, [0, 0])  # the card clears it once taken
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


def _block(values: list[int] | list[bool]) -> ModbusSequentialDataBlock:
    return ModbusSequentialDataBlock(1, values)  # type: ignore[no-untyped-call]


def _amps(power_w: float, voltage_v: float) -> float:
    return power_w / voltage_v if voltage_v > 0 else 0.0
