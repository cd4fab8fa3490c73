"""Telemetry benchmark: MQTT ingest through a real Mosquitto, and the Modbus poll of a large site.

    python -m benchmarks.telemetry [--messages N] [--plugs N] [--rounds N] [--mqtt-port N]
        [--modbus-cycles N] [--json]

MQTT: a separate process publishes `--messages` Tasmota `tele/<plug>/SENSOR` messages (a real
firmware's payload, the power varying) round-robin over `--plugs` plugs to a Mosquitto on loopback
(started here on a free port unless `--mqtt-port` names one; it is stopped afterwards). Three
consumers take the same stream in turn, for `--rounds` rounds:

- a bare paho subscriber that only counts messages: the baseline;
- the same counting subscriber on the driver's transport, `ChunkedClient` (paho reading its
  socket in large chunks);
- the project's `MqttDriver`, which validates, parses and applies every message.

A consumer's rate is the messages it counted over the time from the publisher's first byte to the
consumer's last message; the figures are each consumer's median. Beside it, the CPU time of the
consumer's process per message, which depends far less than the rate on what else the machine is
running. Targets: at least 20,000 messages/s and a driver / bare ratio of at least 0.5. The
driver's transport reads faster than stock paho, so that ratio can exceed 1; driver / chunked is
what validating and applying cost on the same transport.

The publisher writes pre-encoded PUBLISH packets straight to its socket after paho has connected
it, built before it connects: paho's own publish path is slower than any consumer here and would
measure itself. The benchmark's broker queues without limit, so no message is dropped and every
consumer sees all of them; with `--mqtt-port` a broker's own queue limits may drop some, which the
report shows.

Modbus: `benchmarks.modbus_poll` (20 PDUs x 24 outlets plus 2 UPS units against the simulator),
reported as it reports itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from custom_components.power_allocation.drivers.mqtt import MqttDriver, MqttDriverConfig
from custom_components.power_allocation.drivers.mqtt_client import ChunkedClient
from custom_components.power_allocation.drivers.mqtt_profile import MqttDevice
from custom_components.power_allocation.drivers.native_stdout import keep_stdout_for_python

HOST = "127.0.0.1"
MOSQUITTO = os.environ.get("POWER_ALLOCATION_TEST_MOSQUITTO", "/usr/sbin/mosquitto")
TARGET_MESSAGES_PER_S = 20_000.0
TARGET_RATIO = 0.5
STARTUP_TIMEOUT_S = 10.0
# A consumer that has counted nothing new for this long after the publisher finished is done.
IDLE_AFTER_PUBLISHER_S = 2.0
POLL_S = 0.002


@dataclass(frozen=True, slots=True)
class IngestRun:
    """One consumer's share of the run."""

    consumer: str
    messages_published: int
    messages_counted: int
    # From the publisher's first byte to the consumer's last message (the clock is system-wide).
    sent_to_last_s: float
    messages_per_s: float
    # CPU time of the consumer's process over the run, per message: what the machine's load
    # hardly changes, where messages/s depends on the CPU share the consumer got.
    cpu_us_per_message: float


@dataclass(frozen=True, slots=True)
class MqttIngestBenchmark:
    """Every consumer over alternating rounds, and how the driver compares (medians)."""

    plugs: int
    payload_bytes: int
    bare_rounds: tuple[IngestRun, ...]
    chunked_rounds: tuple[IngestRun, ...]
    driver_rounds: tuple[IngestRun, ...]
    bare_median_per_s: float
    chunked_median_per_s: float
    driver_median_per_s: float
    ratio_to_bare: float
    ratio_to_chunked: float
    malformed: int

    @property
    def meets_target(self) -> bool:
        """At least 20,000 messages/s, ratio at least 0.5, nothing lost or rejected."""
        return (
            self.driver_median_per_s >= TARGET_MESSAGES_PER_S
            and self.ratio_to_bare >= TARGET_RATIO
            and all(r.messages_counted == r.messages_published for r in self.driver_rounds)
            and self.malformed == 0
        )


