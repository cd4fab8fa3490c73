"""The MQTT driver against a real Mosquitto broker on loopback: reads, commands, faults."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import voluptuous as vol
from paho.mqtt.enums import CallbackAPIVersion

from custom_components.power_allocation.drivers import mqtt as mqtt_module
from custom_components.power_allocation.drivers import plausibility
from custom_components.power_allocation.drivers.interface import (
    Command,
    CommandKind,
    TelemetrySnapshot,
    UpsReading,
)
from custom_components.power_allocation.drivers.mqtt import (
    MessageCounts,
    MqttDriver,
    MqttDriverConfig,
    TlsOptions,
)
from custom_components.power_allocation.drivers.mqtt_config import mqtt_config_from_mapping
from custom_components.power_allocation.drivers.mqtt_payload import PayloadLimits
from custom_components.power_allocation.drivers.mqtt_profile import MqttDevice, ProfileError
from custom_components.power_allocation.drivers.mqtt_status import (
    ServiceDecision,
    ServiceStatus,
    SiteStatus,
)
from tests.fixtures.mqtt_broker import Mosquitto, MqttPeer, eventually, write_tls_files

type PeerFactory = Callable[..., MqttPeer]

TASMOTA = MqttDevice("tasmota", "pdu-a/1", {"topic": "plug1"})
SHELLY = MqttDevice("shelly_gen2", "pdu-a/2", {"prefix": "shellyplus-a", "switch": 0})
NUT = MqttDevice("nut", "ups1", {"prefix": "nut/ups1"})
AGENT = MqttDevice("power_allocation_agent", "db", {})
OWN_OUTLET = MqttDevice("power_allocation_outlet", "pdu-b/4", {})
OWN_UPS = MqttDevice("power_allocation_ups", "ups2", {})
BASE = "pa-test"


def config_for(broker: Mosquitto, *devices: MqttDevice, **overrides: object) -> MqttDriverConfig:
    settings: dict[str, object] = {
        "host": broker.host,
        "port": broker.port,
        "username": broker.username,
        "password": broker.password,
        "client_id": "pa-driver",
        "base_topic": BASE,
        "devices": devices,
        "command_timeout_s": 5.0,
    }
    settings.update(overrides)
    return MqttDriverConfig(**settings)  # type: ignore[arg-type]


class FakeClock:
    """The driver's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@asynccontextmanager
async def connected(
    config: MqttDriverConfig, clock: Callable[[], float] | None = None
) -> AsyncIterator[MqttDriver]:
    driver = MqttDriver(config) if clock is None else MqttDriver(config, clock=clock)
    await driver.start()
    try:
        await eventually(lambda: driver.connected)
        yield driver
    finally:
        await driver.stop()


@pytest.fixture
def spy(mqtt_broker: Mosquitto, mqtt_peers: PeerFactory) -> MqttPeer:
    """Sees everything published on the broker from now on (not what earlier tests retained)."""
    return mqtt_peers(mqtt_broker, "spy", ["#"], ignore_retained=True)


async def snapshot_where(
    driver: MqttDriver, holds: Callable[[TelemetrySnapshot], bool]
) -> TelemetrySnapshot:
    """The first snapshot for which `holds` is true (bounded wait)."""

    async def check() -> TelemetrySnapshot | None:
        snapshot = await driver.read(0.0)
        return snapshot if holds(snapshot) else None

    result: TelemetrySnapshot = await eventually(check)
    return result


def answer_tasmota(peer: MqttPeer, topic: str, payload: bytes) -> None:
    """A Tasmota plug: switch, then report the relay state on stat/<t>/POWER."""
    if topic.startswith("cmnd/") and topic.endswith("/POWER"):
        name = topic.split("/")[1]
        peer.client.publish(f"stat/{name}/POWER", payload, qos=1)


