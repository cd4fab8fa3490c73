"""The site on its MQTT broker, against real Mosquitto brokers: no other client can knock it off
by taking its client id, and a repair issue says when the broker lets anyone in."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from paho.mqtt.enums import CallbackAPIVersion
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.power_allocation.broker_check import (
    ISSUE_ANONYMOUS_BROKER,
    LEARN_MORE_URL,
)
from custom_components.power_allocation.const import DOMAIN
from custom_components.power_allocation.drivers.mqtt import MqttDriver
from tests.fixtures.mqtt_broker import READY_TIMEOUT_S, Mosquitto, eventually, free_port
from tests.test_config_flow import broker_input, site_entry

BASE = "broker_security"
LOGIN = {"username": "power", "password": "allocation"}


def mqtt_site(broker: Mosquitto, **login: str) -> MockConfigEntry:
    """A site whose UPS publishes on the project's own schema, on `broker`."""
    source = {"kind": "mqtt", "profile": "power_allocation_ups", "variables": {}}
    return site_entry(source, mqtt=broker_input(broker, base_topic=BASE, **login))


async def set_up(hass: HomeAssistant, entry: MockConfigEntry) -> MqttDriver:
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    driver = entry.runtime_data.drivers.drivers["mqtt"]
    assert isinstance(driver, MqttDriver)
    return driver


async def unload(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


def anonymous_issue(hass: HomeAssistant, entry: MockConfigEntry) -> ir.IssueEntry | None:
    issue_id = f"{ISSUE_ANONYMOUS_BROKER}_{entry.entry_id}"
    return ir.async_get(hass).async_get_issue(DOMAIN, issue_id)


def connect_as(broker: Mosquitto, client_id: str) -> mqtt.Client:
    """A client connected with that id (bounded wait), not reconnecting on its own."""
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.on_connect = lambda *_: connected.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert connected.wait(READY_TIMEOUT_S)
    return client


async def test_a_client_with_the_old_predictable_id_does_not_knock_the_site_off(
    hass: HomeAssistant, mqtt_broker: Mosquitto
) -> None:
    entry = mqtt_site(mqtt_broker)
    driver = await set_up(hass, entry)
    await eventually(lambda: driver.connected)

    # The id every site had before: `power-allocation-<base topic>`.
    squatter = connect_as(mqtt_broker, f"power-allocation-{BASE}")
    try:
        before = driver.counts().applied
        squatter.publish(f"{BASE}/ups/ups/availability", "online", qos=1).wait_for_publish(
            READY_TIMEOUT_S
        )
        # Had the broker dropped the site for the newcomer, the message would be lost.
        await eventually(lambda: driver.counts().applied > before)
        assert driver.connected
    finally:
        squatter.disconnect()
        squatter.loop_stop()
        await unload(hass, entry)


async def test_an_anonymous_broker_raises_a_repair_issue(
    hass: HomeAssistant, mqtt_broker: Mosquitto
) -> None:
    entry = mqtt_site(mqtt_broker)
    await set_up(hass, entry)

    issue = anonymous_issue(hass, entry)
    assert issue is not None
    assert issue.translation_key == ISSUE_ANONYMOUS_BROKER
    assert issue.translation_placeholders == {"site": entry.title}
    assert issue.learn_more_url == LEARN_MORE_URL
    assert issue.severity is ir.IssueSeverity.WARNING
    await unload(hass, entry)


async def test_a_broker_that_wants_credentials_withdraws_the_issue(
    hass: HomeAssistant, mqtt_auth_broker: Mosquitto
) -> None:
    entry = mqtt_site(mqtt_auth_broker, **LOGIN)
    # As a check that found the broker open before it was locked down left it.
    ir.async_create_issue(
        hass,
        DOMAIN,
        f"{ISSUE_ANONYMOUS_BROKER}_{entry.entry_id}",
        is_fixable=False,
        severity=ir.IssueSeverity.WARNING,
        translation_key=ISSUE_ANONYMOUS_BROKER,
    )
    driver = await set_up(hass, entry)

    assert anonymous_issue(hass, entry) is None
    await eventually(lambda: driver.connected)
    await unload(hass, entry)


async def test_the_check_runs_again_when_the_broker_comes_back(
    hass: HomeAssistant, socket_enabled: None, tmp_path: Path
) -> None:
    broker = Mosquitto(tmp_path, free_port())
    broker.start()
    try:
        entry = mqtt_site(broker, **LOGIN)
        driver = await set_up(hass, entry)
        assert anonymous_issue(hass, entry) is not None
        coordinator = entry.runtime_data
        connections = driver.connections

        # Locked down: a password file, anonymous clients refused; the site has its login.
        broker.username, broker.password = LOGIN["username"], LOGIN["password"]
        broker.restart()
        await eventually(lambda: driver.connections > connections)
        await coordinator.async_refresh()
        await hass.async_block_till_done()

        assert anonymous_issue(hass, entry) is None
        await unload(hass, entry)
    finally:
        broker.stop()