def sensor_payload(power_w: float) -> bytes:
    """What Tasmota 13 publishes on tele/<topic>/SENSOR for a metering plug."""
    return json.dumps(
        {
            "Time": "2026-11-27T23:00:00",
            "ENERGY": {
                "TotalStartTime": "2026-01-01T00:00:00",
                "Total": 12.345,
                "Yesterday": 0.512,
                "Today": 0.128,
                "Period": 3,
                "Power": power_w,
                "ApparentPower": round(power_w * 1.1, 1),
                "ReactivePower": round(power_w * 0.3, 1),
                "Factor": 0.91,
                "Voltage": 231,
                "Current": round(power_w / 231, 3),
            },
        },
        separators=(",", ":"),
    ).encode()


def plug_topic(index: int) -> str:
    """The Tasmota topic of plug `index`."""
    return f"bench{index}"


def _publish_packet(topic: str, payload: bytes) -> bytes:
    """An MQTT 3.1.1 PUBLISH at QoS 0: fixed header, remaining length, topic, payload."""
    encoded_topic = topic.encode()
    body = len(encoded_topic).to_bytes(2, "big") + encoded_topic + payload
    length, remaining = bytearray(), len(body)
    while True:
        remaining, digit = divmod(remaining, 128)
        length.append(digit | 0x80 if remaining else digit)
        if not remaining:
            break
    return b"\x30" + bytes(length) + body


def publish_burst(port: int, messages: int, plugs: int, sending_since: Synchronized[float]) -> None:
    """The publisher process: connect with paho, then write every PUBLISH packet at once, saying
    when it began in `sending_since` (`time.monotonic()`)."""
    packets = b"".join(
        _publish_packet(f"tele/{plug_topic(n % plugs)}/SENSOR", sensor_payload(float(n % 2000) / 4))
        for n in range(messages)
    )
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.connect(HOST, port)
    client.loop(timeout=1.0)  # CONNACK
    sock = client.socket()
    assert isinstance(sock, socket.socket)
    sock.setblocking(True)
    sending_since.value = time.monotonic()
    sock.sendall(packets)
    client.disconnect()


@dataclass(frozen=True, slots=True)
class _Publisher:
    process: BaseProcess
    sending_since: Synchronized[float]


def _start_publisher(port: int, messages: int, plugs: int) -> _Publisher:
    # spawn: the parent runs paho threads, which a fork would copy half-way.
    context = multiprocessing.get_context("spawn")
    sending_since = context.Value("d", math.nan)
    process = context.Process(
        target=publish_burst, args=(port, messages, plugs, sending_since), name="bench-publisher"
    )
    process.start()
    return _Publisher(process, sending_since)


def _process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _drain(
    consumer: str, count: Callable[[], int], expected: int, publisher: _Publisher
) -> IngestRun:
    """Poll a consumer's counter until it has every message (or stops getting any after the
    publisher is done), and time it from the publisher's first byte to the last message."""
    last_count, last_change_s = 0, time.monotonic()
    # This process's CPU time, to the last message: the consumer's work (and this poll's).
    cpu_before_s = last_change_cpu_s = _process_cpu_s()
    while True:
        counted, now_s = count(), time.monotonic()
        if counted != last_count:
            last_count, last_change_s, last_change_cpu_s = counted, now_s, _process_cpu_s()
        if counted >= expected:
            break
        if not publisher.process.is_alive() and now_s - last_change_s > IDLE_AFTER_PUBLISHER_S:
            break
        time.sleep(POLL_S)
    publisher.process.join()
    sending_since = publisher.sending_since.value
    seconds = 0.0 if math.isnan(sending_since) else last_change_s - sending_since
    return IngestRun(
        consumer=consumer,
        messages_published=expected,
        messages_counted=last_count,
        sent_to_last_s=seconds,
        messages_per_s=last_count / seconds if seconds > 0 else 0.0,
        cpu_us_per_message=(last_change_cpu_s - cpu_before_s) / last_count * 1e6
        if last_count
        else 0.0,
    )


BARE = "bare paho subscriber"
CHUNKED = "bare ChunkedClient subscriber"
DRIVER = "project MqttDriver"