async def test_tasmota_plug_is_read_and_switched(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    plug = mqtt_peers(mqtt_broker, "plug1", ["cmnd/plug1/#"], answer_tasmota)
    plug.publish("tele/plug1/LWT", "Online", retain=True)
    try:
        async with connected(config_for(mqtt_broker, TASMOTA)) as driver:
            plug.publish("tele/plug1/STATE", json.dumps({"POWER": "ON", "Wifi": {"RSSI": 60}}))
            plug.publish("tele/plug1/SENSOR", json.dumps({"ENERGY": {"Power": 42.5}}))
            snapshot = await snapshot_where(
                driver, lambda s: s.outlets["pdu-a/1"].power_w is not None
            )
            outlet = snapshot.outlets["pdu-a/1"]
            assert (outlet.available, outlet.power_w, outlet.is_on) == (True, 42.5, True)

            result = await driver.execute(Command(CommandKind.OUTLET_OFF, "pdu-a/1"))

            assert result.ok, result.error
            assert plug.messages_on("cmnd/plug1/POWER") == [b"OFF"]
            await snapshot_where(driver, lambda s: s.outlets["pdu-a/1"].is_on is False)
    finally:
        plug.publish("tele/plug1/LWT", b"", retain=True)  # clear the retained message


async def test_tasmota_lwt_offline_makes_the_plug_unavailable(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    plug = mqtt_peers(mqtt_broker, "plug1")
    async with connected(config_for(mqtt_broker, TASMOTA)) as driver:
        plug.publish("tele/plug1/SENSOR", json.dumps({"ENERGY": {"Power": 10}}))
        await snapshot_where(driver, lambda s: s.outlets["pdu-a/1"].available)

        plug.publish("tele/plug1/LWT", "Offline")

        snapshot = await snapshot_where(driver, lambda s: not s.outlets["pdu-a/1"].available)
        assert snapshot.outlets["pdu-a/1"].power_w is None


async def test_shelly_switch_is_read_and_switched_over_rpc(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    def shelly(peer: MqttPeer, topic: str, payload: bytes) -> None:
        request = json.loads(payload)
        assert request["method"] == "Switch.Set"
        assert request["params"] == {"id": 0, "on": True}
        reply = {"id": request["id"], "src": "shellyplus-a", "dst": request["src"]}
        peer.client.publish(f"{request['src']}/rpc", json.dumps(reply | {"result": {}}), qos=1)

    device = mqtt_peers(mqtt_broker, "shellyplus-a", ["shellyplus-a/rpc"], shelly)
    async with connected(config_for(mqtt_broker, SHELLY)) as driver:
        device.publish("shellyplus-a/online", "true")
        status = {"id": 0, "source": "init", "output": False, "apower": 0.0, "voltage": 231.2}
        device.publish("shellyplus-a/status/switch:0", json.dumps(status))
        await snapshot_where(driver, lambda s: s.outlets["pdu-a/2"].is_on is False)

        result = await driver.execute(Command(CommandKind.OUTLET_ON, "pdu-a/2"))

        assert result.ok, result.error
        assert len(device.messages_on("shellyplus-a/rpc")) == 1


async def test_a_device_refusal_is_a_failed_command(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    def shelly(peer: MqttPeer, topic: str, payload: bytes) -> None:
        request = json.loads(payload)
        error = {"code": -103, "message": "Invalid argument"}
        reply = {"id": request["id"], "src": "shellyplus-a", "error": error}
        peer.client.publish(f"{request['src']}/rpc", json.dumps(reply), qos=1)

    mqtt_peers(mqtt_broker, "shellyplus-a", ["shellyplus-a/rpc"], shelly)
    async with connected(config_for(mqtt_broker, SHELLY)) as driver:
        result = await driver.execute(Command(CommandKind.OUTLET_ON, "pdu-a/2"))

    assert not result.ok
    assert "Invalid argument" in (result.error or "")


async def test_nut_ups_topics_are_read(mqtt_broker: Mosquitto, mqtt_peers: PeerFactory) -> None:
    bridge = mqtt_peers(mqtt_broker, "nut-bridge")
    async with connected(config_for(mqtt_broker, NUT)) as driver:
        for variable, value in {
            "ups.status": "OB LB DISCHRG",
            "battery.charge": "18",
            "battery.runtime": "95",
            "ups.realpower": "412.5",
            "output.voltage": "229.8",
        }.items():
            bridge.publish(f"nut/ups1/{variable}", value)

        snapshot = await snapshot_where(
            driver, lambda s: s.ups["ups1"].output_voltage_v is not None
        )

    ups = snapshot.ups["ups1"]
    assert ups.available
    assert (ups.on_battery, ups.online, ups.low_battery) == (True, False, True)
    assert (ups.soc_pct, ups.runtime_s, ups.output_w) == (18.0, 95.0, 412.5)


async def test_own_schema_outlet_and_ups_telemetry(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    device = mqtt_peers(mqtt_broker, "esp-meter")
    async with connected(config_for(mqtt_broker, OWN_OUTLET, OWN_UPS)) as driver:
        device.publish(f"{BASE}/outlet/pdu-b/4/telemetry", json.dumps({"power_w": 7.5, "on": True}))
        device.publish(
            f"{BASE}/ups/ups2/telemetry",
            json.dumps({"on_battery": False, "online": True, "soc_pct": 100, "runtime_s": 2400}),
        )
        snapshot = await snapshot_where(
            driver, lambda s: s.outlets["pdu-b/4"].available and s.ups["ups2"].available
        )

    assert snapshot.outlets["pdu-b/4"].power_w == 7.5
    assert snapshot.ups["ups2"].runtime_s == 2400.0
    assert snapshot.ups["ups2"].low_battery is None


async def test_agent_throttle_shutdown_and_start_are_acknowledged(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    def agent(peer: MqttPeer, topic: str, payload: bytes) -> None:
        request = json.loads(payload)
        reply = {"id": request["id"], "ok": request["action"] != "start"}
        if not reply["ok"]:
            reply["error"] = "host is still shutting down"
        peer.client.publish(f"{BASE}/agent/db/ack", json.dumps(reply), qos=1)

    host = mqtt_peers(mqtt_broker, "agent-db", [f"{BASE}/agent/db/command"], agent)
    async with connected(config_for(mqtt_broker, AGENT)) as driver:
        host.publish(f"{BASE}/agent/db/telemetry", json.dumps({"power_w": 180.0}))
        snapshot = await snapshot_where(driver, lambda s: "db" in s.service_power_w)
        assert snapshot.service_power_w == {"db": 180.0}

        throttled = await driver.execute(Command(CommandKind.AGENT_THROTTLE, "db", cap_w=150.0))
        shut_down = await driver.execute(Command(CommandKind.AGENT_SHUTDOWN, "db"))
        started = await driver.execute(Command(CommandKind.AGENT_START, "db"))

    assert throttled.ok
    assert shut_down.ok
    assert not started.ok
    assert started.error == "host is still shutting down"
    commands = [json.loads(p) for p in host.messages_on(f"{BASE}/agent/db/command")]
    assert [(c["action"], c.get("cap_w")) for c in commands] == [
        ("throttle", 150.0),
        ("shutdown", None),
        ("start", None),
    ]
    assert len({c["id"] for c in commands}) == 3


async def test_a_command_nobody_acknowledges_times_out(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    host = mqtt_peers(mqtt_broker, "silent-agent", [f"{BASE}/agent/db/command"])
    config = config_for(mqtt_broker, AGENT, command_timeout_s=0.3)
    async with connected(config) as driver:
        result = await driver.execute(Command(CommandKind.AGENT_SHUTDOWN, "db"))

    assert not result.ok
    assert "no acknowledgement" in (result.error or "")
    assert len(host.wait_for(f"{BASE}/agent/db/command")) == 1


async def test_commands_it_was_not_configured_for_are_refused_unsent(
    mqtt_broker: Mosquitto, spy: MqttPeer
) -> None:
    async with connected(config_for(mqtt_broker, TASMOTA, NUT, broadcast_status=False)) as driver:
        refused = [
            await driver.execute(Command(CommandKind.OUTLET_ON, "pdu-z/9")),
            await driver.execute(Command(CommandKind.UPS_GROUP_OFF, "ups1/main")),
            await driver.execute(Command(CommandKind.AGENT_SHUTDOWN, "pdu-a/1")),
        ]
        throttle = Command(CommandKind.AGENT_THROTTLE, "db", cap_w=float("nan"))
        agent_config = config_for(mqtt_broker, AGENT, broadcast_status=False, client_id="pa-2")
        async with connected(agent_config) as agent_driver:
            refused.append(await agent_driver.execute(throttle))

    assert not any(result.ok for result in refused)
    assert spy.received == []


async def test_a_command_while_the_broker_is_down_is_refused_not_queued(
    restartable_mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    broker = restartable_mqtt_broker
    async with connected(config_for(broker, TASMOTA)) as driver:
        broker.stop()
        await eventually(lambda: not driver.connected)

        result = await driver.execute(Command(CommandKind.OUTLET_ON, "pdu-a/1"))
        assert not result.ok
        assert result.error == "MQTT broker not connected"

        broker.start()
        await eventually(lambda: driver.connected)
        spy = mqtt_peers(broker, "late-spy", ["cmnd/#"], ignore_retained=True)
        plug = mqtt_peers(broker, "plug1")
        plug.publish("tele/plug1/SENSOR", json.dumps({"ENERGY": {"Power": 1}}))
        await snapshot_where(driver, lambda s: s.outlets["pdu-a/1"].available)
    assert spy.received == []


async def test_broker_restart_reconnects_and_resubscribes(
    restartable_mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    broker = restartable_mqtt_broker
    async with connected(config_for(broker, TASMOTA, NUT)) as driver:
        plug = mqtt_peers(broker, "plug1")
        plug.publish("tele/plug1/SENSOR", json.dumps({"ENERGY": {"Power": 30}}))
        await snapshot_where(driver, lambda s: s.outlets["pdu-a/1"].power_w == 30.0)

        broker.stop()
        down = await snapshot_where(driver, lambda s: not s.outlets["pdu-a/1"].available)
        assert not down.ups["ups1"].available
        broker.start()
        await eventually(lambda: driver.connected)

        # Retained, so that they reach the driver whether its subscriptions (sent right after it
        # connects) are in place before or after these are published.
        again = mqtt_peers(broker, "plug1-again")
        again.publish("tele/plug1/SENSOR", json.dumps({"ENERGY": {"Power": 31}}), retain=True)
        again.publish("nut/ups1/battery.charge", "99", retain=True)
        snapshot = await snapshot_where(
            driver, lambda s: s.outlets["pdu-a/1"].power_w == 31.0 and s.ups["ups1"].available
        )
    assert snapshot.ups["ups1"].soc_pct == 99.0


async def test_malformed_payloads_are_counted_logged_once_and_dropped(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    device = mqtt_peers(mqtt_broker, "bad-devices")
    limits = PayloadLimits(max_payload_bytes=256)
    config = config_for(mqtt_broker, TASMOTA, NUT, limits=limits)
    async with connected(config) as driver:
        device.publish("tele/plug1/SENSOR", json.dumps({"ENERGY": {"Power": 12}}))
        device.publish("nut/ups1/battery.charge", "55")
        await snapshot_where(driver, lambda s: s.ups["ups1"].soc_pct == 55.0)
        caplog.set_level(logging.WARNING)
        bad_plug = [
            b"not json",
            b'{"ENERGY": {"Power": NaN}}',
            b'{"ENERGY": {"Power": Infinity}}',
            b'{"ENERGY": {"Power": "12"}}',
            b'{"ENERGY": {"Power": true}}',
            b"[1, 2]",
            b'{"ENERGY": {"Power": 1, "pad": "' + b"x" * 300 + b'"}}',
        ]
        for payload in bad_plug:
            device.publish("tele/plug1/SENSOR", payload)
        for payload in (b"nan", b"12%", b"\xff\xfe"):
            device.publish("nut/ups1/battery.charge", payload)
        device.publish("nut/ups1/ups.status", "OL; rm -rf /")
        await eventually(lambda: sum(driver.counts().malformed.values()) >= len(bad_plug) + 4)

        snapshot = await driver.read(1.0)

    assert driver.counts().malformed == {
        "tasmota pdu-a/1": len(bad_plug),
        "nut ups1": 4,
    }
    assert snapshot.outlets["pdu-a/1"].power_w == 12.0
    assert snapshot.ups["ups1"].soc_pct == 55.0
    assert snapshot.ups["ups1"].online is None
    logged = [
        r
        for r in caplog.records
        if r.name == mqtt_module.__name__ and "malformed" in r.getMessage()
    ]
    assert len(logged) == 2


async def test_status_broadcast_is_retained_and_availability_follows_the_driver(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    status = SiteStatus(
        site="rack-a",
        state="on_battery",
        updated="2026-11-27T23:30:00+00:00",
        on_battery=True,
        soc_pct=71.5,
        runtime_s=float("inf"),
        services={
            "db": ServiceStatus(ServiceDecision.ON),
            "batch": ServiceStatus(ServiceDecision.THROTTLED, cap_w=150.0, reason="buys runtime"),
        },
        tier_runtime_s={"critical": 1480.0},
    )
    async with connected(config_for(mqtt_broker)) as driver:
        assert await driver.publish_status(status)
        # A newcomer gets the retained status at once.
        reader = mqtt_peers(mqtt_broker, "dashboard", [f"{BASE}/status", f"{BASE}/availability"])
        document = json.loads(reader.wait_for(f"{BASE}/status")[0])
        assert reader.wait_for(f"{BASE}/availability") == [b"online"]

    assert reader.wait_for(f"{BASE}/availability", 2)[-1] == b"offline"
    assert document == {
        "schema": 1,
        "site": "rack-a",
        "state": "on_battery",
        "updated": "2026-11-27T23:30:00+00:00",
        "on_battery": True,
        "soc_pct": 71.5,
        "runtime_s": None,
        "services": {
            "batch": {"decision": "throttled", "cap_w": 150.0, "reason": "buys runtime"},
            "db": {"decision": "on", "cap_w": None, "reason": None},
        },
        "tier_runtime_s": {"critical": 1480.0},
    }
    reader.publish(f"{BASE}/status", b"", retain=True)
    reader.publish(f"{BASE}/availability", b"", retain=True)


async def test_username_and_password(mqtt_auth_broker: Mosquitto, mqtt_peers: PeerFactory) -> None:
    plug = mqtt_peers(mqtt_auth_broker, "plug1")
    async with connected(config_for(mqtt_auth_broker, TASMOTA)) as driver:
        plug.publish("tele/plug1/SENSOR", json.dumps({"ENERGY": {"Power": 3}}))
        await snapshot_where(driver, lambda s: s.outlets["pdu-a/1"].power_w == 3.0)


async def test_wrong_password_never_connects_and_reads_unavailable(
    mqtt_auth_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_for(mqtt_auth_broker, TASMOTA, password="wrong")
    driver = MqttDriver(config)
    await driver.start()
    try:
        await eventually(lambda: "refused the connection" in caplog.text)
        snapshot = await driver.read(0.0)
        result = await driver.execute(Command(CommandKind.OUTLET_ON, "pdu-a/1"))
    finally:
        await driver.stop()
    assert not driver.connected
    assert not snapshot.outlets["pdu-a/1"].available
    assert not result.ok


async def test_nothing_is_published_outside_the_configured_topics(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory, spy: MqttPeer
) -> None:
    plug = mqtt_peers(mqtt_broker, "plug1", ["cmnd/plug1/#"], answer_tasmota)
    async with connected(config_for(mqtt_broker, TASMOTA, NUT, AGENT)) as driver:
        plug.publish("tele/plug1/SENSOR", b"garbage")
        plug.publish("tele/plug1/SENSOR", json.dumps({"ENERGY": {"Power": 5000}}))
        plug.publish("nut/ups1/ups.status", "OB LB")
        await eventually(lambda: driver.counts().applied == 2)
        await driver.execute(Command(CommandKind.OUTLET_OFF, "pdu-a/1"))
        await driver.execute(Command(CommandKind.OUTLET_ON, "pdu-a/1"))
    spy.wait_for(f"{BASE}/availability", 2)

    published_by_peers = {"tele/plug1/SENSOR", "nut/ups1/ups.status", "stat/plug1/POWER"}
    published_by_driver = {topic for topic, _ in spy.received} - published_by_peers
    assert published_by_driver == {"cmnd/plug1/POWER", f"{BASE}/availability"}
    spy.publish(f"{BASE}/availability", b"", retain=True)


async def test_tls_with_the_brokers_ca(tls_mqtt_broker: Mosquitto, mqtt_peers: PeerFactory) -> None:
    plug = mqtt_peers(tls_mqtt_broker, "plug1")
    tls = TlsOptions(ca_certs=tls_mqtt_broker.ca_certs)
    async with connected(config_for(tls_mqtt_broker, TASMOTA, tls=tls)) as driver:
        plug.publish("tele/plug1/SENSOR", json.dumps({"ENERGY": {"Power": 4}}))
        await snapshot_where(driver, lambda s: s.outlets["pdu-a/1"].power_w == 4.0)


async def test_tls_refuses_a_broker_it_does_not_trust(
    tls_mqtt_broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Not in tmp_path itself: the broker's own files are there.
    (tmp_path / "other").mkdir()
    other_ca, _, _ = write_tls_files(tmp_path / "other")
    config = config_for(tls_mqtt_broker, TASMOTA, tls=TlsOptions(ca_certs=str(other_ca)))
    driver = MqttDriver(config)
    await driver.start()
    try:
        await eventually(lambda: "Cannot connect to MQTT broker" in caplog.text)
        result = await driver.execute(Command(CommandKind.OUTLET_ON, "pdu-a/1"))
        snapshot = await driver.read(0.0)
    finally:
        await driver.stop()
    assert not result.ok
    assert not snapshot.outlets["pdu-a/1"].available
    assert "Connected to MQTT broker" not in caplog.text


def test_a_message_on_a_topic_it_never_subscribed_is_counted_not_applied() -> None:
    # Exact subscriptions make this a broker fault (a bridge remapping topics, say).
    driver = MqttDriver(MqttDriverConfig(host="127.0.0.1", devices=(TASMOTA,)))
    message = mqtt.MQTTMessage(topic=b"tele/plug2/SENSOR")
    message.payload = b'{"ENERGY": {"Power": 5}}'

    driver._on_message(mqtt.Client(CallbackAPIVersion.VERSION2), None, message)

    assert driver.counts() == MessageCounts(applied=0, malformed={"unknown topics": 1})


def test_bad_device_configuration_is_rejected_with_a_reason() -> None:
    def driver_for(*devices: MqttDevice) -> MqttDriver:
        return MqttDriver(MqttDriverConfig(host="127.0.0.1", devices=devices))

    with pytest.raises(ProfileError, match="unknown profile 'zigbee'"):
        driver_for(MqttDevice("zigbee", "pdu-a/1", {}))
    with pytest.raises(ProfileError, match="variable 'topic' is required"):
        driver_for(MqttDevice("tasmota", "pdu-a/1", {}))
    with pytest.raises(ProfileError, match="must not contain"):
        driver_for(MqttDevice("tasmota", "pdu-a/1", {"topic": "plugs/#"}))
    with pytest.raises(ProfileError, match="configured twice"):
        driver_for(TASMOTA, MqttDevice("shelly_gen2", "pdu-a/1", {"prefix": "s"}))
    with pytest.raises(ProfileError, match="unknown variable"):
        driver_for(MqttDevice("nut", "ups1", {"prefix": "nut/ups1", "port": 3493}))


def test_stored_settings_become_a_driver_config() -> None:
    config = mqtt_config_from_mapping(
        {
            "host": "127.0.0.1",
            "port": 8883,
            "username": "power",
            "password": "allocation",
            "tls": {"ca_certs": "/etc/ssl/ca.pem"},
            "devices": [
                {"profile": "tasmota", "target": "pdu-a/1", "variables": {"topic": "plug1"}},
                {"profile": "power_allocation_agent", "target": "db", "max_power_w": 650},
            ],
        }
    )

    assert config.tls == TlsOptions(ca_certs="/etc/ssl/ca.pem")
    assert config.devices == (TASMOTA, MqttDevice("power_allocation_agent", "db", {}, 650.0))
    assert config.limits == PayloadLimits()
    assert config.base_topic == "power_allocation"
    assert MqttDriver(config).subscriptions  # every device binds to its profile


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({}, "host"),
        ({"host": "h", "port": 0}, "port"),
        ({"host": "h", "base_topic": "a/#"}, "base_topic"),
        ({"host": "h", "devices": [{"profile": "tasmota"}]}, "target"),
        (
            {"host": "h", "devices": [{"profile": "tasmota", "target": "a/1", "max_power_w": 0}]},
            "max_power_w",
        ),
        ({"host": "h", "colour": "blue"}, "colour"),
    ],
)
def test_bad_stored_settings_name_the_problem(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(vol.Invalid, match=problem):
        mqtt_config_from_mapping(settings)


async def published(driver: MqttDriver, peer: MqttPeer, messages: list[tuple[str, str]]) -> None:
    """Publish, and wait until the driver has taken every message (without reading it)."""
    before = driver.counts()
    for topic, payload in messages:
        peer.publish(topic, payload)
    taken = len(messages)
    await eventually(
        lambda: driver.counts().applied + sum(driver.counts().malformed.values())
        >= before.applied + sum(before.malformed.values()) + taken
    )


async def test_nut_status_on_line_and_on_battery_at_once_reads_on_battery(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    bridge = mqtt_peers(mqtt_broker, "nut-bridge")
    async with connected(config_for(mqtt_broker, NUT, OWN_UPS)) as driver:
        await published(
            driver,
            bridge,
            [
                ("nut/ups1/ups.status", "OL OB LB"),
                (f"{BASE}/ups/ups2/telemetry", '{"online": true, "on_battery": true}'),
            ],
        )
        contradictory = await driver.read(0.0)
        await published(driver, bridge, [("nut/ups1/ups.status", "FSD OB")])
        going_down = (await driver.read(0.0)).ups["ups1"]

    for ups in (contradictory.ups["ups1"], contradictory.ups["ups2"]):
        assert (ups.online, ups.on_battery) == (False, True)
    assert contradictory.ups["ups1"].low_battery is True
    assert contradictory.ups["ups1"].forced_shutdown is False
    assert (going_down.forced_shutdown, going_down.on_battery, going_down.low_battery) == (
        True,
        True,
        False,
    )


async def test_a_reading_above_the_devices_ceiling_is_unknown_and_counted(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    small_plug = MqttDevice("tasmota", "pdu-a/1", {"topic": "plug1"}, max_power_w=1_000.0)
    device = mqtt_peers(mqtt_broker, "plug")
    caplog.set_level(logging.WARNING)
    async with connected(config_for(mqtt_broker, small_plug, NUT)) as driver:
        await published(
            driver,
            device,
            [("tele/plug1/SENSOR", '{"ENERGY": {"Power": 12}}'), ("nut/ups1/battery.charge", "55")],
        )
        assert (await driver.read(0.0)).outlets["pdu-a/1"].power_w == 12.0
        await published(
            driver,
            device,
            [
                ("tele/plug1/SENSOR", '{"ENERGY": {"Power": 6553.5}}'),
                ("tele/plug1/SENSOR", '{"ENERGY": {"Power": -40}}'),
                ("nut/ups1/battery.charge", "101"),
            ],
        )
        snapshot = await driver.read(1.0)
        await published(driver, device, [("tele/plug1/SENSOR", '{"ENERGY": {"Power": 13}}')])
        recovered = await driver.read(2.0)

    # Not the last plausible value either: what the device draws now is not known.
    assert snapshot.outlets["pdu-a/1"].power_w is None
    assert snapshot.outlets["pdu-a/1"].available
    assert snapshot.ups["ups1"].soc_pct is None
    assert recovered.outlets["pdu-a/1"].power_w == 13.0
    counts = driver.counts()
    assert counts.implausible == {"tasmota pdu-a/1": 2, "nut ups1": 1}
    assert counts.malformed == {}
    warned = [r for r in caplog.records if r.name == plausibility.__name__]
    assert len(warned) == 2  # once per device, the rest counted


async def test_a_silent_device_goes_stale_and_needs_two_cycles_of_readings_to_come_back(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A NUT bridge that hangs with its broker connection up: its retained OL must not last."""
    clock = FakeClock()
    bridge = mqtt_peers(mqtt_broker, "nut-bridge")
    status = [("nut/ups1/availability", "online"), ("nut/ups1/ups.status", "OL")]
    async with connected(config_for(mqtt_broker, NUT), clock) as driver:
        await published(driver, bridge, status)
        fresh = (await driver.read(0.0)).ups["ups1"]
        clock.now_s += 30.0  # three cycles: still within the stale age
        still = (await driver.read(30.0)).ups["ups1"]
        clock.now_s += 0.5
        caplog.set_level(logging.WARNING)
        stale = (await driver.read(30.5)).ups["ups1"]

        await published(driver, bridge, [("nut/ups1/ups.status", "OL")])  # one stray message
        clock.now_s += 10.0
        after_one = (await driver.read(40.5)).ups["ups1"]
        clock.now_s += 10.0
        after_a_silent_cycle = (await driver.read(50.5)).ups["ups1"]
        await published(driver, bridge, [("nut/ups1/battery.charge", "97")])
        clock.now_s += 10.0
        after_two = (await driver.read(60.5)).ups["ups1"]

    assert (fresh.available, fresh.online) == (True, True)
    assert (still.available, still.online) == (True, True)
    assert stale == UpsReading("ups1", available=False)
    assert "sent nothing for its stale age" in caplog.text
    assert not after_one.available
    assert not after_a_silent_cycle.available
    assert after_two.available
    assert (after_two.online, after_two.soc_pct) == (True, 97.0)


async def test_stray_readings_too_far_apart_never_bring_a_device_back(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    clock = FakeClock()
    plug = mqtt_peers(mqtt_broker, "plug1")
    sensor = ("tele/plug1/SENSOR", '{"ENERGY": {"Power": 5}}')
    async with connected(config_for(mqtt_broker, TASMOTA), clock) as driver:
        await published(driver, plug, [("tele/plug1/LWT", "Offline")])
        seen = []
        for _ in range(3):  # one message a minute: each alone, the evidence expires between them
            await published(driver, plug, [sensor])
            seen.append((await driver.read(0.0)).outlets["pdu-a/1"].available)
            clock.now_s += 60.0
            seen.append((await driver.read(0.0)).outlets["pdu-a/1"].available)
        await published(driver, plug, [("tele/plug1/LWT", "Online")])
        back = (await driver.read(0.0)).outlets["pdu-a/1"]

    assert seen == [False] * 6
    assert back.available  # its own online word brings it back at once
    assert back.power_w is None  # the last reading is a minute old


async def test_a_value_not_repeated_within_the_stale_age_is_unknown(
    mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    clock = FakeClock()
    bridge = mqtt_peers(mqtt_broker, "nut-bridge")
    async with connected(config_for(mqtt_broker, NUT), clock) as driver:
        await published(
            driver, bridge, [("nut/ups1/ups.status", "OB"), ("nut/ups1/battery.charge", "60")]
        )
        clock.now_s += 20.0
        await published(driver, bridge, [("nut/ups1/battery.charge", "58")])
        clock.now_s += 15.0
        ups = (await driver.read(35.0)).ups["ups1"]

    assert ups.available
    assert ups.soc_pct == 58.0
    assert (ups.on_battery, ups.online) == (None, None)  # 35 s old
