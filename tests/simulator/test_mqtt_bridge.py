"""The simulator's MQTT bridge, read and commanded by the project's driver over a real broker."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from custom_components.power_allocation.drivers.interface import (
    Command,
    CommandKind,
    TelemetrySnapshot,
)
from custom_components.power_allocation.drivers.mqtt import MqttDriver, MqttDriverConfig
from custom_components.power_allocation.engine.scenario import Scenario
from simulator.mqtt_bridge import (
    BRIDGE_PROFILES,
    MqttBridge,
    agent_secrets_from_topology,
    devices_for,
    nut_status,
)
from simulator.site import ServiceMode, SimulatedSite
from tests.agent_secrets import agent_secret
from tests.fixtures.mqtt_broker import Mosquitto, MqttPeer, eventually

# Retained availability outlives a test on the shared broker: every bridge gets its own prefix.
_prefixes = (f"sim{n}" for n in itertools.count())


@dataclass
class BridgedSite:
    site: SimulatedSite
    bridge: MqttBridge
    driver: MqttDriver

    async def snapshot_where(self, holds: Callable[[TelemetrySnapshot], bool]) -> TelemetrySnapshot:
        """Publish a telemetry round until the driver's snapshot satisfies `holds` (bounded)."""

        async def check() -> TelemetrySnapshot | None:
            self.bridge.publish()
            snapshot = await self.driver.read(0.0)
            return snapshot if holds(snapshot) else None

        result: TelemetrySnapshot = await eventually(check)
        return result


def agent_secrets(scenario: Scenario) -> dict[str, str]:
    return {s.id: agent_secret(s.id) for s in scenario.site.services}


@asynccontextmanager
async def bridge_and_driver(
    broker: Mosquitto,
    scenario: Scenario,
    profile: str,
    command_timeout_s: float = 2.0,
    *,
    bridge_secrets: Mapping[str, str] | None = None,
) -> AsyncIterator[BridgedSite]:
    """The bridge and a driver reading it; the agents know the driver's secrets unless
    `bridge_secrets` says otherwise."""
    prefix = next(_prefixes)
    site = SimulatedSite(scenario, follow_timeline=False)
    secrets = agent_secrets(scenario)
    bridge = MqttBridge(
        site,
        broker.host,
        broker.port,
        profile,
        prefix,
        interval_s=0,
        agent_secrets=secrets if bridge_secrets is None else bridge_secrets,
    )
    config = MqttDriverConfig(
        host=broker.host,
        port=broker.port,
        client_id=f"driver-{prefix}",
        base_topic=prefix,
        devices=devices_for(scenario.site, profile, prefix),
        command_timeout_s=command_timeout_s,
        agent_secrets=secrets,
    )
    driver = MqttDriver(config)
    await bridge.start()
    await driver.start()
    try:
        await eventually(lambda: driver.connected)
        yield BridgedSite(site, bridge, driver)
    finally:
        await driver.stop()
        await bridge.stop()


@pytest.fixture(params=BRIDGE_PROFILES)
async def bridged(
    request: pytest.FixtureRequest, mqtt_broker: Mosquitto, small_scenario: Scenario
) -> AsyncIterator[BridgedSite]:
    async with bridge_and_driver(mqtt_broker, small_scenario, request.param) as bridged:
        yield bridged


async def test_driver_reads_what_the_site_draws(bridged: BridgedSite) -> None:
    snapshot = await bridged.snapshot_where(
        lambda s: all(o.power_w is not None and o.is_on is not None for o in s.outlets.values())
        and s.ups["ups1"].output_w is not None
        and len(s.service_power_w) == 3
    )
    truth = bridged.site.snapshot()
    for outlet_id, outlet in truth.outlets.items():
        assert snapshot.outlets[outlet_id].power_w == pytest.approx(outlet.power_w, abs=0.05)
        assert snapshot.outlets[outlet_id].is_on is outlet.is_on
    ups = snapshot.ups["ups1"]
    assert (ups.online, ups.on_battery, ups.low_battery) == (True, False, False)
    assert ups.output_w == pytest.approx(truth.ups["ups1"].output_w, abs=0.05)
    assert snapshot.service_power_w["db"] == pytest.approx(300.0)