def measure_bare(
    port: int, messages: int, plugs: int, client_class: type[mqtt.Client] = mqtt.Client
) -> IngestRun:
    """A subscriber that only counts, on paho's own network thread: stock paho, or the driver's
    `ChunkedClient`."""
    counted = [0]
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        counted[0] += 1

    client = client_class(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(HOST, port)
    client.subscribe([(f"tele/{plug_topic(n)}/SENSOR", 1) for n in range(plugs)])
    client.loop_start()
    try:
        if not subscribed.wait(STARTUP_TIMEOUT_S):
            raise TimeoutError("the bare subscriber was not subscribed in time")
        publisher = _start_publisher(port, messages, plugs)
        consumer = BARE if client_class is mqtt.Client else CHUNKED
        run = _drain(consumer, lambda: counted[0], messages, publisher)
    finally:
        client.disconnect()
        client.loop_stop()
    return run


async def measure_driver(port: int, messages: int, plugs: int) -> tuple[IngestRun, int]:
    """The project's driver with one Tasmota device per plug; (its run, malformed messages)."""
    devices = tuple(
        MqttDevice("tasmota", f"pdu{n // 24}/{n % 24 + 1}", {"topic": plug_topic(n)})
        for n in range(plugs)
    )
    config = MqttDriverConfig(
        host=HOST, port=port, client_id="bench-driver", broadcast_status=False, devices=devices
    )
    driver = MqttDriver(config)
    await driver.start()
    try:
        # The driver reports itself connected once the broker has acknowledged its subscriptions.
        deadline_s = time.monotonic() + STARTUP_TIMEOUT_S
        while not driver.connected:
            if time.monotonic() > deadline_s:
                raise TimeoutError("the driver did not subscribe in time")
            await asyncio.sleep(0.01)
        before = driver.counts().applied

        def handled() -> int:
            counts = driver.counts()
            return counts.applied - before + sum(counts.malformed.values())

        publisher = _start_publisher(port, messages, plugs)
        run = await asyncio.to_thread(_drain, DRIVER, handled, messages, publisher)
        malformed = sum(driver.counts().malformed.values())
    finally:
        await driver.stop()
    return run, malformed


@contextlib.contextmanager
def mosquitto() -> Iterator[int]:
    """A Mosquitto on a free loopback port that queues without limit; its port."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = int(probe.getsockname()[1])
    with tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / "mosquitto.conf"
        lines = [
            f"listener {port} {HOST}",
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages 0",
            "max_queued_bytes 0",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # it would drop to the `mosquitto` user otherwise
        config.write_text("\n".join(lines) + "\n")
        process = subprocess.Popen(
            [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline_s = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                try:
                    socket.create_connection((HOST, port), timeout=0.5).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline_s:
                        raise RuntimeError("mosquitto did not start") from None
                    time.sleep(0.02)
            yield port
        finally:
            process.terminate()
            process.wait()


def run_mqtt_ingest(
    messages: int, plugs: int, port: int | None = None, rounds: int = 3
) -> MqttIngestBenchmark:
    """Every consumer on one broker (the given one, or one started for the run), taking turns
    for `rounds` rounds so that a burst of other work on the machine hits them alike."""
    bare_rounds: list[IngestRun] = []
    chunked_rounds: list[IngestRun] = []
    driver_rounds: list[IngestRun] = []
    malformed = 0
    with contextlib.ExitStack() as stack:
        if port is None:
            if shutil.which(MOSQUITTO) is None:
                raise SystemExit(f"{MOSQUITTO} not found: install Debian's mosquitto")
            port = stack.enter_context(mosquitto())
        for _ in range(rounds):
            bare_rounds.append(measure_bare(port, messages, plugs))
            chunked_rounds.append(measure_bare(port, messages, plugs, ChunkedClient))
            driver, dropped = asyncio.run(measure_driver(port, messages, plugs))
            driver_rounds.append(driver)
            malformed += dropped
    bare_median = statistics.median(r.messages_per_s for r in bare_rounds)
    chunked_median = statistics.median(r.messages_per_s for r in chunked_rounds)
    driver_median = statistics.median(r.messages_per_s for r in driver_rounds)
    return MqttIngestBenchmark(
        plugs=plugs,
        payload_bytes=len(sensor_payload(123.25)),
        bare_rounds=tuple(bare_rounds),
        chunked_rounds=tuple(chunked_rounds),
        driver_rounds=tuple(driver_rounds),
        bare_median_per_s=bare_median,
        chunked_median_per_s=chunked_median,
        driver_median_per_s=driver_median,
        ratio_to_bare=driver_median / bare_median if bare_median else 0.0,
        ratio_to_chunked=driver_median / chunked_median if chunked_median else 0.0,
        malformed=malformed,
    )


def run_benchmark(
    messages: int,
    plugs: int,
    mqtt_port: int | None,
    modbus_cycles: int,
    modbus_pdus: int = 20,
    rounds: int = 3,
) -> dict[str, Any]:
    """Every figure of the run, as JSON-ready data."""
    from benchmarks.modbus_poll import run_modbus_poll_benchmark

    ingest = run_mqtt_ingest(messages, plugs, mqtt_port, rounds)
    mqtt_figures = asdict(ingest) | {"meets_target": ingest.meets_target}
    modbus = run_modbus_poll_benchmark(modbus_cycles, pdus=modbus_pdus) if modbus_cycles else None
    return {"mqtt_ingest": mqtt_figures, "modbus_poll": modbus}


def format_table(figures: dict[str, Any]) -> str:
    """The human-readable report."""
    from benchmarks.modbus_poll import format_table as format_modbus_table

    ingest = figures["mqtt_ingest"]
    lines = [
        f"MQTT ingest: Tasmota SENSOR payloads of {ingest['payload_bytes']} bytes over "
        f"{ingest['plugs']} plugs, Mosquitto on loopback",
        "",
        "| round | consumer | published | counted | first sent to last s | messages/s "
        "| CPU us/message |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    rounds = zip(
        ingest["bare_rounds"], ingest["chunked_rounds"], ingest["driver_rounds"], strict=True
    )
    for number, turns in enumerate(rounds):
        for run in turns:
            lines.append(
                f"| {number + 1} | {run['consumer']} | {run['messages_published']:,} "
                f"| {run['messages_counted']:,} | {run['sent_to_last_s']:.3f} "
                f"| {run['messages_per_s']:,.0f} | {run['cpu_us_per_message']:.1f} |"
            )

    def median_cpu(consumer: str) -> str:
        return f"{statistics.median(r['cpu_us_per_message'] for r in ingest[consumer]):.1f}"

    lines += [
        "",
        f"median messages/s: bare {ingest['bare_median_per_s']:,.0f}, "
        f"chunked {ingest['chunked_median_per_s']:,.0f}, "
        f"driver {ingest['driver_median_per_s']:,.0f} (target >= {TARGET_MESSAGES_PER_S:,.0f})",
        f"driver / bare (medians): {ingest['ratio_to_bare']:.3f} (target >= {TARGET_RATIO})",
        f"driver / chunked (medians, the cost of validating and applying): "
        f"{ingest['ratio_to_chunked']:.3f}",
        f"median consumer CPU us/message: bare {median_cpu('bare_rounds')}, "
        f"chunked {median_cpu('chunked_rounds')}, driver {median_cpu('driver_rounds')}",
        f"malformed: {ingest['malformed']}",
        f"meets target: {'yes' if ingest['meets_target'] else 'no'}",
    ]
    if figures["modbus_poll"] is not None:
        lines += ["", "Modbus poll:", format_modbus_table(figures["modbus_poll"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line; returns the figures it printed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.telemetry", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000, help="MQTT messages per consumer")
    parser.add_argument("--plugs", type=int, default=100, help="Tasmota plugs they spread over")
    parser.add_argument("--rounds", type=int, default=3, help="turns each consumer takes")
    parser.add_argument("--mqtt-port", type=int, help="use the Mosquitto already on this port")
    parser.add_argument("--modbus-cycles", type=int, default=50, help="0 skips the Modbus part")
    parser.add_argument("--modbus-pdus", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    figures = run_benchmark(
        args.messages, args.plugs, args.mqtt_port, args.modbus_cycles, args.modbus_pdus, args.rounds
    )
    print(json.dumps(figures, indent=2) if args.json else format_table(figures))
    return figures


if __name__ == "__main__":
    keep_stdout_for_python()
    main(sys.argv[1:])
