"""Signed commands to host agents: what the agent acts on and what it refuses."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest

from custom_components.power_allocation.drivers.command_auth import (
    MAX_CLOCK_SKEW_S,
    CommandRejectedError,
    CommandVerifier,
    sign_command,
)

SECRET = "agent-secret-of-db-0123456789"
NOW_S = 1_800_000_000.0
SHUTDOWN = {"id": 7, "action": "shutdown"}


def test_a_signed_command_is_accepted_once() -> None:
    verifier = CommandVerifier(SECRET)
    signed = sign_command(SHUTDOWN, SECRET, NOW_S)
    verifier.verify(signed, NOW_S + 1.0)
    with pytest.raises(CommandRejectedError, match="replayed"):
        verifier.verify(signed, NOW_S + 2.0)


def test_the_mac_is_hmac_sha256_of_the_canonical_json() -> None:
    """What a host agent in another language must compute."""
    signed = sign_command({"id": 3, "action": "throttle", "cap_w": 120.0}, SECRET, NOW_S)
    unsigned = {k: v for k, v in signed.items() if k != "mac"}
    text = json.dumps(unsigned, sort_keys=True, separators=(",", ":"))
    assert signed["mac"] == hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
    assert signed["ts"] == NOW_S
    assert len(signed["nonce"]) == 32


def test_every_command_gets_a_new_nonce() -> None:
    verifier = CommandVerifier(SECRET)
    for _ in range(3):
        verifier.verify(sign_command(SHUTDOWN, SECRET, NOW_S), NOW_S)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: {**c, "action": "start"},
        lambda c: {**c, "id": 8},
        lambda c: {**c, "cap_w": 1.0},
        lambda c: {**c, "ts": c["ts"] + 1.0},
        lambda c: {**c, "nonce": "0" * 32},
        lambda c: {k: v for k, v in c.items() if k != "mac"},
        lambda c: {**c, "mac": c["mac"].upper()},
    ],
    ids=["action", "id", "added_field", "time", "nonce", "unsigned", "mac"],
)
def test_a_changed_command_is_refused(tamper: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    signed = sign_command(SHUTDOWN, SECRET, NOW_S)
    with pytest.raises(CommandRejectedError, match="signature|unsigned"):
        CommandVerifier(SECRET).verify(tamper(signed), NOW_S)


def test_another_agents_secret_is_refused() -> None:
    signed = sign_command(SHUTDOWN, "the-secret-of-another-host", NOW_S)
    with pytest.raises(CommandRejectedError, match="bad signature"):
        CommandVerifier(SECRET).verify(signed, NOW_S)


@pytest.mark.parametrize("offset_s", [MAX_CLOCK_SKEW_S + 0.5, -(MAX_CLOCK_SKEW_S + 0.5)])
def test_a_command_far_from_the_agents_clock_is_refused(offset_s: float) -> None:
    signed = sign_command(SHUTDOWN, SECRET, NOW_S + offset_s)
    with pytest.raises(CommandRejectedError, match="stale or future"):
        CommandVerifier(SECRET).verify(signed, NOW_S)


def test_a_replay_is_refused_while_it_could_pass_the_time_check() -> None:
    verifier = CommandVerifier(SECRET)
    signed = sign_command(SHUTDOWN, SECRET, NOW_S)
    verifier.verify(signed, NOW_S)
    # Remembered nonces are forgotten once their time is out of reach: still refused.
    verifier.verify(sign_command(SHUTDOWN, SECRET, NOW_S + 25.0), NOW_S + 25.0)
    with pytest.raises(CommandRejectedError, match="replayed"):
        verifier.verify(signed, NOW_S + 25.0)
    with pytest.raises(CommandRejectedError, match="stale"):
        verifier.verify(signed, NOW_S + MAX_CLOCK_SKEW_S + 1.0)
