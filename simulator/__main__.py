"""Run a simulated site on real sockets.

    python -m simulator run SCENARIO.yaml [--host 127.0.0.1] [--modbus-port 5020]
        [--control-port 7070] [--speed X] [--start-s T]
        [--mqtt-host H --mqtt-port N --mqtt-profile P --mqtt-prefix PREFIX]
        [--agent-secrets TOPOLOGY.yaml]
    python -m simulator control [--host 127.0.0.1] [--port 7070] COMMAND...

MQTT profiles (simulator/mqtt_bridge.py): tasmota, shelly_gen2, nut (default), power_allocation.
The services' host agents check each command's signature with the `agent_secret` the site topology
`--agent-secrets` gives each service (docs/demo-topology.yaml for the demo); an agent without one
refuses every command.

Simulated time runs `--speed` times faster than the wall clock from `--start-s` (default 0; use
the scenario's `history_s` minus a little to land just before its outage) and follows the
scenario's timeline. Modbus: each UPS, then each PDU, on its own port from `--modbus-port` (0 picks
free ports). Once listening, one JSON line on stdout gives every port:
`{"modbus": {"ups1": 5020, "pdu-a": 5021}, "control": 7070}`.

Control channel: a line-based TCP socket on `--control-port`; each line is one command and gets
one reply line, `ok`, `error <why>`, or JSON for `status`:

    outage start | outage end          mains off / on now
    load SERVICE EXTRA_W DURATION_S    step a service's demand up (or down) for a while
    outlet PDU/N on|off                switch an outlet
    shutdown SERVICE | start SERVICE   ask a host to stop gracefully / boot
    throttle SERVICE CAP_W|none        cap (or release) a service's draw
    status                             the site snapshot as JSON

`control` sends one command to a running simulator and prints its reply; it exits 1 on an
`error` reply (Home Assistant's demo dashboard starts and ends outages with it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from custom_components.power_allocation.drivers.scenario_file import (
    ScenarioFileError,
    load_scenario,
)

from .modbus_server import SiteModbusServer
from .mqtt_bridge import BRIDGE_PROFILES, MqttBridge, agent_secrets_from_topology
from .site import SimulatedSite

# Wall-clock pacing: never tick faster than this, however fast the simulation runs.
MIN_TICK_S = 0.05


def control_reply(site: SimulatedSite, line: str) -> str:
    """Carry out one control-channel command and say how it went."""
    words = line.split()
    try:
        match words:
            case ["outage", "start"]:
                site.set_mains(False)
            case ["outage", "end"]:
                site.set_mains(True)
            case ["load", service, extra_w, duration_s]:
                site.step_load(service, float(extra_w), float(duration_s))
            case ["outlet", outlet_id, ("on" | "off") as state]:
                site.set_outlet(outlet_id, state == "on")
            case ["shutdown", service]:
                site.request_shutdown(service)
            case ["start", service]:
                site.request_start(service)
            case ["throttle", service, cap]:
                site.throttle(service, None if cap == "none" else float(cap))
            case ["status"]:
                return json.dumps(dataclasses.asdict(site.snapshot()))
            case _:
                return f"error unknown command {line.strip()!r}"
    except KeyError as error:
        return f"error {error.args[0]}"
    except ValueError as error:
        return f"error {error}"
    return "ok"


class SimulatorRun:
    """The site, its servers and the clock that moves it."""

    def __init__(self, site: SimulatedSite, args: argparse.Namespace) -> None:
        self.site = site
        self.args = args
        self.modbus = SiteModbusServer(site, args.host, args.modbus_port)
        self.mqtt: MqttBridge | None = None
        self.control: asyncio.Server | None = None

    async def start(self) -> dict[str, Any]:
        """Open every socket; the ports actually used."""
        await self.modbus.start()
        self.control = await asyncio.start_server(
            self._serve_control, self.args.host, self.args.control_port
        )
        if self.args.mqtt_host:
            bridge = MqttBridge(
                self.site,
                self.args.mqtt_host,
                self.args.mqtt_port,
                self.args.mqtt_profile,
                self.args.mqtt_prefix,
                agent_secrets=(
                    agent_secrets_from_topology(self.args.agent_secrets)
                    if self.args.agent_secrets
                    else {}
                ),
            )
            await bridge.start()
            self.mqtt = bridge
        return {
            "modbus": self.modbus.ports,
            "control": self.control.sockets[0].getsockname()[1],
        }

    async def stop(self) -> None:
        """Close every socket."""
        if self.mqtt is not None:
            await self.mqtt.stop()
        if self.control is not None:
            self.control.close()
            await self.control.wait_closed()
        await self.modbus.stop()

    async def run_until(self, stop: asyncio.Event) -> None:
        """Advance simulated time with the wall clock until `stop` is set."""
        loop = asyncio.get_running_loop()
        step_s = self.site.scenario.step_s
        tick_s = max(MIN_TICK_S, step_s / self.args.speed)
        owed_s = 0.0
        last = loop.time()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick_s)
            now = loop.time()
            owed_s += (now - last) * self.args.speed
            last = now
            while owed_s >= step_s:
                self.site.advance(step_s)
                owed_s -= step_s
            self.modbus.refresh()
            if self.mqtt is not None:
                self.mqtt.publish()

    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while line := await reader.readline():
                reply = control_reply(self.site, line.decode(errors="replace"))
                self.modbus.refresh()
                writer.write(reply.encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


async def send_control(host: str, port: int, command: str) -> str:
    """One command on a running simulator's control channel; its reply line."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(command.encode() + b"\n")
        await writer.drain()
        return (await reader.readline()).decode().strip()
    finally:
        writer.close()
        await writer.wait_closed()


