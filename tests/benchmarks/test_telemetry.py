"""Smoke test: the telemetry benchmark runs end to end on a tiny input (figures not judged)."""

from __future__ import annotations

import json

import pytest

from benchmarks import telemetry
from tests.fixtures.mqtt_broker import Mosquitto


def test_telemetry_benchmark_runs_on_a_tiny_input(
    mqtt_broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = telemetry.main(
        [
            *("--messages", "300", "--plugs", "3", "--rounds", "1"),
            *("--mqtt-port", str(mqtt_broker.port)),
            *("--modbus-cycles", "1", "--modbus-pdus", "1", "--json"),
        ]
    )

    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(figures))
    ingest = figures["mqtt_ingest"]
    for run in (*ingest["bare_rounds"], *ingest["chunked_rounds"], *ingest["driver_rounds"]):
        # Counts only: a rate over 300 messages on a loaded machine is no figure to judge.
        assert run["messages_counted"] == run["messages_published"] == 300
    assert ingest["malformed"] == 0
    assert figures["modbus_poll"]["unavailable_device_reads"] == 0
    table = telemetry.format_table(figures)
    assert all(
        consumer in table for consumer in (telemetry.BARE, telemetry.CHUNKED, telemetry.DRIVER)
    )


def test_publish_packets_are_valid_mqtt() -> None:
    # Remaining length is a base-128 varint: 321 bytes of body take two bytes.
    packet = telemetry._publish_packet("t", b"x" * 318)
    assert packet[:3] == bytes([0x30, 321 % 128 | 0x80, 321 // 128])
    assert packet[3:6] == b"\x00\x01t"