async def test_outage_shows_on_battery(bridged: BridgedSite) -> None:
    bridged.site.set_mains(False)
    bridged.site.advance(5)

    snapshot = await bridged.snapshot_where(lambda s: s.ups["ups1"].on_battery is True)

    truth = bridged.site.snapshot().ups["ups1"]
    assert snapshot.ups["ups1"].online is False
    assert snapshot.ups["ups1"].soc_pct == pytest.approx(truth.soc_pct, abs=0.05)
    assert snapshot.ups["ups1"].runtime_s == pytest.approx(truth.runtime_s, abs=0.5)


async def test_outlet_commands_switch_the_simulated_outlet(bridged: BridgedSite) -> None:
    off = await bridged.driver.execute(Command(CommandKind.OUTLET_OFF, "pdu-b/3"))

    assert off.ok, off.error
    assert bridged.site.snapshot().outlets["pdu-b/3"].is_on is False
    assert bridged.site.snapshot().services["batch"].mode is ServiceMode.UNPOWERED
    snapshot = await bridged.snapshot_where(
        lambda s: s.outlets["pdu-b/3"].is_on is False and s.outlets["pdu-b/3"].power_w == 0.0
    )
    assert "batch" not in snapshot.service_power_w  # its agent went dark with the host

    on = await bridged.driver.execute(Command(CommandKind.OUTLET_ON, "pdu-b/3"))
    assert on.ok, on.error
    assert bridged.site.snapshot().services["batch"].mode is ServiceMode.STARTING


async def test_agent_commands_reach_the_simulated_host(bridged: BridgedSite) -> None:
    driver, site = bridged.driver, bridged.site

    throttled = await driver.execute(Command(CommandKind.AGENT_THROTTLE, "db", cap_w=150.0))
    assert throttled.ok, throttled.error
    assert site.snapshot().services["db"].power_w == 150.0

    stopped = await driver.execute(Command(CommandKind.AGENT_SHUTDOWN, "batch"))
    assert stopped.ok, stopped.error
    site.advance(10)
    assert site.snapshot().services["batch"].mode is ServiceMode.STOPPED

    started = await driver.execute(Command(CommandKind.AGENT_START, "batch"))
    assert started.ok, started.error
    assert site.snapshot().services["batch"].mode is ServiceMode.STARTING
    released = await driver.execute(Command(CommandKind.AGENT_START, "db"))
    assert released.ok, released.error
    assert site.snapshot().services["db"].cap_w is None


async def test_an_unpowered_host_does_not_answer(
    mqtt_broker: Mosquitto, small_scenario: Scenario
) -> None:
    profile = "power_allocation"  # host agents speak the same schema under every profile
    async with bridge_and_driver(mqtt_broker, small_scenario, profile, 0.3) as bridged:
        bridged.site.set_outlet("pdu-b/3", False)

        result = await bridged.driver.execute(Command(CommandKind.AGENT_SHUTDOWN, "batch"))

    assert not result.ok
    assert "no acknowledgement" in (result.error or "")


async def test_stopping_the_bridge_takes_its_devices_offline(
    mqtt_broker: Mosquitto, small_scenario: Scenario, mqtt_peers: Callable[..., MqttPeer]
) -> None:
    prefix = next(_prefixes)
    site = SimulatedSite(small_scenario, follow_timeline=False)
    bridge = MqttBridge(
        site,
        mqtt_broker.host,
        mqtt_broker.port,
        "tasmota",
        prefix,
        agent_secrets=agent_secrets(small_scenario),
    )
    await bridge.start()
    lwt = f"tele/{prefix}_pdu-a_1/LWT"
    watcher = mqtt_peers(mqtt_broker, "watcher", [lwt])
    assert watcher.wait_for(lwt) == [b"Online"]

    await bridge.stop()

    assert watcher.wait_for(lwt, 2)[-1] == b"Offline"
    assert bridge.command_topics[0] == f"cmnd/{prefix}_pdu-a_1/POWER"


def test_nut_status_codes(small_scenario: Scenario) -> None:
    site = SimulatedSite(small_scenario, follow_timeline=False)
    assert nut_status(site.snapshot().ups["ups1"], mains_on=True) == "OL"
    site.set_mains(False)
    site.advance(1)
    assert nut_status(site.snapshot().ups["ups1"], mains_on=False) == "OB DISCHRG"
    site.set_mains(True)
    assert nut_status(site.snapshot().ups["ups1"], mains_on=True) == "OL CHRG"


