"""The chunked receive path under the MQTT driver: byte-exact reads, and floods through a broker."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from custom_components.power_allocation.drivers import mqtt_client
from custom_components.power_allocation.drivers.interface import Command, CommandKind
from custom_components.power_allocation.drivers.mqtt import MessageCounts, MqttDriver
from custom_components.power_allocation.drivers.mqtt_client import ChunkedClient, ChunkedSocket
from custom_components.power_allocation.drivers.mqtt_profile import MqttDevice
from tests.drivers.test_mqtt import (
    PeerFactory,
    answer_tasmota,
    config_for,
    snapshot_where,
)
from tests.fixtures.mqtt_broker import Mosquitto, eventually

FLOOD_PLUG = MqttDevice("tasmota", "pdu-a/1", {"topic": "flood"})


@pytest.fixture
def socket_pair(socket_enabled: None) -> Iterator[tuple[socket.socket, socket.socket]]:
    writer, reader = socket.socketpair()
    reader.setblocking(False)
    yield writer, reader
    writer.close()
    reader.close()


def test_reads_are_served_byte_exact_across_chunks(
    socket_pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt_client, "READ_CHUNK_BYTES", 5)
    writer, reader = socket_pair
    chunked = ChunkedSocket(reader)
    writer.sendall(b"abcdefghijkl")

    assert chunked.recv(1) == b"a"
    assert chunked.pending() == chunked.buffered() == 4
    assert chunked.recv(3) == b"bcd"
    assert chunked.recv(3) == b"e"  # the rest of the chunk in hand, as a short socket read
    assert chunked.recv(2) == b"fg"  # a new chunk
    assert chunked.recv(100) == b"hij"
    assert chunked.recv(100) == b"kl"
    assert chunked.pending() == 0
    writer.sendall(b"0123456789" * 2)
    assert chunked.recv(100) == b"0123456789" * 2  # more than a chunk, when asked for more
    with pytest.raises(BlockingIOError):
        chunked.recv(1)

    writer.shutdown(socket.SHUT_WR)
    assert chunked.recv(1) == b""  # end of stream, as paho expects it


def test_the_socket_is_still_a_socket(socket_pair: tuple[socket.socket, socket.socket]) -> None:
    writer, reader = socket_pair
    chunked = ChunkedSocket(writer)

    assert chunked.send(b"xy") == 2
    assert reader.recv(2) == b"xy"
    assert chunked.fileno() == writer.fileno()
    assert chunked.getsockname() == writer.getsockname()
    chunked.close()
    assert writer.fileno() == -1


def publish_packet(topic: bytes, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH of under 128 bytes."""
    body = len(topic).to_bytes(2, "big") + topic + payload
    assert len(body) < 128
    return bytes([0x30, len(body)]) + body


def test_a_turn_stops_at_its_packet_limit_and_the_next_one_does_not_wait(
    socket_enabled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in broker that has queued 25 messages: they arrive in one chunk, so after the first
    # turn they wait in user space, where only `pending()` tells paho's select loop about them.
    monkeypatch.setattr(mqtt_client, "PACKETS_PER_TURN", 10)
    received: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = ChunkedClient(CallbackAPIVersion.VERSION2, client_id="chunked")
        client.on_message = lambda _client, _userdata, message: received.append(message.payload)
        client.connect("127.0.0.1", listener.getsockname()[1])
        broker, _ = listener.accept()
        with broker:
            assert broker.recv(1024)[0] == 0x10  # CONNECT
            connack = bytes([0x20, 2, 0, 0])
            broker.sendall(connack + b"".join(publish_packet(b"t", b"%d" % n) for n in range(25)))

            turns = []
            for _ in range(3):
                # A turn that waited in select would come back empty-handed after the timeout.
                assert client.loop(timeout=5.0) == MQTTErrorCode.MQTT_ERR_SUCCESS
                turns.append(len(received))
        client.disconnect()

    # CONNACK and 10 more packets a turn, then the rest.
    assert turns == [10, 21, 25]
    assert received == [b"%d" % n for n in range(25)]


async def test_a_flood_is_read_whole_and_commands_still_get_through(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks and turns, so that a flood the test broker queues whole spans many of both.
    monkeypatch.setattr(mqtt_client, "READ_CHUNK_BYTES", 512)
    monkeypatch.setattr(mqtt_client, "PACKETS_PER_TURN", 10)
    messages = 300
    # A topic of its own: no message retained by another test is counted.
    plug = mqtt_peers(mqtt_broker, "flood", ["cmnd/flood/#"], answer_tasmota)
    driver = MqttDriver(config_for(mqtt_broker, FLOOD_PLUG))
    await driver.start()
    try:
        await eventually(lambda: driver.connected)
        for n in range(messages):
            payload = json.dumps({"ENERGY": {"Power": float(n)}})
            plug.client.publish("tele/flood/SENSOR", payload, qos=0)

        result = await driver.execute(Command(CommandKind.OUTLET_OFF, "pdu-a/1"))

        assert result.ok, result.error
        # The last SENSOR message, and the plug's POWER reply (applied just after it settled the
        # command).
        await snapshot_where(
            driver,
            lambda s: (s.outlets["pdu-a/1"].power_w, s.outlets["pdu-a/1"].is_on)
            == (float(messages - 1), False),
        )
        assert driver.counts() == MessageCounts(applied=messages + 1, malformed={})
    finally:
        await driver.stop()
