"""Diagnostics: what a bug report needs, with the broker's credentials and every host redacted."""

from __future__ import annotations

import json

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
from syrupy.assertion import SnapshotAssertion
from syrupy.filters import props

from custom_components.power_allocation.const import DOMAIN
from custom_components.power_allocation.diagnostics import ALWAYS_REDACTED
from custom_components.power_allocation.redact import REDACTED, redact
from tests.agent_secrets import agent_secret
from tests.fixtures.modbus_site import HOST, ModbusSite
from tests.fixtures.mqtt_broker import Mosquitto
from tests.site_entry import SiteRun, loaded_site, small_site_entry

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
    agent_secrets = [agent_secret(s["id"]) for s in site.entry.options["services"]]
    for secret in (*LOGIN.values(), HOST, site.entry.data["mqtt_client_id"], *agent_secrets):
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


async def test_secrets_anywhere_in_the_topology_are_redacted(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    modbus_site: ModbusSite,
    small_site_clock: None,
) -> None:
    # Only username, password and host were redacted: a stop action's data went out whole.
    secrets = ("tok-123", "hdr-456", "ops", "pw-789", "q-000")
    data = {
        "token": "tok-123",
        "headers": {"Authorization": "Bearer hdr-456", "Content-Type": "application/json"},
        "url": "https://ops:pw-789@hooks.lan/stop?api_token=q-000&db=main",
        "outlet_key": 3,
    }
    base = small_site_entry(modbus_site)
    services = [
        {**s, "stop_action": {"action": "rest_command.stop_batch", "data": data}}
        if s["id"] == "batch"
        else s
        for s in base.options["services"]
    ]
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=base.title,
        data=dict(base.data),
        options={"pdus": list(base.options["pdus"]), "services": services},
    )
    run = SiteRun.small(hass, modbus_site, entry)
    await run.set_up()
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    await run.unload()
    text = json.dumps(diagnostics)
    for secret in secrets:
        assert secret not in text
    (batch,) = [s for s in diagnostics["entry"]["options"]["services"] if s["id"] == "batch"]
    assert batch["stop_action"]["data"] == {
        "token": "**REDACTED**",
        "headers": {"Authorization": "**REDACTED**", "Content-Type": "application/json"},
        "url": "https://**REDACTED**:**REDACTED**@hooks.lan/stop?api_token=**REDACTED**&db=main",
        "outlet_key": 3,
    }


def test_a_hosts_mac_and_wake_on_lan_address_are_redacted() -> None:
    services = {
        "services": [{"id": "db", "mac": "aa:bb:cc:dd:ee:ff", "wol_broadcast": "10.0.0.255"}]
    }
    assert redact(services, ALWAYS_REDACTED) == {
        "services": [{"id": "db", "mac": REDACTED, "wol_broadcast": REDACTED}]
    }
