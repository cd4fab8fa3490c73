"""The MQTT driver's settings as stored data (a config entry, a YAML file), validated.

`mqtt_config_from_mapping` turns a plain mapping into an `MqttDriverConfig`; unknown keys and bad
values raise `vol.Invalid` with the path of the offending item, so a user sees what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import voluptuous as vol

from .command_auth import MIN_SECRET_LENGTH
from .mqtt import MqttDriverConfig
from .mqtt_payload import PayloadLimits
from .mqtt_profile import MqttDevice
from .mqtt_tls import TlsOptions

_TEXT = vol.All(str, vol.Length(min=1))
_POSITIVE = vol.All(vol.Coerce(float), vol.Range(min=0, min_included=False))

MQTT_CONFIG_SCHEMA = vol.Schema(
    {
        vol.Required("host"): _TEXT,
        vol.Optional("port", default=1883): vol.All(int, vol.Range(min=1, max=65535)),
        vol.Optional("username"): _TEXT,
        vol.Optional("password"): str,
        vol.Optional("tls"): {
            vol.Optional("ca_certs"): _TEXT,
            vol.Optional("certfile"): _TEXT,
            vol.Optional("keyfile"): _TEXT,
            vol.Optional("verify_hostname", default=True): bool,
        },
        vol.Optional("client_id", default="power-allocation"): vol.All(
            str, vol.Length(min=1, max=64)
        ),
        vol.Optional("keepalive_s", default=30): vol.All(int, vol.Range(min=5, max=3600)),
        vol.Optional("base_topic", default="power_allocation"): vol.All(
            str, vol.Length(min=1), vol.Match(r"^[^+#\0]+$")
        ),
        vol.Optional("broadcast_status", default=True): bool,
        vol.Optional("devices", default=list): [
            {
                vol.Required("profile"): _TEXT,
                vol.Required("target"): _TEXT,
                vol.Optional("variables", default=dict): {str: vol.Any(str, int)},
                # Over the profile's ceiling for this device's power readings.
                vol.Optional("max_power_w"): _POSITIVE,
                # A host agent's: what its commands are signed with.
                vol.Optional("secret"): vol.All(str, vol.Length(min=MIN_SECRET_LENGTH)),
            }
        ],
        vol.Optional("max_payload_bytes", default=16_384): vol.All(int, vol.Range(min=64)),
        vol.Optional("command_timeout_s", default=10.0): _POSITIVE,
    }
)


def mqtt_config_from_mapping(data: Mapping[str, Any]) -> MqttDriverConfig:
    """Validate stored settings; raises `vol.Invalid`. Profiles are checked by `MqttDriver`."""
    checked = MQTT_CONFIG_SCHEMA(dict(data))
    tls = checked.get("tls")
    return MqttDriverConfig(
        host=checked["host"],
        port=checked["port"],
        username=checked.get("username"),
        password=checked.get("password"),
        tls=None if tls is None else TlsOptions(**tls),
        client_id=checked["client_id"],
        keepalive_s=checked["keepalive_s"],
        base_topic=checked["base_topic"],
        broadcast_status=checked["broadcast_status"],
        devices=tuple(
            MqttDevice(d["profile"], d["target"], d["variables"], d.get("max_power_w"))
            for d in checked["devices"]
        ),
        limits=PayloadLimits(max_payload_bytes=checked["max_payload_bytes"]),
        command_timeout_s=checked["command_timeout_s"],
        agent_secrets={d["target"]: d["secret"] for d in checked["devices"] if "secret" in d},
    )
