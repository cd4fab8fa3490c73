"""The Modbus driver against the simulator's real servers, and against devices that misbehave."""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custom_components.power_allocation.drivers.interface import Command, CommandKind
from custom_components.power_allocation.drivers.modbus import (
    ModbusDevice,
    ModbusDriver,
    ReadBlock,
    plan_reads,
)
from custom_components.power_allocation.drivers.plausibility import ups_max_power_w
from custom_components.power_allocation.drivers.profile import (
    Function,
    RegisterSpec,
    UpsProfile,
    ValueType,
    load_profile,
)
from simulator.modbus_server import SiteModbusServer
from simulator.site import UPS_GROUP_OFF_DELAY_S
from tests.fixtures.modbus_site import HOST, ModbusSite

WAIT_S = 5.0


class FaultyLink:
    """A TCP proxy in front of a real device that can drop, refuse or swallow its traffic."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0
        self.requests: list[bytes] = []
        self.mode = "forward"  # "forward" | "silent" | "drop_after_first"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=WAIT_S)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.target_port)
        try:
            while True:
                header = await reader.readexactly(6)
                body = await reader.readexactly(struct.unpack(">H", header[4:6])[0])
                self.requests.append(header + body)
                if self.mode == "silent":
                    continue
                if self.mode == "drop_after_first" and len(self.requests) > 1:
                    break
                upstream_writer.write(header + body)
                reply_header = await upstream_reader.readexactly(6)
                reply_body = await upstream_reader.readexactly(
                    struct.unpack(">H", reply_header[4:6])[0]
                )
                writer.write(reply_header + reply_body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            upstream_writer.close()
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)

    def function_codes(self) -> set[int]:
        """Modbus function codes of every request seen (byte 7 of an MBAP frame)."""
        return {frame[7] for frame in self.requests}


@pytest.fixture
async def faulty_ups(modbus_site: ModbusSite) -> AsyncIterator[FaultyLink]:
    """The simulated UPS behind a proxy the test controls."""
    link = FaultyLink(modbus_site.server.ports["ups1"])
    await link.open()
    try:
        yield link
    finally:
        await link.close()


def ups_device(port: int, timeout_s: float = 0.3) -> ModbusDevice:
    return ModbusDevice("ups1", HOST, load_profile("apc_smart_ups"), port=port, timeout_s=timeout_s)


def test_adjacent_registers_are_read_together() -> None:
    """The APC map needs three requests: status block, battery/output block, the rating."""
    device = ups_device(502)
    profile = device.profile
    assert isinstance(profile, UpsProfile)
    specs = [*profile.values.values(), *(g.status for g in profile.outlet_groups.values())]
    assert plan_reads(specs) == (
        ReadBlock(Function.HOLDING, 0, 19),
        ReadBlock(Function.HOLDING, 128, 15),
        ReadBlock(Function.HOLDING, 589, 1),
    )


def test_reads_of_different_tables_are_never_merged() -> None:
    specs = [
        RegisterSpec(Function.INPUT, 100),
        RegisterSpec(Function.HOLDING, 101),
        RegisterSpec(Function.COIL, 0, ValueType.BOOL),
    ]
    assert len(plan_reads(specs)) == 3


def test_a_read_never_exceeds_the_protocol_limit() -> None:
    specs = [RegisterSpec(Function.INPUT, address) for address in range(300)]
    blocks = plan_reads(specs)
    assert all(block.count <= 125 for block in blocks)
    assert sum(block.count for block in blocks) == 300


@pytest.mark.parametrize(
    ("spec", "words", "expected"),
    [
        (RegisterSpec(Function.HOLDING, 0, ValueType.U32), [0x0001, 0x0002], 65538.0),
        (
            RegisterSpec(Function.HOLDING, 0, ValueType.U32, word_order="little"),
            [0x0002, 0x0001],
            65538.0,
        ),
        (RegisterSpec(Function.HOLDING, 0, ValueType.S16), [0xFFFE], -2.0),
        (RegisterSpec(Function.HOLDING, 0, ValueType.U16, scale=1 / 512), [51200], 100.0),
        (RegisterSpec(Function.HOLDING, 0, ValueType.FLOAT32), [0x4148, 0x0000], 12.5),
        (RegisterSpec(Function.HOLDING, 0, ValueType.U32, bit=2), [0, 0b100], True),
        (RegisterSpec(Function.HOLDING, 0, ValueType.U32, bit=1), [0, 0b100], False),
    ],
)
def test_decoding(spec: RegisterSpec, words: list[int], expected: float | bool) -> None:
    assert spec.decode(words) == expected


@pytest.mark.parametrize(
    ("value_type", "words"),
    [
        (ValueType.U16, [0xFFFF]),
        (ValueType.S16, [0x8000]),
        (ValueType.S16, [0x7FFF]),
        (ValueType.U32, [0xFFFF, 0xFFFF]),
        (ValueType.S32, [0x8000, 0x0000]),
        (ValueType.S32, [0x7FFF, 0xFFFF]),
        (ValueType.S32, [0xFFFF, 0xFFFF]),
    ],
)
@pytest.mark.parametrize("bit", [None, 1])
def test_not_available_patterns_decode_as_missing(
    value_type: ValueType, words: list[int], bit: int | None
) -> None:
    """Neither a number nor a set of status bits: a bit field of all ones is no status."""
    assert RegisterSpec(Function.HOLDING, 0, value_type, scale=0.1, bit=bit).decode(words) is None


async def test_reads_what_the_simulated_site_shows(modbus_site: ModbusSite) -> None:
    site, server = modbus_site.site, modbus_site.server
    site.set_mains(False)
    site.advance(60)
    server.refresh()
    truth = site.snapshot()
    driver = ModbusDriver(modbus_site.devices())
    await driver.start()
    try:
        snapshot = await driver.read(10.0)
    finally:
        await driver.stop()
    ups = snapshot.ups["ups1"]
    expected = truth.ups["ups1"]
    assert ups.available
    assert ups.on_battery is True
    assert ups.online is False
    assert ups.low_battery is False
    assert ups.runtime_s == round(expected.runtime_s)
    assert ups.soc_pct == pytest.approx(expected.soc_pct, abs=1 / 512)
    assert ups.output_w == pytest.approx(expected.output_w, abs=1000 / 25600)
    assert ups.output_voltage_v == pytest.approx(230.0)
    for outlet_id, outlet in truth.outlets.items():
        reading = snapshot.outlets[outlet_id]
        assert reading.available
        assert reading.is_on is outlet.is_on
        assert reading.power_w == pytest.approx(outlet.power_w, abs=0.05)
    assert snapshot.outlets["ups1/main"].is_on is True


async def test_switches_an_outlet_and_confirms_it(modbus_site: ModbusSite) -> None:
    driver = ModbusDriver(modbus_site.devices())
    await driver.start()
    try:
        result = await driver.execute(Command(CommandKind.OUTLET_OFF, "pdu-b/3"))
        snapshot = await driver.read(1.0)
        back_on = await driver.execute(Command(CommandKind.OUTLET_ON, "pdu-b/3"))
    finally:
        await driver.stop()
    assert result.ok, result.error
    assert snapshot.outlets["pdu-b/3"].is_on is False
    assert snapshot.outlets["pdu-b/3"].power_w == 0.0
    assert back_on.ok
    assert modbus_site.site.snapshot().outlets["pdu-b/3"].is_on


async def test_commands_a_ups_outlet_group_with_and_without_delay(modbus_site: ModbusSite) -> None:
    site, server = modbus_site.site, modbus_site.server
    driver = ModbusDriver(modbus_site.devices())
    await driver.start()
    try:
        delayed = await driver.execute(
            Command(CommandKind.UPS_GROUP_OFF, "ups1/sog1", use_delay=True)
        )
        assert delayed.ok, delayed.error
        assert site.snapshot().outlets["pdu-b/3"].powered  # the off-delay is running
        site.advance(UPS_GROUP_OFF_DELAY_S)
        server.refresh()
        snapshot = await driver.read(1.0)
        assert snapshot.outlets["ups1/sog1"].is_on is False
        assert snapshot.outlets["pdu-b/3"].power_w == 0.0
        assert snapshot.outlets["pdu-a/1"].power_w == pytest.approx(40.0)
        now = await driver.execute(Command(CommandKind.UPS_GROUP_ON, "ups1/sog1"))
        assert now.ok
        assert site.snapshot().outlets["pdu-b/3"].powered
    finally:
        await driver.stop()


@pytest.mark.parametrize(
    "command",
    [
        Command(CommandKind.OUTLET_OFF, "pdu-z/1"),
        Command(CommandKind.OUTLET_OFF, "pdu-a/9"),
        Command(CommandKind.OUTLET_OFF, "pdu-a/x"),
        Command(CommandKind.OUTLET_OFF, "ups1/main"),
        Command(CommandKind.UPS_GROUP_OFF, "pdu-a/1"),
        Command(CommandKind.UPS_GROUP_OFF, "ups1/sog7"),
        Command(CommandKind.AGENT_SHUTDOWN, "db"),
    ],
)
async def test_refuses_targets_it_was_not_configured_with(
    modbus_site: ModbusSite, command: Command
) -> None:
    before = modbus_site.site.snapshot()
    driver = ModbusDriver(modbus_site.devices())
    await driver.start()
    try:
        result = await driver.execute(command)
    finally:
        await driver.stop()
    assert not result.ok
    assert result.error
    assert modbus_site.site.snapshot() == before


async def test_exception_responses_make_the_device_unavailable(modbus_site: ModbusSite) -> None:
    """Asking the 4-outlet PDU for 6 outlets is answered with exceptions, not raised."""
    devices = modbus_site.devices()
    pdu = next(d for d in devices if d.device_id == "pdu-a")
    too_many = ModbusDevice(
        "pdu-a", HOST, pdu.profile, port=pdu.port, outlet_count=6, timeout_s=0.5
    )
    driver = ModbusDriver([too_many, *(d for d in devices if d.device_id != "pdu-a")])
    await driver.start()
    try:
        snapshot = await driver.read(1.0)
    finally:
        await driver.stop()
    assert not any(snapshot.outlets[f"pdu-a/{n}"].available for n in range(1, 7))
    assert snapshot.outlets["pdu-a/1"].power_w is None
    assert snapshot.ups["ups1"].available
    assert snapshot.outlets["pdu-b/1"].available
    assert driver.error_counts["pdu-a"] == 1


async def test_a_silent_device_times_out_and_gets_no_command(faulty_ups: FaultyLink) -> None:
    faulty_ups.mode = "silent"
    driver = ModbusDriver([ups_device(faulty_ups.port, timeout_s=0.2)])
    await driver.start()
    try:
        snapshot = await driver.read(1.0)
    finally:
        await driver.stop()
    assert snapshot.ups["ups1"].available is False
    assert snapshot.ups["ups1"].soc_pct is None
    assert snapshot.outlets["ups1/main"].available is False
    assert faulty_ups.function_codes() == {0x03}  # reads only


async def test_a_device_dropping_mid_poll_is_unavailable_then_reconnects(
    faulty_ups: FaultyLink,
) -> None:
    faulty_ups.mode = "drop_after_first"
    driver = ModbusDriver([ups_device(faulty_ups.port)], backoff_initial_s=1.0)
    await driver.start()
    try:
        dropped = await driver.read(0.0)
        assert dropped.ups["ups1"].available is False
        assert faulty_ups.function_codes() == {0x03}
        faulty_ups.mode = "forward"
        connections = faulty_ups.connections
        waiting = await driver.read(0.5)  # inside the backoff: no new attempt
        assert waiting.ups["ups1"].available is False
        assert faulty_ups.connections == connections
        back = await driver.read(1.0)
        assert back.ups["ups1"].available is True
        assert back.ups["ups1"].soc_pct == pytest.approx(100.0)
        assert faulty_ups.connections == connections + 1
    finally:
        await driver.stop()


async def test_backoff_doubles_while_the_device_stays_away(faulty_ups: FaultyLink) -> None:
    driver = ModbusDriver([ups_device(faulty_ups.port)], backoff_initial_s=1.0, backoff_max_s=4.0)
    await driver.start()
    await faulty_ups.close()  # the device vanishes: connections cut, new ones refused
    try:
        attempts = []
        for now_s in (0.0, 1.0, 3.0, 7.0, 11.0):
            snapshot = await driver.read(now_s)
            attempts.append(snapshot.ups["ups1"].available)
        assert attempts == [False] * 5
        # Attempts at 0 (cut), 1 (+1 s), 3 (+2 s), 7 (+4 s), 11 (+4 s, the cap).
        assert driver.error_counts["ups1"] == 5
        skipped = await driver.read(12.0)
        assert skipped.ups["ups1"].available is False
        assert driver.error_counts["ups1"] == 5
    finally:
        await driver.stop()


async def test_an_unreachable_device_at_start_is_not_an_error(socket_enabled: None) -> None:
    driver = ModbusDriver([ups_device(1, timeout_s=0.2)])  # nothing listens on port 1
    await driver.start()
    try:
        snapshot = await driver.read(100.0)
        result = await driver.execute(Command(CommandKind.UPS_GROUP_OFF, "ups1/main"))
    finally:
        await driver.stop()
    assert snapshot.ups["ups1"].available is False
    assert not result.ok
    assert result.error == "device unreachable"


async def test_a_failed_command_reports_the_failure(faulty_ups: FaultyLink) -> None:
    driver = ModbusDriver([ups_device(faulty_ups.port, timeout_s=0.2)])
    await driver.start()
    faulty_ups.mode = "silent"
    try:
        result = await driver.execute(Command(CommandKind.UPS_GROUP_SHUTDOWN, "ups1/sog0"))
    finally:
        await driver.stop()
    assert not result.ok
    assert result.error


def test_devices_need_distinct_ids() -> None:
    with pytest.raises(ValueError, match="own id"):
        ModbusDriver([ups_device(502), ups_device(503)])


register_specs = st.builds(
    RegisterSpec,
    function=st.sampled_from(list(Function)),
    address=st.integers(min_value=0, max_value=3000),
    type=st.sampled_from([ValueType.U16, ValueType.U32, ValueType.FLOAT32]),
)


@given(st.lists(register_specs, max_size=60), st.integers(min_value=0, max_value=40))
def test_read_plans_cover_every_value_within_protocol_limits(
    specs: list[RegisterSpec], max_gap: int
) -> None:
    blocks = plan_reads(specs, max_gap)
    assert all(any(block.holds(spec) for block in blocks) for spec in specs)
    for block in blocks:
        limit = 2000 if block.function.is_bit_table else 125
        assert 1 <= block.count <= limit
    for first, second in itertools.pairwise(blocks):
        if first.function is second.function:
            assert first.address + first.count <= second.address  # no register read twice


@given(
    st.sampled_from(list(ValueType)),
    st.lists(st.integers(min_value=0, max_value=0xFFFF), min_size=2, max_size=2),
    st.sampled_from(["big", "little"]),
    st.one_of(st.none(), st.integers(min_value=0, max_value=15)),
)
def test_any_words_decode_without_raising(
    value_type: ValueType, words: list[int], word_order: str, bit: int | None
) -> None:
    function = Function.COIL if value_type is ValueType.BOOL else Function.HOLDING
    spec = RegisterSpec(function, 0, value_type, bit=bit, word_order=word_order)
    value = spec.decode(words[: spec.width])
    assert value is None or isinstance(value, bool | float)


async def test_impossible_readings_are_reported_unknown(modbus_site: ModbusSite) -> None:
    """A UPS claiming 150 % charge: the reading is dropped, the device stays available."""
    ups_profile = load_profile("apc_smart_ups")
    assert isinstance(ups_profile, UpsProfile)
    values = dict(ups_profile.values)
    values["soc_pct"] = RegisterSpec(Function.HOLDING, 130, ValueType.U16, scale=1.5 / 512)
    lying = UpsProfile("lying", values, ups_profile.outlet_groups, ups_profile.outlet_command)
    port = modbus_site.server.ports["ups1"]
    driver = ModbusDriver([ModbusDevice("ups1", HOST, lying, port=port)])
    await driver.start()
    try:
        reading = (await driver.read(1.0)).ups["ups1"]
    finally:
        await driver.stop()
    assert reading.available
    assert reading.soc_pct is None
    assert reading.runtime_s is not None


def fill_every_register(server: SiteModbusServer, word: int) -> None:
    """Every register of every simulated device holds `word`, every coil and input is set: a
    device answering with a blank or garbled map."""
    for tables in server.tables.values():  # the simulator's own tables, as served
        tables.holding[:] = [word] * len(tables.holding)
        tables.inputs.update(dict.fromkeys(tables.inputs, word))
        tables.coils[:] = [True] * len(tables.coils)


@pytest.mark.parametrize("word", [0xFFFF, 0xFFFE])
async def test_a_device_answering_all_ones_gives_no_power_and_gets_no_command(
    modbus_site: ModbusSite, word: int
) -> None:
    """0xFFFF is "not available"; 0xFFFE reads 6,553.4 W per outlet and 167 kW at the UPS, past
    every ceiling. Either way no power is reported, and reading writes nothing."""
    fill_every_register(modbus_site.server, word)
    proxies = {device_id: FaultyLink(port) for device_id, port in modbus_site.server.ports.items()}
    for proxy in proxies.values():
        await proxy.open()
    devices = [
        ModbusDevice(
            d.device_id,
            HOST,
            d.profile,
            port=proxies[d.device_id].port,
            outlet_count=d.outlet_count,
        )
        for d in modbus_site.devices()
    ]
    driver = ModbusDriver(devices)
    await driver.start()
    try:
        snapshots = [await driver.read(now_s) for now_s in (1.0, 11.0)]
    finally:
        await driver.stop()
        for proxy in proxies.values():
            await proxy.close()

    for snapshot in snapshots:
        ups = snapshot.ups["ups1"]
        assert ups.available
        assert (ups.output_w, ups.soc_pct, ups.runtime_s) == (None, None, None)
        assert [o.power_w for o in snapshot.outlets.values()] == [None] * len(snapshot.outlets)
    if word == 0xFFFF:  # missing, not implausible
        assert ups.online is None
        assert ups.on_battery is None
        assert driver.implausible_counts == {}
    else:  # garbage: counted per device every cycle
        assert driver.implausible_counts["pdu-a"] == 2 * 4
        assert driver.implausible_counts["ups1"] >= 2
    requests = {code for proxy in proxies.values() for code in proxy.function_codes()}
    assert requests <= {0x01, 0x02, 0x03, 0x04}  # reads only


async def test_power_ceilings_come_from_the_profile_or_the_site(modbus_site: ModbusSite) -> None:
    site, server = modbus_site.site, modbus_site.server
    site.advance(60)
    server.refresh()
    truth = site.snapshot()
    ups_w = truth.ups["ups1"].output_w
    db_w = truth.outlets["pdu-a/2"].power_w
    assert 0 < db_w < ups_w
    narrow = [
        ModbusDevice(
            d.device_id,
            HOST,
            d.profile,
            port=d.port,
            outlet_count=d.outlet_count,
            # The site's word: each outlet of pdu-a draws under half of db's share; the UPS,
            # rated for less than two thirds of what it gives.
            max_power_w=db_w / 2 if d.device_id == "pdu-a" else ups_max_power_w(ups_w / 2),
        )
        for d in modbus_site.devices()
    ]
    default = ModbusDriver(modbus_site.devices())
    site_limited = ModbusDriver(narrow)
    for driver in (default, site_limited):
        await driver.start()
    try:
        wide, tight = await default.read(1.0), await site_limited.read(1.0)
    finally:
        for driver in (default, site_limited):
            await driver.stop()

    assert wide.outlets["pdu-a/2"].power_w == pytest.approx(db_w, abs=0.05)
    assert wide.ups["ups1"].output_w is not None
    assert tight.outlets["pdu-a/2"].power_w is None
    assert tight.outlets["pdu-a/1"].power_w is not None  # 40 W, under the ceiling
    assert tight.ups["ups1"].output_w is None
    assert site_limited.implausible_counts == {"pdu-a": 1, "ups1": 1}


async def test_a_ups_saying_both_on_line_and_on_battery_is_on_battery(
    modbus_site: ModbusSite,
) -> None:
    holding = modbus_site.server.tables["ups1"].holding
    holding[0:2] = [0, 0b110]  # UPSStatus_BF: online and on battery at once
    holding[18] = 0b10  # ShutdownImminent
    driver = ModbusDriver([ups_device(modbus_site.server.ports["ups1"])])
    await driver.start()
    try:
        ups = (await driver.read(1.0)).ups["ups1"]
    finally:
        await driver.stop()
    assert (ups.online, ups.on_battery) == (False, True)
    assert (ups.low_battery, ups.forced_shutdown) == (True, True)
