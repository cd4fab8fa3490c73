"""The MQTT driver's command channel on a real Mosquitto: commands to host agents are signed with
the agent's secret; the broker is reached over TLS with a private CA and a client certificate."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import voluptuous as vol

from custom_components.power_allocation.drivers.command_auth import (
    CommandRejectedError,
    CommandVerifier,
)
from custom_components.power_allocation.drivers.interface import Command, CommandKind
from custom_components.power_allocation.drivers.mqtt import MqttDriver, MqttDriverConfig
from custom_components.power_allocation.drivers.mqtt_config import mqtt_config_from_mapping
from custom_components.power_allocation.drivers.mqtt_profile import MqttDevice
from custom_components.power_allocation.drivers.mqtt_tls import TlsOptions
from tests.fixtures.mqtt_broker import Mosquitto, MqttPeer, eventually
from tests.fixtures.mutual_tls import make_tls_material, tls_broker

type PeerFactory = Callable[..., MqttPeer]

BASE = "pa-channel"
AGENT = MqttDevice("power_allocation_agent", "db", {})
SECRET = "db-host-secret-0123456789abcdef"


async def test_agent_commands_are_signed_with_the_agents_secret(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    verifier = CommandVerifier(SECRET)

    def agent(peer: MqttPeer, topic: str, payload: bytes) -> None:
        request = json.loads(payload)
        reply = {"id": request["id"], "ok": True}
        try:
            verifier.verify(request, time.time())
        except CommandRejectedError as err:
            reply = {"id": request["id"], "ok": False, "error": str(err)}
        peer.client.publish(f"{BASE}/agent/db/ack", json.dumps(reply), qos=1)

    mqtt_peers(mqtt_broker, "agent-db", [f"{BASE}/agent/db/command"], agent)
    config = MqttDriverConfig(
        host=mqtt_broker.host,
        port=mqtt_broker.port,
        client_id="pa-signing",
        base_topic=BASE,
        devices=(AGENT,),
        command_timeout_s=5.0,
        agent_secrets={"db": SECRET},
    )
    driver = MqttDriver(config)
    await driver.start()
    try:
        await eventually(lambda: driver.connected)
        throttled = await driver.execute(Command(CommandKind.AGENT_THROTTLE, "db", cap_w=90.0))
        shut_down = await driver.execute(Command(CommandKind.AGENT_SHUTDOWN, "db"))
    finally:
        await driver.stop()
    assert (throttled.ok, throttled.error) == (True, None)
    assert (shut_down.ok, shut_down.error) == (True, None)
    assert SECRET not in repr(config)


def test_a_yaml_agent_device_gives_its_secret() -> None:
    device = {"profile": "power_allocation_agent", "target": "db", "secret": SECRET}
    config = mqtt_config_from_mapping({"host": "broker", "devices": [device]})
    assert config.agent_secrets == {"db": SECRET}
    with pytest.raises(vol.Invalid, match="length"):
        mqtt_config_from_mapping({"host": "broker", "devices": [{**device, "secret": "short"}]})


async def test_mutual_tls_with_pem_texts(tmp_path: Path, socket_enabled: None) -> None:
    material = make_tls_material()
    with tls_broker(tmp_path, material, require_client_certificate=True) as broker:
        tls = TlsOptions(
            ca_pem=material.ca_pem,
            cert_pem=material.client_cert_pem,
            key_pem=material.client_key_pem,
        )
        driver = MqttDriver(MqttDriverConfig(host=broker.host, port=broker.port, tls=tls))
        await driver.start()
        try:
            await eventually(lambda: driver.connected)
        finally:
            await driver.stop()
    assert material.client_key_pem not in repr(tls)
