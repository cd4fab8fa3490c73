"""The simulator's Modbus servers, read and written by a third-party master (Debian's mbpoll).

mbpoll numbers registers from 1: protocol address a is `-r a+1`.
"""

from __future__ import annotations

import asyncio
import re
import shutil

from custom_components.power_allocation.drivers.modbus import ModbusDriver
from tests.fixtures.modbus_site import HOST, ModbusSite

MBPOLL = shutil.which("mbpoll") or "/usr/bin/mbpoll"
WAIT_S = 10.0


async def mbpoll(port: int, *args: str) -> dict[int, int]:
    """Run mbpoll once against the port; the values it printed, by 1-based reference."""
    process = await asyncio.create_subprocess_exec(
        MBPOLL,
        "-m",
        "tcp",
        "-p",
        str(port),
        "-a",
        "1",
        "-1",
        "-o",
        "2",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), WAIT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode()
    return {
        int(reference): int(value)
        for reference, value in re.findall(r"^\[(\d+)\]:\s+(-?\d+)", stdout.decode(), re.M)
    }


async def test_mbpoll_reads_what_the_driver_reads(modbus_site: ModbusSite) -> None:
    site, server = modbus_site.site, modbus_site.server
    site.set_mains(False)
    site.advance(90)
    server.refresh()
    driver = ModbusDriver(modbus_site.devices())
    await driver.start()
    try:
        reading = (await driver.read(1.0)).ups["ups1"]
    finally:
        await driver.stop()
    port = server.ports["ups1"]
    status = await mbpoll(port, "-t", "4:int", "-B", "-r", "1", HOST)
    runtime = await mbpoll(port, "-t", "4:int", "-B", "-r", "129", HOST)
    charge = await mbpoll(port, "-t", "4", "-r", "131", HOST)
    assert reading.runtime_s == runtime[129]
    assert reading.soc_pct == charge[131] / 512
    assert reading.on_battery is bool(status[1] >> 2 & 1) is True
    assert reading.online is bool(status[1] >> 1 & 1) is False
    assert reading.soc_pct < 100


async def test_mbpoll_reads_the_generic_pdu_map(modbus_site: ModbusSite) -> None:
    port = modbus_site.server.ports["pdu-a"]
    header = await mbpoll(port, "-t", "3", "-r", "1", "-c", "2", HOST)
    power = await mbpoll(port, "-t", "3", "-r", "101", "-c", "4", HOST)
    relays = await mbpoll(port, "-t", "0", "-r", "1", "-c", "4", HOST)
    assert header == {1: 1, 2: 4}  # map version 1, four outlets
    assert power == {101: 400, 102: 1500, 103: 0, 104: 0}  # 0.1 W
    assert relays == {1: 1, 2: 1, 3: 1, 4: 1}


async def test_mbpoll_switches_an_outlet(modbus_site: ModbusSite) -> None:
    await mbpoll(modbus_site.server.ports["pdu-b"], "-t", "0", "-r", "3", HOST, "0")
    outlet = modbus_site.site.snapshot().outlets["pdu-b/3"]
    assert not outlet.is_on
    assert outlet.power_w == 0.0


async def test_mbpoll_commands_an_outlet_group(modbus_site: ModbusSite) -> None:
    """OutletCommand_BF low word (register 1539): bit 2 off, bit 9 target switched group 0."""
    port = modbus_site.server.ports["ups1"]
    await mbpoll(port, "-t", "4", "-r", "1540", HOST, str(1 << 2 | 1 << 9))
    snapshot = modbus_site.site.snapshot()
    assert snapshot.ups["ups1"].groups_on["sog0"] is False
    assert not snapshot.outlets["pdu-a/1"].powered
    assert snapshot.outlets["pdu-b/3"].powered
    group = await mbpoll(port, "-t", "4:int", "-B", "-r", "7", HOST)
    assert group[7] & 0b11 == 0b10  # OutletStatus_BF: state off
    command = await mbpoll(port, "-t", "4:int", "-B", "-r", "1539", HOST)
    assert command[1539] == 0  # the card clears the command once taken


async def test_an_ambiguous_outlet_command_is_ignored(modbus_site: ModbusSite) -> None:
    port = modbus_site.server.ports["ups1"]
    await mbpoll(port, "-t", "4", "-r", "1540", HOST, str(1 << 1 | 1 << 2 | 1 << 8))
    assert modbus_site.site.snapshot().ups["ups1"].groups_on["main"] is True


async def test_registers_outside_the_pdu_map_are_refused(modbus_site: ModbusSite) -> None:
    process = await asyncio.create_subprocess_exec(
        MBPOLL,
        *("-m", "tcp", "-p", str(modbus_site.server.ports["pdu-a"]), "-1", "-o", "2"),
        *("-t", "3", "-r", "105", HOST),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), WAIT_S)
    assert "Illegal data address" in (stdout + stderr).decode()


async def test_refresh_publishes_an_outage(modbus_site: ModbusSite) -> None:
    site, server = modbus_site.site, modbus_site.server
    port = server.ports["ups1"]
    before = await mbpoll(port, "-t", "4:int", "-B", "-r", "1", HOST)
    site.set_mains(False)
    server.refresh()
    after = await mbpoll(port, "-t", "4:int", "-B", "-r", "1", HOST)
    signaling = await mbpoll(port, "-t", "4", "-r", "19", HOST)
    assert before[1] == 1 << 1  # online
    assert after[1] == 1 << 2  # on battery
    assert signaling[19] & 1  # SimpleSignalingStatus_BF: power failure
