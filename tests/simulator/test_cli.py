"""`python -m simulator run`: its control channel, and the whole program over real sockets."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from custom_components.power_allocation.drivers.modbus import ModbusDevice, ModbusDriver
from custom_components.power_allocation.drivers.profile import load_profile
from custom_components.power_allocation.engine.scenario import Scenario
from simulator.__main__ import control_reply, parse_args, serve
from simulator.site import ServiceMode, SimulatedSite
from tests.fixtures.modbus_site import HOST
from tests.fixtures.mqtt_broker import Mosquitto, MqttPeer, eventually, free_port

REPOSITORY = Path(__file__).parents[2]
DEMO = REPOSITORY / "simulator" / "scenarios" / "demo.yaml"
STARTUP_TIMEOUT_S = 120.0  # importing Home Assistant's package on a slow runner
WAIT_S = 10.0


@pytest.fixture
def site(small_scenario: Scenario) -> SimulatedSite:
    return SimulatedSite(small_scenario, follow_timeline=False)


def test_outage_commands(site: SimulatedSite) -> None:
    assert control_reply(site, "outage start\n") == "ok"
    assert not site.mains_on
    assert control_reply(site, "outage end") == "ok"
    assert site.mains_on


def test_load_outlet_and_service_commands(site: SimulatedSite) -> None:
    assert control_reply(site, "load network 60 10") == "ok"
    assert site.snapshot().services["network"].power_w == 100.0
    assert control_reply(site, "outlet pdu-b/3 off") == "ok"
    assert not site.snapshot().outlets["pdu-b/3"].is_on
    assert control_reply(site, "throttle db 120") == "ok"
    assert site.snapshot().services["db"].power_w == 120.0
    assert control_reply(site, "throttle db none") == "ok"
    assert control_reply(site, "shutdown db") == "ok"
    assert site.snapshot().services["db"].mode is ServiceMode.STOPPING
    site.advance(30)
    assert control_reply(site, "start db") == "ok"
    assert site.snapshot().services["db"].mode is ServiceMode.STARTING


def test_status_is_the_snapshot_as_json(site: SimulatedSite) -> None:
    status = json.loads(control_reply(site, "status"))
    assert status["ups"]["ups1"]["soc_pct"] == 100.0
    assert status["outlets"]["pdu-a/1"]["power_w"] == 40.0
    assert status["services"]["db"]["mode"] == "running"


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("", "error unknown command ''"),
        ("outage maybe", "error unknown command 'outage maybe'"),
        ("load ghost 5 5", "error unknown service 'ghost'"),
        ("load network lots 5", "error could not convert string to float: 'lots'"),
        ("outlet pdu-a/9 on", "error unknown outlet 'pdu-a/9'"),
        ("throttle db -5", "error cap_w must be a finite number of watts >= 0, got -5.0"),
    ],
)
def test_bad_commands_are_answered_not_raised(site: SimulatedSite, line: str, reply: str) -> None:
    before = site.snapshot()
    assert control_reply(site, line) == reply
    assert site.snapshot() == before


def test_arguments() -> None:
    args = parse_args(["run", "x.yaml", "--modbus-port", "0", "--speed", "60"])
    assert (args.scenario, args.modbus_port, args.speed, args.mqtt_host) == (
        "x.yaml",
        0,
        60.0,
        None,
    )
    with pytest.raises(SystemExit):
        parse_args(["run", "x.yaml", "--speed", "0"])
    with pytest.raises(SystemExit):
        parse_args(["run", "x.yaml", "--mqtt-profile", "zigbee"])
    args = parse_args(["control", "--port", "7071", "outage", "start"])
    assert (args.host, args.port, args.words) == ("127.0.0.1", 7071, ["outage", "start"])
    with pytest.raises(SystemExit):
        parse_args(["control"])


@dataclass
class RunningSimulator:
    process: asyncio.subprocess.Process
    modbus_ports: dict[str, int]
    control_port: int

    async def control(self, *lines: str) -> list[str]:
        reader, writer = await asyncio.open_connection(HOST, self.control_port)
        try:
            replies = []
            for line in lines:
                writer.write(line.encode() + b"\n")
                await writer.drain()
                replies.append((await asyncio.wait_for(reader.readline(), WAIT_S)).decode().strip())
            return replies
        finally:
            writer.close()
            await writer.wait_closed()


@pytest.fixture
async def simulator_process(
    mqtt_broker: Mosquitto,
) -> AsyncIterator[RunningSimulator]:
    """The demo scenario just before its outage, on Modbus, MQTT (NUT topics) and control."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "simulator", "run", str(DEMO), "--start-s", "86000", "--speed", "10"),
        *("--modbus-port", "0", "--control-port", "0"),
        *("--mqtt-host", HOST, "--mqtt-port", str(mqtt_broker.port), "--mqtt-prefix", "clitest"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPOSITORY,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT_S)
        assert line, "the simulator exited before listening"
        ports = json.loads(line)
        yield RunningSimulator(process, ports["modbus"], ports["control"])
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), WAIT_S)


