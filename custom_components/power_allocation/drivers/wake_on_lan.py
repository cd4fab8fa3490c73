"""Wake-on-LAN: the magic packet that powers a host up, and the project's own sender of it.

A magic packet is six bytes of 0xFF followed by the host's MAC address sixteen times, sent as a
UDP datagram to the broadcast address (port 9, the discard port, by convention). Home Assistant's
`wake_on_lan` integration sends the same packet; this sender is used when it is not loaded.
"""

from __future__ import annotations

import asyncio
import re
import socket

DEFAULT_BROADCAST = "255.255.255.255"
DEFAULT_PORT = 9
# Six octets of two hex digits, all separated by `:` or all by `-`.
_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}$")


def normalise_mac(text: str) -> str:
    """`AA-BB-CC-DD-EE-FF` as `aa:bb:cc:dd:ee:ff`; `ValueError` for anything but six hex octets
    separated by `:` or `-`."""
    if not isinstance(text, str) or not _MAC.fullmatch(text):
        raise ValueError("not a MAC address (six hex octets separated by : or -)")
    return text.lower().replace("-", ":")


def magic_packet(mac: str) -> bytes:
    """The magic packet that wakes the host of `mac`: 6 x 0xFF, then its 6 bytes 16 times."""
    address = bytes.fromhex(normalise_mac(mac).replace(":", ""))
    return b"\xff" * 6 + address * 16


async def send_magic_packet(
    mac: str, broadcast: str = DEFAULT_BROADCAST, port: int = DEFAULT_PORT
) -> None:
    """Send the magic packet of `mac` to `broadcast`:`port` over UDP; `OSError` if it cannot
    be sent, `ValueError` for a bad MAC."""
    packet = magic_packet(mac)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setblocking(False)
        await loop.sock_sendto(sock, packet, (broadcast, port))