async def control(args: argparse.Namespace) -> int:
    """Send the command line's control command and print the reply."""
    try:
        reply = await send_control(args.host, args.port, " ".join(args.words))
    except OSError as error:
        print(f"cannot reach the simulator on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    print(reply)
    return 1 if reply.startswith("error") or not reply else 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve a scenario's site on Modbus TCP (and MQTT)")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on")
    run.add_argument("--modbus-port", type=int, default=5020, help="first Modbus port (0: free)")
    run.add_argument("--control-port", type=int, default=7070, help="control channel (0: free)")
    run.add_argument("--speed", type=float, default=1.0, help="simulated seconds per second")
    run.add_argument("--start-s", type=float, default=0.0, help="simulated time to start at")
    run.add_argument("--mqtt-host", help="publish to and obey this MQTT broker")
    run.add_argument("--mqtt-port", type=int, default=1883)
    run.add_argument("--mqtt-profile", default="nut", choices=BRIDGE_PROFILES)
    run.add_argument("--mqtt-prefix", default="sim", help="topic prefix")
    run.add_argument(
        "--agent-secrets",
        type=Path,
        help="site topology YAML whose services' agent_secret the host agents check",
    )
    send = commands.add_parser("control", help="send one command to a running simulator")
    send.add_argument("--host", default="127.0.0.1", help="the simulator's address")
    send.add_argument("--port", type=int, default=7070, help="its control port")
    send.add_argument("words", nargs="+", metavar="COMMAND", help="e.g. outage start")
    args = parser.parse_args(argv)
    if args.command == "run" and args.speed <= 0:
        parser.error("--speed must be positive")
    return args


async def serve(args: argparse.Namespace) -> int:
    """Run until SIGINT or SIGTERM."""
    try:
        scenario = await asyncio.to_thread(load_scenario, args.scenario)
    except ScenarioFileError as error:
        print(error, file=sys.stderr)
        return 2
    run = SimulatorRun(SimulatedSite(scenario, start_s=args.start_s), args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        ports = await run.start()
    except OSError as error:
        await run.stop()
        print(f"cannot listen: {error}", file=sys.stderr)
        return 1
    print(json.dumps(ports), flush=True)
    try:
        await run.run_until(stop)
    finally:
        await run.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return asyncio.run(serve(args) if args.command == "run" else control(args))


if __name__ == "__main__":
    sys.exit(main())
