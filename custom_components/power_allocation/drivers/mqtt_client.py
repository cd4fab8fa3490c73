"""paho's client with a receive path fit for thousands of messages a second.

paho 2.1 reads every packet with three or four `recv` calls (the command byte, each byte of the
remaining length, then the body) and goes back to `select` after each packet. At the message
rates of a site of smart plugs those system calls cost more than the driver's own parsing. This
client reads the socket in large chunks and hands paho the bytes it asks for out of the chunk, and
after a packet it keeps reading the packets already in hand before going back to `select`.

It leans on paho internals, as Home Assistant's own MQTT client does (it swaps paho's private
locks): `_create_socket`, where paho gets its socket, and the `pending()` a socket may have, which
paho's loop honours for TLS. Home Assistant pins paho-mqtt 2.1.0; the tests in
`tests/drivers/test_mqtt*.py` run this client against a real broker, TLS included.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

# One `recv` takes up to this much: a few hundred telemetry messages.
READ_CHUNK_BYTES = 65_536
# Packets read per network-loop turn at most, so that writes (commands, keepalive) still get turns
# under a flood.
PACKETS_PER_TURN = 1_000


class ChunkedSocket:
    """A socket whose reads are served from one large `recv` at a time.

    `pending()` is how paho learns of bytes held in user space (it asks an SSL socket the same):
    while there are any, it does not wait in `select`.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._chunk = b""
        self._position = 0

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes: from the chunk in hand, or from a new one. Raises what the socket
        raises (BlockingIOError, SSLWantReadError) when there is nothing; b"" at end of stream."""
        if self._position >= len(self._chunk):
            self._chunk = self._sock.recv(max(size, READ_CHUNK_BYTES))
            self._position = 0
        start = self._position
        self._position = min(start + size, len(self._chunk))
        return self._chunk[start : self._position]

    def buffered(self) -> int:
        """Bytes received and not yet handed out."""
        return len(self._chunk) - self._position

    def pending(self) -> int:
        """Bytes readable without the kernel: this buffer's and, under TLS, the SSL layer's."""
        inner = getattr(self._sock, "pending", None)
        return self.buffered() + (inner() if inner is not None else 0)

    def send(self, data: bytes) -> int:
        """As the socket's."""
        return int(self._sock.send(data))

    def close(self) -> None:
        """As the socket's."""
        self._sock.close()

    def fileno(self) -> int:
        """As the socket's."""
        return int(self._sock.fileno())

    def setblocking(self, flag: bool) -> None:
        """As the socket's."""
        self._sock.setblocking(flag)

    def __getattr__(self, name: str) -> Any:
        # settimeout, getpeercert and the rest, untouched.
        return getattr(self._sock, name)


class ChunkedClient(mqtt.Client):
    """`mqtt.Client` reading through a `ChunkedSocket`."""

    def _create_socket(self) -> Any:
        # The kernel's receive buffer is left to Linux's autotuning: setting SO_RCVBUF would turn
        # it off and cap it at net.core.rmem_max, often smaller than what autotuning reaches.
        return ChunkedSocket(super()._create_socket())

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho reads one packet per call; read on while received bytes are in hand. Past
        `PACKETS_PER_TURN`, the bytes left make `pending()` say so, and paho comes straight back."""
        rc = super().loop_read(max_packets)
        for _ in range(PACKETS_PER_TURN):
            sock = self.socket()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not isinstance(sock, ChunkedSocket):
                break
            if not sock.buffered():
                break
            rc = super().loop_read(max_packets)
        return rc
