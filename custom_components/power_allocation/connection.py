"""Connection tests the config flow runs before it creates or changes anything."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Mapping
from typing import Any

import paho.mqtt.client as mqtt
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from paho.mqtt.enums import CallbackAPIVersion

from .drivers.modbus import ModbusDevice, ModbusDriver
from .drivers.mqtt import AUTH_REFUSED_CODES
from .drivers.mqtt_tls import tls_context
from .drivers.profile import load_profile
from .sources import mqtt_tls_options

CONNECT_TIMEOUT_S = 5.0
# CONNACK codes that mean "wrong credentials": the driver's own, so that the flows' test and the
# running site agree on what a refusal of the credentials is.
AUTH_FAILURES = AUTH_REFUSED_CODES


class CannotConnectError(HomeAssistantError):
    """The device or broker did not answer."""


class InvalidAuthError(HomeAssistantError):
    """The broker refused the credentials."""


class TlsHandshakeError(CannotConnectError):
    """The TLS handshake with the broker failed: its certificate is not one the CA vouches for
    (or not for its host name), or it refused the client certificate."""


async def async_test_modbus(hass: HomeAssistant, device_id: str, source: Mapping[str, Any]) -> None:
    """Read the device once through the project's driver; raises `CannotConnectError`."""
    profile = await hass.async_add_executor_job(load_profile, source["profile"])
    driver = ModbusDriver(
        [
            ModbusDevice(
                device_id=device_id,
                host=source["host"],
                profile=profile,
                port=source["port"],
                unit_id=source["unit_id"],
                outlet_count=source.get("outlet_count", 0),
                timeout_s=source.get("timeout_s", 1.0),
            )
        ]
    )
    try:
        await driver.start()
        snapshot = await driver.read(0.0)
    finally:
        await driver.stop()
    available = [r.available for r in snapshot.ups.values()]
    available += [r.available for r in snapshot.outlets.values()]
    if not available or not all(available):
        raise CannotConnectError


def mqtt_connack(broker: Mapping[str, Any]) -> int | None:
    """The broker's CONNACK reason code, or None when it did not answer (blocking: run it in an
    executor). Connects with paho's random client id, never the site's. Raises
    `TlsHandshakeError`."""
    answered = threading.Event()
    reason: list[int] = []
    hung_up = threading.Event()

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        reason.append(int(code.value) if hasattr(code, "value") else int(code))
        answered.set()

    def on_disconnect(client: mqtt.Client, userdata: Any, flags: Any, code: Any, _: Any) -> None:
        if code.is_failure:  # not our own disconnect
            hung_up.set()
            answered.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    if broker.get("username"):
        client.username_pw_set(broker["username"], broker.get("password"))
    tls = mqtt_tls_options(broker)
    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        if tls is not None:
            client.tls_set_context(tls_context(tls))
        client.connect(broker["host"], broker["port"], keepalive=10)
    except ssl.SSLError as error:
        raise TlsHandshakeError from error
    except (OSError, ValueError):
        return None
    client.loop_start()
    try:
        answered.wait(CONNECT_TIMEOUT_S)
    finally:
        client.disconnect()
        client.loop_stop()
    if not reason and hung_up.is_set() and tls is not None:
        # Under TLS 1.3 the client's side of the handshake is over before the broker checks the
        # client certificate: a broker that refuses it hangs up before answering CONNECT.
        raise TlsHandshakeError
    return reason[0] if reason else None


async def async_test_mqtt(hass: HomeAssistant, broker: Mapping[str, Any]) -> None:
    """Connect to the broker once; raises `CannotConnectError` (`TlsHandshakeError`) or
    `InvalidAuthError`."""
    code = await hass.async_add_executor_job(mqtt_connack, broker)
    if code is None:
        raise CannotConnectError
    if code in AUTH_FAILURES:
        raise InvalidAuthError
    if code != 0:
        raise CannotConnectError
