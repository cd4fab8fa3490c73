"""Diagnostics: what a bug report needs, with the broker's credentials and every host redacted."""

from __future__ import annotations

import json

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
from syrupy.assertion import SnapshotAssertion
from syrupy.filters import props

from tests.fixtures.modbus_site import HOST, ModbusSite
from tests.fixtures.mqtt_broker import Mosquitto
from tests.site_entry import loaded_site

LOGIN = {"username": "rack-a-user", "password": "s3cret-pw"}


async def test_diagnostics(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    modbus_site: ModbusSite,
    mqtt_broker: Mosquitto,
    snapshot: SnapshotAssertion,
) -> None:
    async with loaded_site(hass, modbus_site, broker=mqtt_broker, login=LOGIN) as site:
        await site.cycle(2)
        diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, site.entry)
    text = json.dumps(diagnostics)
    for secret in (*LOGIN.values(), HOST):
        assert secret not in text
    mqtt = diagnostics["entry"]["data"]["topology"]["mqtt"]
    assert {k: mqtt[k] for k in ("host", "username", "password")} == dict.fromkeys(
        ("host", "username", "password"), "**REDACTED**"
    )
    assert {p["source"]["host"] for p in diagnostics["entry"]["options"]["pdus"]} == {
        "**REDACTED**"
    }
    # The ports are the simulator's, free ones picked at random.
    assert diagnostics == snapshot(exclude=props("port"))