def test_unknown_bridge_profile_is_refused(small_scenario: Scenario) -> None:
    site = SimulatedSite(small_scenario, follow_timeline=False)
    with pytest.raises(ValueError, match="unknown bridge profile"):
        MqttBridge(site, "127.0.0.1", 1883, "zigbee", "sim", agent_secrets={})
    with pytest.raises(ValueError, match="unknown bridge profile"):
        devices_for(small_scenario.site, "zigbee", "sim")


# --- the agents' command check -----------------------------------------------------------------


def _agent_root(bridged: BridgedSite, service_id: str) -> str:
    return f"{bridged.bridge.prefix}/agent/{service_id}"


async def test_an_unsigned_shutdown_from_anyone_is_refused(
    mqtt_broker: Mosquitto, small_scenario: Scenario, mqtt_peers: Callable[..., MqttPeer]
) -> None:
    async with bridge_and_driver(mqtt_broker, small_scenario, "power_allocation") as bridged:
        root = _agent_root(bridged, "batch")
        intruder = mqtt_peers(mqtt_broker, "intruder", [f"{root}/ack"])
        intruder.publish(f"{root}/command", json.dumps({"id": 1, "action": "shutdown"}))

        # The bridge answers on this event loop: wait without blocking it.
        [ack] = await eventually(lambda: intruder.messages_on(f"{root}/ack"))

    assert json.loads(ack) == {"id": 1, "ok": False, "error": "refused: unsigned command"}
    assert bridged.site.snapshot().services["batch"].mode is ServiceMode.RUNNING


async def test_a_replayed_command_is_refused(
    mqtt_broker: Mosquitto, small_scenario: Scenario, mqtt_peers: Callable[..., MqttPeer]
) -> None:
    async with bridge_and_driver(mqtt_broker, small_scenario, "power_allocation") as bridged:
        root = _agent_root(bridged, "db")
        eavesdropper = mqtt_peers(mqtt_broker, "eavesdropper", [f"{root}/command", f"{root}/ack"])
        throttled = await bridged.driver.execute(
            Command(CommandKind.AGENT_THROTTLE, "db", cap_w=90.0)
        )
        started = await bridged.driver.execute(Command(CommandKind.AGENT_START, "db"))
        assert (throttled.ok, started.ok) == (True, True)
        assert bridged.site.snapshot().services["db"].cap_w is None
        captured = eavesdropper.wait_for(f"{root}/command")[0]

        eavesdropper.publish(f"{root}/command", captured)

        await eventually(lambda: len(eavesdropper.messages_on(f"{root}/ack")) == 3)
        acks = [json.loads(p) for p in eavesdropper.messages_on(f"{root}/ack")]
    assert acks[-1] == {
        "id": json.loads(captured)["id"],
        "ok": False,
        "error": "refused: replayed command",
    }
    assert bridged.site.snapshot().services["db"].cap_w is None


async def test_a_command_signed_with_another_secret_fails_and_changes_nothing(
    mqtt_broker: Mosquitto, small_scenario: Scenario
) -> None:
    wrong = {s.id: f"not-the-secret-of-{s.id}" for s in small_scenario.site.services}
    async with bridge_and_driver(
        mqtt_broker, small_scenario, "power_allocation", bridge_secrets=wrong
    ) as bridged:
        result = await bridged.driver.execute(Command(CommandKind.AGENT_SHUTDOWN, "batch"))

    assert (result.ok, result.error) == (False, "refused: bad signature")
    assert bridged.site.snapshot().services["batch"].mode is ServiceMode.RUNNING


async def test_an_agent_without_a_secret_refuses_every_command(
    mqtt_broker: Mosquitto, small_scenario: Scenario
) -> None:
    async with bridge_and_driver(
        mqtt_broker, small_scenario, "power_allocation", bridge_secrets={}
    ) as bridged:
        result = await bridged.driver.execute(Command(CommandKind.AGENT_SHUTDOWN, "batch"))

    assert not result.ok
    assert "no secret" in (result.error or "")
    assert bridged.site.snapshot().services["batch"].mode is ServiceMode.RUNNING


def test_the_agents_secrets_come_from_the_site_topology(tmp_path: Path) -> None:
    topology = tmp_path / "site.yaml"
    topology.write_text(
        "services:\n"
        "- {id: db, agent: true, agent_secret: the-secret-of-the-db-host}\n"
        "- {id: lab, agent: false}\n"
    )
    assert agent_secrets_from_topology(topology) == {"db": "the-secret-of-the-db-host"}
    demo = Path(__file__).parents[2] / "docs" / "demo-topology.yaml"
    assert len(agent_secrets_from_topology(demo)) == 12
