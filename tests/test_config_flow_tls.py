"""The broker's TLS in the config and reconfigure flows: a private CA and a client certificate
for mutual TLS, pasted as PEM, checked before anything is saved, against a real Mosquitto that
speaks only TLS with certificates made at test time. And the flows' part in the command channel:
an agent's secret, the entry's own MQTT client id."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType

from custom_components.power_allocation.const import CONF_TOPOLOGY
from custom_components.power_allocation.mqtt_client_id import CONF_MQTT_CLIENT_ID
from tests.fixtures.mqtt_broker import Mosquitto
from tests.fixtures.mutual_tls import TlsMaterial, make_tls_material, tls_broker
from tests.test_config_flow import (
    PDU_A,
    broker_input,
    entities_pdu,
    entities_site,
    finish_site,
    open_options,
    schema_defaults,
    settle_reload,
    site_entry,
    start_site,
)

UPS = {"profile": "power_allocation_ups"}


@pytest.fixture(scope="module")
def material() -> TlsMaterial:
    return make_tls_material()


@pytest.fixture
def mutual_tls_broker(
    socket_enabled: None, tmp_path: Path, material: TlsMaterial
) -> Iterator[Mosquitto]:
    """Only TLS, and only clients with a certificate of the private CA."""
    with tls_broker(tmp_path, material, require_client_certificate=True) as broker:
        yield broker


def tls_input(broker: Mosquitto | None, material: TlsMaterial, **changes: Any) -> dict[str, Any]:
    """A broker typed with TLS, the private CA and the client certificate and key."""
    tls = {
        "tls": True,
        "ca_cert": material.ca_pem,
        "client_cert": material.client_cert_pem,
        "client_key": material.client_key_pem,
    }
    return broker_input(broker, **{**tls, **changes})


async def submit_ups_mqtt(hass: HomeAssistant, typed: dict[str, Any]) -> Any:
    result = await start_site(hass, "mqtt")
    return await hass.config_entries.flow.async_configure(result["flow_id"], {**typed, **UPS})


async def test_mutual_tls_with_a_private_ca(
    hass: HomeAssistant, mutual_tls_broker: Mosquitto, material: TlsMaterial
) -> None:
    result = await submit_ups_mqtt(hass, tls_input(mutual_tls_broker, material))
    entry = await finish_site(hass, result)

    broker = entry.data[CONF_TOPOLOGY]["mqtt"]
    assert broker["tls"] is True
    assert (broker["ca_cert"], broker["client_cert"], broker["client_key"]) == (
        material.ca_pem,
        material.client_cert_pem,
        material.client_key_pem,
    )
    # Set up from what was stored, the site reaches the broker over mutual TLS.
    await hass.async_block_till_done()
    assert entry.runtime_data.drivers.broker_connected
    await settle_reload(hass, entry)


async def test_a_mutual_tls_broker_refuses_a_client_without_a_certificate(
    hass: HomeAssistant, mutual_tls_broker: Mosquitto, material: TlsMaterial
) -> None:
    typed = tls_input(mutual_tls_broker, material, client_cert="", client_key="")
    result = await submit_ups_mqtt(hass, typed)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "tls_handshake_failed"}


async def test_a_ca_that_did_not_sign_the_brokers_certificate(
    hass: HomeAssistant, mutual_tls_broker: Mosquitto, material: TlsMaterial
) -> None:
    other = make_tls_material()
    result = await submit_ups_mqtt(
        hass, tls_input(mutual_tls_broker, material, ca_cert=other.ca_pem)
    )
    assert result["errors"] == {"base": "tls_handshake_failed"}


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({"ca_cert": "-----BEGIN CERTIFICATE-----\nnot one\n"}, {"ca_cert": "invalid_certificate"}),
        ({"client_cert": "a certificate"}, {"client_cert": "invalid_certificate"}),
        ({"client_key": "-----BEGIN PRIVATE KEY-----\n"}, {"client_key": "invalid_key"}),
        ({"client_key": ""}, {"client_key": "cert_and_key"}),
        ({"tls": False}, {"tls": "certificates_need_tls"}),
    ],
    ids=["ca", "client_cert", "client_key", "no_key", "tls_off"],
)
async def test_unusable_certificates_are_named_on_the_form(
    hass: HomeAssistant, material: TlsMaterial, changes: dict[str, Any], errors: dict[str, str]
) -> None:
    # Checked before any connection: no broker is needed.
    result = await submit_ups_mqtt(hass, tls_input(None, material, **changes))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors


async def test_a_key_of_another_certificate(hass: HomeAssistant, material: TlsMaterial) -> None:
    other = make_tls_material()
    result = await submit_ups_mqtt(hass, tls_input(None, material, client_key=other.client_key_pem))
    assert result["errors"] == {"client_key": "key_mismatch"}


async def test_reconfigure_keeps_the_stored_key_and_never_shows_it(
    hass: HomeAssistant, mutual_tls_broker: Mosquitto, material: TlsMaterial
) -> None:
    stored = tls_input(mutual_tls_broker, material)
    entry = site_entry({"kind": "mqtt", **UPS, "variables": {}}, mqtt=stored)
    entry.add_to_hass(hass)

    result = await entry.start_reconfigure_flow(hass)
    defaults = schema_defaults(result)
    assert defaults["client_key"] == ""
    assert material.client_key_pem not in repr(result)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**stored, "client_key": "", "base_topic": "renamed"}
    )

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    broker = entry.data[CONF_TOPOLOGY]["mqtt"]
    assert broker["base_topic"] == "renamed"
    assert broker["client_key"] == material.client_key_pem
    await settle_reload(hass, entry)


# --- a service's host agent ---------------------------------------------------------------------

AGENT_SERVICE = {"id": "db", "priority": "high", "outlets": ["pdu-a/1"], "agent": True}


async def test_a_host_agent_is_added_with_its_secret(hass: HomeAssistant) -> None:
    entry = entities_site(mqtt=broker_input(), pdus=[entities_pdu(PDU_A)])
    entry.add_to_hass(hass)

    result = await open_options(hass, entry, "add_service")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**AGENT_SERVICE, "agent_secret": "db-host-agent-secret"}
    )

    assert result["type"] is FlowResultType.CREATE_ENTRY
    [service] = entry.options["services"]
    assert (service["agent"], service["agent_secret"]) == (True, "db-host-agent-secret")


@pytest.mark.parametrize("secret", [None, "short"], ids=["missing", "too_short"])
async def test_a_host_agent_without_a_usable_secret_is_refused(
    hass: HomeAssistant, secret: str | None
) -> None:
    entry = entities_site(mqtt=broker_input(), pdus=[entities_pdu(PDU_A)])
    entry.add_to_hass(hass)

    result = await open_options(hass, entry, "add_service")
    typed = AGENT_SERVICE if secret is None else {**AGENT_SERVICE, "agent_secret": secret}
    result = await hass.config_entries.options.async_configure(result["flow_id"], typed)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_topology"}
    assert "agent_secret" in result["description_placeholders"]["error"]
    assert "short" not in result["description_placeholders"]["error"]
    assert entry.options["services"] == []


# --- the entry's own MQTT client id --------------------------------------------------------------


async def test_an_entry_from_before_gets_its_own_client_id(
    hass: HomeAssistant, mqtt_broker: Mosquitto
) -> None:
    entry = site_entry({"kind": "mqtt", **UPS, "variables": {}}, mqtt=broker_input(mqtt_broker))
    entry.add_to_hass(hass)
    assert CONF_MQTT_CLIENT_ID not in entry.data

    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()

    client_id = entry.data[CONF_MQTT_CLIENT_ID]
    assert re.fullmatch(r"power-allocation-[0-9a-f]{12}", client_id)
    assert entry.minor_version == 2
    driver = entry.runtime_data.drivers.drivers["mqtt"]
    assert driver._config.client_id == client_id
    await settle_reload(hass, entry)
