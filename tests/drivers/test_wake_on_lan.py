"""Wake-on-LAN: the magic packet's bytes, and the sender over a real UDP socket on loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest

from custom_components.power_allocation.drivers.wake_on_lan import (
    magic_packet,
    normalise_mac,
    send_magic_packet,
)

MAC = "00:11:22:aa:bb:cc"
MAC_BYTES = bytes([0x00, 0x11, 0x22, 0xAA, 0xBB, 0xCC])
RECEIVE_TIMEOUT_S = 5.0


def test_the_packet_is_six_ff_then_the_mac_sixteen_times() -> None:
    packet = magic_packet(MAC)
    assert len(packet) == 102
    assert packet[:6] == b"\xff" * 6
    assert all(packet[6 + 6 * i : 12 + 6 * i] == MAC_BYTES for i in range(16))
    assert magic_packet("00-11-22-AA-BB-CC") == packet


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:ff"),
        ("aa-bb-cc-dd-ee-0f", "aa:bb:cc:dd:ee:0f"),
    ],
)
def test_a_mac_is_normalised(text: str, expected: str) -> None:
    assert normalise_mac(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "aa:bb:cc:dd:ee",
        "aa:bb:cc:dd:ee:ff:00",
        "aa:bb-cc:dd:ee:ff",
        "aabbccddeeff",
        "aa:bb:cc:dd:ee:fg",
        "a:bb:cc:dd:ee:ff",
        "aa:bb:cc:dd:ee:ff\n",
        " aa:bb:cc:dd:ee:ff",
        "aa.bb.cc.dd.ee.ff",
    ],
)
def test_anything_but_six_hex_octets_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a MAC address"):
        normalise_mac(text)
    with pytest.raises(ValueError, match="not a MAC address"):
        magic_packet(text)


async def test_the_sender_delivers_the_exact_packet_over_udp(socket_enabled: None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(RECEIVE_TIMEOUT_S)
        port = listener.getsockname()[1]
        await send_magic_packet(MAC, "127.0.0.1", port)
        received, (address, _) = await asyncio.get_running_loop().run_in_executor(
            None, listener.recvfrom, 1024
        )
    assert received == magic_packet(MAC)
    assert address == "127.0.0.1"