async def test_the_program_serves_and_obeys(
    simulator_process: RunningSimulator,
    mqtt_broker: Mosquitto,
    mqtt_peers: Callable[..., MqttPeer],
) -> None:
    onlooker = mqtt_peers(mqtt_broker, "cli-onlooker", ["clitest/#"])
    ports = simulator_process.modbus_ports
    assert set(ports) == {"ups1", "pdu-a", "pdu-b"}
    driver = ModbusDriver(
        [
            ModbusDevice("ups1", HOST, load_profile("apc_smart_ups"), port=ports["ups1"]),
            ModbusDevice(
                "pdu-b", HOST, load_profile("generic_pdu"), port=ports["pdu-b"], outlet_count=8
            ),
        ]
    )
    await driver.start()
    try:
        before = await driver.read(0.0)
        assert before.ups["ups1"].online is True
        assert before.outlets["pdu-b/4"].power_w == pytest.approx(40.0)  # monitoring
        replies = await simulator_process.control("outage start", "load monitoring 200 600")
        assert replies == ["ok", "ok"]
        during = await driver.read(1.0)
        assert during.ups["ups1"].on_battery is True
        assert during.outlets["pdu-b/4"].power_w == pytest.approx(240.0)
        status = json.loads((await simulator_process.control("status"))[0])
        assert status["mains_on"] is False
        assert status["time_s"] > 86000
        await eventually(
            lambda: any("ups1" in topic for topic, _ in onlooker.received), timeout_s=WAIT_S
        )
    finally:
        await driver.stop()
    simulator_process.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(simulator_process.process.wait(), WAIT_S) == 0


async def run_control(port: int, *words: str) -> tuple[int, str]:
    """`python -m simulator control` as a program: its exit code and what it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "simulator", "control", "--port", str(port), *words),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=REPOSITORY,
    )
    output, _ = await asyncio.wait_for(process.communicate(), STARTUP_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, output.decode().strip()


async def test_the_control_command_sends_one_line(simulator_process: RunningSimulator) -> None:
    port = simulator_process.control_port
    assert await run_control(port, "outage", "start") == (0, "ok")
    status = json.loads((await simulator_process.control("status"))[0])
    assert status["mains_on"] is False
    assert await run_control(port, "outage", "end") == (0, "ok")
    status = json.loads((await simulator_process.control("status"))[0])
    assert status["mains_on"] is True
    assert await run_control(port, "outage", "maybe") == (
        1,
        "error unknown command 'outage maybe'",
    )


async def test_the_control_command_says_when_nobody_listens(socket_enabled: None) -> None:
    port = free_port()
    code, output = await run_control(port, "status")
    assert code == 1
    assert output.startswith(f"cannot reach the simulator on 127.0.0.1:{port}:")


async def test_a_bad_scenario_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text("name: bad\nups: []\nservices: []\n")
    assert await serve(parse_args(["run", str(scenario)])) == 2
    assert "bad.yaml: ups" in capsys.readouterr().err
