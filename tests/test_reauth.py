"""Reauthentication, end to end, against a real Mosquitto that requires a password.

The broker's password changes under a running site (the broker killed and started again with
the new password file): the site's MQTT client is refused on reconnecting, Home Assistant opens
a reauth flow for the entry, the broker's devices are unavailable and nothing is switched; the
flow tests what the user types against the broker, and the site reloads with it. Refused at
setup, the entry does not load and the same flow is opened. A wrong password is retried with the
driver's backoff, never in a tight loop, and no password reaches the log or the diagnostics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from homeassistant import config_entries
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.power_allocation.const import CONF_TOPOLOGY, EVENT_DECISION
from custom_components.power_allocation.coordinator import PowerAllocationCoordinator
from custom_components.power_allocation.diagnostics import async_get_config_entry_diagnostics
from custom_components.power_allocation.drivers.mqtt import (
    BrokerAuthError,
    MqttDriver,
    MqttDriverConfig,
)
from tests.fixtures.mqtt_broker import (
    READY_TIMEOUT_S,
    Mosquitto,
    MqttPeer,
    eventually,
    free_port,
)
from tests.test_config_flow import broker_input, site_entry

BASE = "reauth_test"
USERNAME = "power"
# Distinctive, so that a leak into the log or the diagnostics shows.
OLD_PASSWORD = "old-pw-7f2a9c41"
NEW_PASSWORD = "new-pw-91bc03e8"
WRONG_PASSWORD = "wrong-pw-5d6e7a"
UPS_TELEMETRY = f"{BASE}/ups/ups/telemetry"
OUTLET_TELEMETRY = f"{BASE}/outlet/pdu-a/1/telemetry"
OUTLET_COMMAND = f"{BASE}/outlet/pdu-a/1/command"
SOC_SENSOR = "sensor.rack_a_ups_state_of_charge"
OUTLET_SWITCH = "switch.rack_a_pdu_a_outlet_1"


@pytest.fixture
def locked_broker(socket_enabled: None, tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of this test's own: anonymous clients refused, `power` with `OLD_PASSWORD` let
    in. The test may change the password (`kill_and_restart`)."""
    broker = Mosquitto(tmp_path, free_port(), USERNAME, OLD_PASSWORD)
    broker.start()
    yield broker
    broker.stop()


def kill_and_restart(broker: Mosquitto, password: str) -> None:
    """Kill the broker (no clean shutdown) and start it again on the same port with a password
    file that only knows `password` (blocking: run it in an executor)."""
    assert broker.process is not None
    broker.process.kill()
    broker.process.wait(timeout=READY_TIMEOUT_S)
    broker.process = None
    broker.password = password
    broker.start()


def mqtt_site(broker: Mosquitto, password: str) -> MockConfigEntry:
    """A UPS, a PDU and a critical service on its first outlet, all on the broker."""
    ups = {"kind": "mqtt", "profile": "power_allocation_ups", "variables": {}}
    pdu = {
        "id": "pdu-a",
        "ups": "ups",
        "limit_w": 1500,
        "outlets": 2,
        "source": {"kind": "mqtt", "profile": "power_allocation_outlet", "outlets": {1: {}}},
    }
    service = {"id": "network", "priority": "critical", "outlets": ["pdu-a/1"]}
    login = {"username": USERNAME, "password": password}
    return site_entry(
        ups, mqtt=broker_input(broker, base_topic=BASE, **login), pdus=[pdu], services=[service]
    )


def publish_site(peer: MqttPeer) -> None:
    """The devices' retained readings: mains up, the battery full, the outlet on."""
    ups = {"on_battery": False, "online": True, "soc_pct": 100, "runtime_s": 1800}
    peer.publish(UPS_TELEMETRY, json.dumps(ups), retain=True)
    peer.publish(OUTLET_TELEMETRY, json.dumps({"on": True, "power_w": 60}), retain=True)


def mqtt_driver(entry: MockConfigEntry) -> MqttDriver:
    coordinator: PowerAllocationCoordinator = entry.runtime_data
    driver = coordinator.drivers.drivers["mqtt"]
    assert isinstance(driver, MqttDriver)
    return driver


