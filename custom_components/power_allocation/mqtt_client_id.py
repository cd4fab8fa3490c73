"""The site's own MQTT client id: random, made once per config entry and kept in its data.

A broker lets one connection per client id: a predictable id (`power-allocation-<base>`) let any
other client that took it knock the integration off the broker, again at each reconnect.
"""

from __future__ import annotations

import uuid

CONF_MQTT_CLIENT_ID = "mqtt_client_id"


def new_client_id() -> str:
    """`power-allocation-` and 12 random hex digits (48 bits: not guessable, fits any broker)."""
    return f"power-allocation-{uuid.uuid4().hex[:12]}"
