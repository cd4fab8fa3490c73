"""Connection tests the config flow runs before it creates or changes anything."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import paho.mqtt.client as mqtt
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from paho.mqtt.enums import CallbackAPIVersion

from .drivers.modbus import ModbusDevice, ModbusDriver
from .drivers.profile import load_profile

CONNECT_TIMEOUT_S = 5.0
# CONNACK codes that mean "wrong credentials": MQTT 3.1.1's, and the MQTT 5 reason codes paho
# 2.x reports them as.
_AUTH_FAILURES = frozenset({4, 5, 134, 135})


class CannotConnectError(HomeAssistantError):
    """The device or broker did not answer."""


class InvalidAuthError(HomeAssistantError):
    """The broker refused the credentials."""


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


def _mqtt_connect(broker: Mapping[str, Any]) -> int | None:
    """The broker's CONNACK reason code, or None when it did not answer."""
    answered = threading.Event()
    reason: list[int] = []

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        reason.append(int(code.value) if hasattr(code, "value") else int(code))
        answered.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    if broker.get("username"):
        client.username_pw_set(broker["username"], broker.get("password"))
    if broker.get("tls"):
        client.tls_set()
    client.on_connect = on_connect
    try:
        client.connect(broker["host"], broker["port"], keepalive=10)
    except (OSError, ValueError):
        return None
    client.loop_start()
    try:
        answered.wait(CONNECT_TIMEOUT_S)
    finally:
        client.disconnect()
        client.loop_stop()
    return reason[0] if reason else None


async def async_test_mqtt(hass: HomeAssistant, broker: Mapping[str, Any]) -> None:
    """Connect to the broker once; raises `CannotConnectError` or `InvalidAuthError`."""
    code = await hass.async_add_executor_job(_mqtt_connect, broker)
    if code is None:
        raise CannotConnectError
    if code in _AUTH_FAILURES:
        raise InvalidAuthError
    if code != 0:
        raise CannotConnectError