async def refresh(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """One cycle of the site's coordinator."""
    await entry.runtime_data.async_refresh()
    await hass.async_block_till_done()


async def read_site(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Cycles until the UPS's and the outlet's readings have reached the entities."""

    async def read() -> bool:
        await refresh(hass, entry)
        soc, outlet = hass.states.get(SOC_SENSOR), hass.states.get(OUTLET_SWITCH)
        return (
            soc is not None and soc.state == "100.0" and outlet is not None and outlet.state == "on"
        )

    await eventually(read)


def reauth_flows(hass: HomeAssistant, entry: MockConfigEntry) -> list[Any]:
    return [
        flow
        for flow in hass.config_entries.flow.async_progress()
        if flow["context"]["source"] == config_entries.SOURCE_REAUTH
        and flow["context"].get("entry_id") == entry.entry_id
    ]


def no_password_in(text: str) -> bool:
    return not any(p in text for p in (OLD_PASSWORD, NEW_PASSWORD, WRONG_PASSWORD))


async def test_a_password_changed_under_the_running_site_asks_for_the_new_one(
    hass: HomeAssistant,
    locked_broker: Mosquitto,
    mqtt_peers: Callable[..., MqttPeer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    entry = mqtt_site(locked_broker, OLD_PASSWORD)
    entry.add_to_hass(hass)
    publish_site(mqtt_peers(locked_broker, "devices"))
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    await read_site(hass, entry)
    coordinator: PowerAllocationCoordinator = entry.runtime_data
    driver = mqtt_driver(entry)
    powered = coordinator.control.decider.powered_state()
    decisions = async_capture_events(hass, EVENT_DECISION)
    onlooker = mqtt_peers(locked_broker, "onlooker", [OUTLET_COMMAND])

    # The password is changed on the broker, which goes down hard and comes back: the site's
    # client is refused on reconnecting.
    onlooker.stop()
    await hass.async_add_executor_job(kill_and_restart, locked_broker, NEW_PASSWORD)
    onlooker = mqtt_peers(locked_broker, "onlooker-again", [OUTLET_COMMAND])
    await eventually(lambda: driver.auth_refused)
    await refresh(hass, entry)

    flows = reauth_flows(hass, entry)
    assert len(flows) == 1
    assert flows[0]["step_id"] == "reauth_confirm"
    assert entry.state is ConfigEntryState.LOADED
    # A refused broker is a failing device: its devices unavailable, the cycle running on,
    # nothing switched, what the controller decided kept.
    for _ in range(3):
        await refresh(hass, entry)
    for entity_id in (SOC_SENSOR, OUTLET_SWITCH):
        state = hass.states.get(entity_id)
        assert state is not None
        assert state.state == "unavailable", entity_id
    assert decisions == []
    assert onlooker.messages_on(OUTLET_COMMAND) == []
    assert coordinator.control.decider.powered_state() == powered
    assert len(reauth_flows(hass, entry)) == 1  # one flow, not one a cycle
    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    assert no_password_in(json.dumps(diagnostics, default=str))

    # A password the broker refuses too: said so, nothing saved, the site as it was.
    result = await hass.config_entries.flow.async_configure(
        flows[0]["flow_id"], {"username": USERNAME, "password": WRONG_PASSWORD}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_auth"}
    assert entry.data[CONF_TOPOLOGY]["mqtt"]["password"] == OLD_PASSWORD
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is coordinator

    # The right one: saved, the site reloaded with it, the readings flowing again.
    result = await hass.config_entries.flow.async_configure(
        flows[0]["flow_id"], {"username": USERNAME, "password": NEW_PASSWORD}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()
    assert entry.data[CONF_TOPOLOGY]["mqtt"]["password"] == NEW_PASSWORD
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is not coordinator
    assert reauth_flows(hass, entry) == []
    publish_site(mqtt_peers(locked_broker, "devices-again"))
    await read_site(hass, entry)
    assert mqtt_driver(entry).connected
    # What was powered before the refusal is what the reloaded site restored.
    assert entry.runtime_data.control.decider.powered_state() == powered
    assert onlooker.messages_on(OUTLET_COMMAND) == []
    assert no_password_in(caplog.text)
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def test_credentials_refused_at_setup_ask_for_new_ones(
    hass: HomeAssistant, locked_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    entry = mqtt_site(locked_broker, WRONG_PASSWORD)
    entry.add_to_hass(hass)

    started = time.monotonic()
    assert not await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    # Refused at once: setup does not sit out the wait for a broker that does not answer.
    assert time.monotonic() - started < 5.0
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert entry.reason is not None
    flows = reauth_flows(hass, entry)
    assert len(flows) == 1

    # The form suggests the stored username, never the password.
    result = await hass.config_entries.flow.async_configure(flows[0]["flow_id"])
    assert result["step_id"] == "reauth_confirm"
    assert result["description_placeholders"]["broker"] == f"127.0.0.1:{locked_broker.port}"
    suggested = {
        str(key): (key.description or {}).get("suggested_value")
        for key in result["data_schema"].schema
    }
    assert suggested == {"username": USERNAME, "password": None}

    result = await hass.config_entries.flow.async_configure(
        flows[0]["flow_id"], {"username": USERNAME, "password": OLD_PASSWORD}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    await eventually(lambda: mqtt_driver(entry).connected)
    assert no_password_in(caplog.text)
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def test_a_refused_password_is_retried_with_backoff(locked_broker: Mosquitto) -> None:
    config = MqttDriverConfig(
        host=locked_broker.host,
        port=locked_broker.port,
        username=USERNAME,
        password=WRONG_PASSWORD,
        client_id="reauth-backoff-test",
        reconnect_min_s=1,
        reconnect_max_s=30,
    )
    driver = MqttDriver(config, profiles={})
    await driver.start()
    try:
        with pytest.raises(BrokerAuthError) as raised:
            await driver.wait_connected()
        assert no_password_in(str(raised.value))
        assert driver.auth_refused
        assert not driver.connected

        # Each refusal shows in the broker's log; paho waits 1 s, then 2 s, before the third try.
        log = locked_broker.workdir / "mosquitto.log"

        def attempts() -> int:
            return log.read_text().count("disconnected, not authorised")

        await eventually(lambda: attempts() >= 1)
        first = time.monotonic()
        await eventually(lambda: attempts() >= 3)
        assert time.monotonic() - first >= 2.5
        assert driver.auth_refused
    finally:
        await driver.stop()
