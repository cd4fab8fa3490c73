"""Commands to host agents, signed with the agent's own secret, and checked by the agent.

Anyone who may publish on the broker could otherwise shut a host down with one
`{"action": "shutdown"}`. A signed command carries three more fields:

- `nonce`: a random id of its own, never sent twice (the request id restarts with the integration);
- `ts`: when it was sent, in wall-clock epoch seconds;
- `mac`: HMAC-SHA256, keyed by the agent's secret, of the command's canonical JSON without `mac`
  (keys sorted, no spaces, ASCII), so every field, the action, its cap, the nonce and the time
  included, is covered.

An agent runs `CommandVerifier.verify` on what it receives: it refuses a command whose MAC is
wrong, whose time is more than `MAX_CLOCK_SKEW_S` from its own clock, or whose nonce it has seen
(a replay), and acts on nothing it refuses. Nonces are kept only as long as their command could
pass the time check, so the memory stays small.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Mapping
from typing import Any

MAC_FIELD = "mac"
NONCE_FIELD = "nonce"
TIME_FIELD = "ts"
# How far a command's time may be from the agent's clock (NTP keeps hosts well within it).
MAX_CLOCK_SKEW_S = 30.0
# Shorter secrets are refused where they are configured: a guessable key is no key.
MIN_SECRET_LENGTH = 16


class CommandRejectedError(ValueError):
    """A command the agent must not act on; the message says why (and holds no secret)."""


def canonical_json(fields: Mapping[str, Any]) -> bytes:
    """The bytes the MAC covers: one encoding for a given set of fields, whoever encodes it."""
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def command_mac(fields: Mapping[str, Any], secret: str) -> str:
    """HMAC-SHA256 of the fields' canonical JSON (`mac` left out), as hex."""
    unsigned = {key: value for key, value in fields.items() if key != MAC_FIELD}
    return hmac.new(secret.encode(), canonical_json(unsigned), hashlib.sha256).hexdigest()


def sign_command(command: Mapping[str, Any], secret: str, now_s: float) -> dict[str, Any]:
    """The command with a fresh nonce, its time and its MAC."""
    signed = {**command, NONCE_FIELD: secrets.token_hex(16), TIME_FIELD: now_s}
    signed[MAC_FIELD] = command_mac(signed, secret)
    return signed


class CommandVerifier:
    """One agent's check of the commands it receives (not thread-safe: one caller)."""

    def __init__(self, secret: str, max_skew_s: float = MAX_CLOCK_SKEW_S) -> None:
        self._secret = secret
        self._max_skew_s = max_skew_s
        self._seen: dict[str, float] = {}  # nonce -> the command's time

    def verify(self, command: Mapping[str, Any], now_s: float) -> None:
        """Return when the command may be acted on; raises `CommandRejectedError` otherwise.

        The MAC is checked first, so a forged command cannot fill the memory of nonces.
        """
        mac = command.get(MAC_FIELD)
        if not isinstance(mac, str):
            raise CommandRejectedError("unsigned command")
        try:
            expected = command_mac(command, self._secret)
        except ValueError:  # NaN or infinity in a field: no canonical JSON
            raise CommandRejectedError("bad signature") from None
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            raise CommandRejectedError("bad signature")
        sent_s = command.get(TIME_FIELD)
        nonce = command.get(NONCE_FIELD)
        if isinstance(sent_s, bool) or not isinstance(sent_s, int | float):
            raise CommandRejectedError("no time")
        if not isinstance(nonce, str) or not nonce:
            raise CommandRejectedError("no nonce")
        if not math.isfinite(sent_s) or abs(now_s - sent_s) > self._max_skew_s:
            raise CommandRejectedError("stale or future command")
        self._forget_before(now_s - self._max_skew_s)
        if nonce in self._seen:
            raise CommandRejectedError("replayed command")
        self._seen[nonce] = float(sent_s)

    def _forget_before(self, oldest_s: float) -> None:
        # Older commands fail the time check anyway.
        for nonce in [n for n, sent_s in self._seen.items() if sent_s < oldest_s]:
            del self._seen[nonce]
