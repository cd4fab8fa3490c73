"""The config, reconfigure, reauth and options flows, in real Home Assistant, against real peers.

Modbus steps talk to the simulator's pymodbus servers (`modbus_site`), MQTT steps to a real
Mosquitto (`mqtt_broker`, `mqtt_auth_broker`, or one of a test's own); "cannot connect" is a
loopback port nothing listens on.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from homeassistant import config_entries
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult, FlowResultType, InvalidData
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.power_allocation import entry_topology
from custom_components.power_allocation.const import CONF_SITE_NAME, CONF_TOPOLOGY, DOMAIN
from custom_components.power_allocation.engine.outage import OutagePrior
from custom_components.power_allocation.engine.planner import RIDE_THROUGH_S
from custom_components.power_allocation.mqtt_client_id import CONF_MQTT_CLIENT_ID
from custom_components.power_allocation.topology import parse_topology
from tests.fixtures.modbus_site import HOST, ModbusSite
from tests.fixtures.mqtt_broker import Mosquitto, free_port
from tests.site_entry import modbus_source, small_site_entry

RATINGS = {
    "rated_w": 1000,
    "capacity_wh": 500,
    "runtime_full_load_s": 300,
    "peukert_k": 1.3,
    "efficiency": 0.9,
}


@pytest.fixture
def closed_port(socket_enabled: None) -> int:
    """A loopback port that was just bound and released: nothing listens on it."""
    return free_port()


@pytest.fixture
async def unavailable_broker(socket_enabled: None) -> AsyncIterator[int]:
    """A loopback MQTT server that answers every CONNECT with 3.1.1's "server unavailable".

    Mosquitto cannot be made to send that code (it refuses only credentials, and paho retries
    the protocol-version and client-id refusals by itself), so this peer speaks the few bytes
    of MQTT needed: read the CONNECT packet, answer CONNACK 3, wait for the client to hang up.
    """

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1)  # CONNECT's fixed header
        remaining, shift = 0, 0
        while True:  # the variable-length "remaining length"
            byte = (await reader.readexactly(1))[0]
            remaining |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        await reader.readexactly(remaining)
        writer.write(bytes([0x20, 0x02, 0x00, 0x03]))
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer, HOST, 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


def broker_input(broker: Mosquitto | None = None, **changes: Any) -> dict[str, Any]:
    """What a user types for a broker (anonymous unless `username` and `password` are given)."""
    port = broker.port if broker is not None else 1883
    return {"host": HOST, "port": port, "tls": False, "base_topic": "config_flow_test", **changes}


def modbus_input(port: int) -> dict[str, Any]:
    return {"host": HOST, "port": port, "unit_id": 1, "profile": "apc_smart_ups"}


def site_entry(
    source: dict[str, Any],
    *,
    mqtt: dict[str, Any] | None = None,
    title: str = "Rack A",
    pdus: list[dict[str, Any]] | None = None,
    services: list[dict[str, Any]] | None = None,
    planner: dict[str, Any] | None = None,
) -> MockConfigEntry:
    """A one-UPS site (`ups`), as the user flow creates it, with the given PDUs and services."""
    topology: dict[str, Any] = {"ups": [{"id": "ups", **RATINGS, "source": source}]}
    if mqtt is not None:
        topology["mqtt"] = mqtt
    return MockConfigEntry(
        domain=DOMAIN,
        title=title,
        unique_id=title.lower().replace(" ", "_"),
        data={CONF_SITE_NAME: title, CONF_TOPOLOGY: topology},
        options={
            "pdus": pdus or [],
            "services": services or [],
            **({"planner": planner} if planner else {}),
        },
    )


def schema_defaults(result: FlowResult) -> dict[str, Any]:
    """The default of every field of a form that has one."""
    defaults = {}
    for key in result["data_schema"].schema:
        if callable(key.default):
            defaults[str(key)] = key.default()
    return defaults


async def settle_reload(hass: HomeAssistant, entry: config_entries.ConfigEntry) -> None:
    """Let the reload a reconfigure or reauth schedules run: the MQTT site is set up anew.

    Its broker answers, so it loads (its UPS unavailable until it publishes); it is unloaded
    here so that its MQTT client does not outlive the test.
    """
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def start_site(hass: HomeAssistant, source: str, name: str = "Rack A") -> FlowResult:
    """The user step filled in: the form of the UPS step for `source`."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SITE_NAME: name, "source": source}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == f"ups_{source}"
    return result


async def finish_site(hass: HomeAssistant, result: FlowResult) -> config_entries.ConfigEntry:
    """From the ratings form to the created entry."""
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "ratings"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], RATINGS)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    entry: config_entries.ConfigEntry = result["result"]
    return entry


# --- user step ---------------------------------------------------------------------------------


async def test_a_name_without_letters_or_digits_is_refused(hass: HomeAssistant) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SITE_NAME: " -- ", "source": "modbus"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {CONF_SITE_NAME: "invalid_name"}


async def test_a_site_is_added_once(hass: HomeAssistant) -> None:
    site_entry({"kind": "entities", "status": "sensor.ups_status"}).add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SITE_NAME: "  rack a ", "source": "modbus"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


# --- UPS on Modbus -----------------------------------------------------------------------------


async def test_modbus_site_is_created_and_sets_up(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    port = modbus_site.server.ports["ups1"]
    result = await start_site(hass, "modbus", name=" Rack A ")
    result = await hass.config_entries.flow.async_configure(result["flow_id"], modbus_input(port))
    entry = await finish_site(hass, result)

    assert entry.title == "Rack A"
    assert entry.unique_id == "rack_a"
    data = dict(entry.data)
    # Its own MQTT client id, random: no other client can guess it and knock the site off.
    assert re.fullmatch(r"power-allocation-[0-9a-f]{12}", data.pop(CONF_MQTT_CLIENT_ID))
    assert data == {
        CONF_SITE_NAME: "Rack A",
        CONF_TOPOLOGY: {
            "ups": [
                {
                    "id": "ups",
                    **RATINGS,
                    "source": {"kind": "modbus", **modbus_input(port), "timeout_s": 1.0},
                }
            ]
        },
    }
    assert entry.options == {"pdus": [], "services": []}
    # Home Assistant set the new entry up; it must come up again from what the flow stored.
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert await hass.config_entries.async_unload(entry.entry_id)
    assert entry.state is ConfigEntryState.NOT_LOADED
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.snapshot.ups["ups"].available


async def test_modbus_ups_that_does_not_answer(hass: HomeAssistant, closed_port: int) -> None:
    result = await start_site(hass, "modbus")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], modbus_input(closed_port)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "ups_modbus"
    assert result["errors"] == {"base": "cannot_connect"}
    # What the user typed is offered again.
    suggested = {
        str(key): key.description["suggested_value"]
        for key in result["data_schema"].schema
        if key.description
    }
    assert suggested == modbus_input(closed_port)


async def test_modbus_ups_another_site_reads(hass: HomeAssistant, modbus_site: ModbusSite) -> None:
    small_site_entry(modbus_site).add_to_hass(hass)
    result = await start_site(hass, "modbus", name="Rack B")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], modbus_input(modbus_site.server.ports["ups1"])
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "already_used"}


async def test_ratings_the_engine_refuses(hass: HomeAssistant, modbus_site: ModbusSite) -> None:
    result = await start_site(hass, "modbus")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], modbus_input(modbus_site.server.ports["ups1"])
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**RATINGS, "peukert_k": 5}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "ratings"
    assert result["errors"] == {"base": "invalid_topology"}
    assert result["description_placeholders"] == {
        "error": "UPS 'ups': peukert_k must be within 1..3"
    }
    entry = await finish_site(hass, result)
    assert entry.data[CONF_TOPOLOGY]["ups"][0]["peukert_k"] == 1.3


# --- UPS on MQTT -------------------------------------------------------------------------------


async def test_mqtt_form_defaults_to_home_assistants_broker(hass: HomeAssistant) -> None:
    # An MQTT entry without a broker (as an ignored discovery leaves) is skipped.
    MockConfigEntry(domain="mqtt", data={}).add_to_hass(hass)
    MockConfigEntry(
        domain="mqtt",
        data={"broker": "mqtt.example.org", "port": 8883, "username": "ha", "password": "secret"},
    ).add_to_hass(hass)
    result = await start_site(hass, "mqtt")
    assert schema_defaults(result) == {
        "host": "mqtt.example.org",
        "port": 8883,
        "username": "ha",
        "password": "secret",
        "tls": False,
        "ca_cert": "",
        "client_cert": "",
        "client_key": "",
        "base_topic": "power_allocation",
        "profile": "nut",
        "topic_prefix": "",
    }


async def test_mqtt_form_without_home_assistants_broker(hass: HomeAssistant) -> None:
    result = await start_site(hass, "mqtt")
    defaults = schema_defaults(result)
    assert "host" not in defaults
    assert defaults["port"] == 1883
    assert defaults["username"] == ""


async def test_mqtt_nut_ups_needs_its_topic_prefix(
    hass: HomeAssistant, mqtt_broker: Mosquitto
) -> None:
    result = await start_site(hass, "mqtt")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**broker_input(mqtt_broker), "profile": "nut"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "ups_mqtt"
    assert result["errors"] == {"topic_prefix": "topic_required"}
    # The form keeps what was typed.
    assert schema_defaults(result)["port"] == mqtt_broker.port


async def test_mqtt_nut_ups_is_created(hass: HomeAssistant, mqtt_broker: Mosquitto) -> None:
    result = await start_site(hass, "mqtt")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {**broker_input(mqtt_broker), "profile": "nut", "topic_prefix": "config_flow/ups1"},
    )
    entry = await finish_site(hass, result)
    topology = entry.data[CONF_TOPOLOGY]
    assert topology["mqtt"] == broker_input(mqtt_broker)
    assert topology["ups"][0]["source"] == {
        "kind": "mqtt",
        "profile": "nut",
        "variables": {"prefix": "config_flow/ups1"},
    }


async def test_mqtt_own_schema_ups_with_credentials(
    hass: HomeAssistant, mqtt_auth_broker: Mosquitto
) -> None:
    result = await start_site(hass, "mqtt")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {
            **broker_input(mqtt_auth_broker, username="power", password="allocation"),
            "profile": "power_allocation_ups",
        },
    )
    entry = await finish_site(hass, result)
    topology = entry.data[CONF_TOPOLOGY]
    assert topology["mqtt"] == broker_input(
        mqtt_auth_broker, username="power", password="allocation"
    )
    assert topology["ups"][0]["source"] == {
        "kind": "mqtt",
        "profile": "power_allocation_ups",
        "variables": {},
    }


@pytest.mark.parametrize(
    "typed",
    [
        {"username": "power", "password": "wrong"},
        {},  # anonymous, where only `power` is let in
    ],
    ids=["wrong_password", "anonymous"],
)
async def test_mqtt_broker_refuses_the_credentials(
    hass: HomeAssistant, mqtt_auth_broker: Mosquitto, typed: dict[str, str]
) -> None:
    result = await start_site(hass, "mqtt")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {**broker_input(mqtt_auth_broker, **typed), "profile": "power_allocation_ups"},
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_auth"}


async def test_mqtt_broker_that_does_not_answer(hass: HomeAssistant, closed_port: int) -> None:
    result = await start_site(hass, "mqtt")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {**broker_input(port=closed_port), "profile": "nut", "topic_prefix": "config_flow/ups1"},
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}


async def test_mqtt_broker_whose_certificate_is_not_trusted(
    hass: HomeAssistant, tls_mqtt_broker: Mosquitto
) -> None:
    result = await start_site(hass, "mqtt")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {**broker_input(tls_mqtt_broker, tls=True), "profile": "power_allocation_ups"},
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "tls_handshake_failed"}


async def test_mqtt_broker_that_refuses_for_another_reason(
    hass: HomeAssistant, unavailable_broker: int
) -> None:
    result = await start_site(hass, "mqtt")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {**broker_input(port=unavailable_broker), "profile": "power_allocation_ups"},
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}


async def test_mqtt_ups_another_site_reads(hass: HomeAssistant, mqtt_broker: Mosquitto) -> None:
    site_entry(
        {"kind": "mqtt", "profile": "nut", "variables": {"prefix": "config_flow/ups1"}},
        mqtt=broker_input(mqtt_broker),
    ).add_to_hass(hass)
    result = await start_site(hass, "mqtt", name="Rack B")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {**broker_input(mqtt_broker), "profile": "nut", "topic_prefix": "config_flow/ups1"},
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "already_used"}


# --- UPS from entities -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        {},
        {"runtime": "sensor.ups_runtime"},
        {"on_battery": "binary_sensor.ups_on_battery", "status": "sensor.ups_status"},
    ],
)
async def test_entities_ups_needs_one_mains_entity(
    hass: HomeAssistant, typed: dict[str, str]
) -> None:
    result = await start_site(hass, "entities")
    result = await hass.config_entries.flow.async_configure(result["flow_id"], typed)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "ups_entities"
    assert result["errors"] == {"base": "one_mains_entity"}


async def test_entities_ups_whose_entity_does_not_exist(hass: HomeAssistant) -> None:
    result = await start_site(hass, "entities")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"on_battery": "binary_sensor.ups_on_battery"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "entity_not_found"}


async def test_entities_ups_is_created(hass: HomeAssistant) -> None:
    hass.states.async_set("sensor.ups_status", "OL")
    hass.states.async_set("sensor.ups_runtime", "1200")
    result = await start_site(hass, "entities")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"status": "sensor.ups_status", "runtime": "sensor.ups_runtime"}
    )
    entry = await finish_site(hass, result)
    assert "mqtt" not in entry.data[CONF_TOPOLOGY]
    assert entry.data[CONF_TOPOLOGY]["ups"][0]["source"] == {
        "kind": "entities",
        "status": "sensor.ups_status",
        "runtime": "sensor.ups_runtime",
    }


async def test_entities_ups_another_site_reads(hass: HomeAssistant) -> None:
    hass.states.async_set("binary_sensor.ups_on_battery", "off")
    site_entry({"kind": "entities", "on_battery": "binary_sensor.ups_on_battery"}).add_to_hass(hass)
    result = await start_site(hass, "entities", name="Rack B")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"on_battery": "binary_sensor.ups_on_battery"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "already_used"}


# --- reconfigure -------------------------------------------------------------------------------


async def test_reconfigure_forms_offer_the_current_connection(
    hass: HomeAssistant, closed_port: int
) -> None:
    modbus = site_entry({"kind": "modbus", **modbus_input(closed_port)}, title="Modbus")
    mqtt = site_entry(
        {"kind": "mqtt", "profile": "power_allocation_ups", "variables": {}},
        mqtt=broker_input(port=closed_port, username="power", password="allocation"),
        title="Mqtt",
    )
    entities = site_entry(
        {"kind": "entities", "status": "sensor.ups_status", "charge": "sensor.ups_charge"},
        title="Entities",
    )
    for entry in (modbus, mqtt, entities):
        entry.add_to_hass(hass)

    result = await modbus.start_reconfigure_flow(hass)
    assert result["step_id"] == "reconfigure"
    assert schema_defaults(result) == modbus_input(closed_port)
    result = await mqtt.start_reconfigure_flow(hass)
    assert schema_defaults(result) == {
        **broker_input(port=closed_port, username="power", password="allocation"),
        **dict.fromkeys(("ca_cert", "client_cert", "client_key"), ""),
    }
    result = await entities.start_reconfigure_flow(hass)
    suggested = {
        str(key): key.description["suggested_value"]
        for key in result["data_schema"].schema
        if key.description
    }
    assert suggested == {"status": "sensor.ups_status", "charge": "sensor.ups_charge"}


async def test_reconfigure_modbus_to_the_ups_that_answers(
    hass: HomeAssistant, modbus_site: ModbusSite, closed_port: int
) -> None:
    entry = site_entry({"kind": "modbus", **modbus_input(closed_port), "timeout_s": 1.0})
    entry.add_to_hass(hass)
    port = modbus_site.server.ports["ups1"]

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], modbus_input(port))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data[CONF_TOPOLOGY]["ups"][0]["source"] == {
        "kind": "modbus",
        **modbus_input(port),
        "timeout_s": 1.0,
    }
    assert "mqtt" not in entry.data[CONF_TOPOLOGY]
    # The entry is reloaded with its new connection, and now comes up.
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED


async def test_reconfigure_modbus_refused(
    hass: HomeAssistant, modbus_site: ModbusSite, closed_port: int
) -> None:
    small_site_entry(modbus_site).add_to_hass(hass)
    port = modbus_site.server.ports["ups1"]
    source = {"kind": "modbus", **modbus_input(closed_port), "timeout_s": 1.0}
    entry = site_entry(source, title="Rack B")
    entry.add_to_hass(hass)

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], modbus_input(closed_port)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], modbus_input(port))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "already_used"}
    assert entry.data[CONF_TOPOLOGY]["ups"][0]["source"] == source


async def test_reconfigure_mqtt_to_the_broker_that_answers(
    hass: HomeAssistant, mqtt_auth_broker: Mosquitto, closed_port: int
) -> None:
    source = {"kind": "mqtt", "profile": "nut", "variables": {"prefix": "config_flow/ups1"}}
    entry = site_entry(source, mqtt=broker_input(port=closed_port))
    entry.add_to_hass(hass)
    new_broker = broker_input(mqtt_auth_broker, username="power", password="allocation")

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], new_broker)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data[CONF_TOPOLOGY]["mqtt"] == new_broker
    assert entry.data[CONF_TOPOLOGY]["ups"][0]["source"] == source
    await settle_reload(hass, entry)


async def test_reconfigure_mqtt_to_a_base_topic_the_topology_refuses(
    hass: HomeAssistant, mqtt_broker: Mosquitto
) -> None:
    old_broker = broker_input(mqtt_broker)
    entry = site_entry(
        {"kind": "mqtt", "profile": "power_allocation_ups", "variables": {}}, mqtt=old_broker
    )
    entry.add_to_hass(hass)

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**old_broker, "base_topic": "config_flow_test/#"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_topology"}
    assert result["description_placeholders"] == {
        "error": "mqtt.base_topic: must not contain + # or NUL"
    }
    assert entry.data[CONF_TOPOLOGY]["mqtt"] == old_broker


@pytest.mark.parametrize(
    ("changed", "error"), [("password", "invalid_auth"), ("port", "cannot_connect")]
)
async def test_reconfigure_mqtt_refused(
    hass: HomeAssistant, mqtt_auth_broker: Mosquitto, closed_port: int, changed: str, error: str
) -> None:
    old_broker = broker_input(mqtt_auth_broker, username="power", password="allocation")
    entry = site_entry(
        {"kind": "mqtt", "profile": "nut", "variables": {"prefix": "config_flow/ups1"}},
        mqtt=old_broker,
    )
    entry.add_to_hass(hass)
    typed = {**old_broker, changed: {"password": "wrong", "port": closed_port}[changed]}

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], typed)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": error}
    assert entry.data[CONF_TOPOLOGY]["mqtt"] == old_broker


async def test_reconfigure_mqtt_onto_a_ups_another_site_reads(
    hass: HomeAssistant, mqtt_broker: Mosquitto, closed_port: int
) -> None:
    source = {"kind": "mqtt", "profile": "nut", "variables": {"prefix": "config_flow/ups1"}}
    site_entry(source, mqtt=broker_input(mqtt_broker)).add_to_hass(hass)
    entry = site_entry(source, mqtt=broker_input(port=closed_port), title="Rack B")
    entry.add_to_hass(hass)

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], broker_input(mqtt_broker)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "already_used"}


async def test_reconfigure_entities(hass: HomeAssistant) -> None:
    hass.states.async_set("sensor.ups_status", "OL")
    entry = site_entry({"kind": "entities", "on_battery": "binary_sensor.ups_on_battery"})
    entry.add_to_hass(hass)

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"on_battery": "binary_sensor.gone"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "entity_not_found"}
    for typed in ({}, {"on_battery": "binary_sensor.gone", "status": "sensor.ups_status"}):
        result = await hass.config_entries.flow.async_configure(result["flow_id"], typed)
        assert result["type"] is FlowResultType.FORM
        assert result["errors"] == {"base": "one_mains_entity"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"status": "sensor.ups_status", "load": "sensor.ups_load"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data[CONF_TOPOLOGY]["ups"][0]["source"] == {
        "kind": "entities",
        "status": "sensor.ups_status",
        "load": "sensor.ups_load",
    }


# --- reauth ------------------------------------------------------------------------------------


async def test_reauth_with_new_credentials(
    hass: HomeAssistant, mqtt_auth_broker: Mosquitto
) -> None:
    stale = broker_input(mqtt_auth_broker, username="power", password="old")
    entry = site_entry(
        {"kind": "mqtt", "profile": "power_allocation_ups", "variables": {}}, mqtt=stale
    )
    entry.add_to_hass(hass)

    result = await entry.start_reauth_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reauth_confirm"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"username": "power", "password": "still wrong"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_auth"}
    assert entry.data[CONF_TOPOLOGY]["mqtt"] == stale
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"username": "power", "password": "allocation"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert entry.data[CONF_TOPOLOGY]["mqtt"] == {**stale, "password": "allocation"}
    await settle_reload(hass, entry)


async def test_reauth_with_the_broker_down_saves_nothing(
    hass: HomeAssistant, closed_port: int
) -> None:
    stale = broker_input(port=closed_port, username="power", password="old")
    entry = site_entry(
        {"kind": "mqtt", "profile": "power_allocation_ups", "variables": {}}, mqtt=stale
    )
    entry.add_to_hass(hass)

    result = await entry.start_reauth_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"username": "power", "password": "allocation"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}
    assert entry.data[CONF_TOPOLOGY]["mqtt"] == stale


async def test_reauth_without_a_username(hass: HomeAssistant, mqtt_broker: Mosquitto) -> None:
    stale = broker_input(mqtt_broker, username="power", password="old")
    entry = site_entry(
        {"kind": "mqtt", "profile": "power_allocation_ups", "variables": {}}, mqtt=stale
    )
    entry.add_to_hass(hass)

    result = await entry.start_reauth_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"username": "", "password": ""}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_topology"}
    assert result["description_placeholders"]["error"].startswith("mqtt.username: ")
    assert entry.data[CONF_TOPOLOGY]["mqtt"] == stale


# --- options: PDUs -----------------------------------------------------------------------------

PDU_A = {"id": "pdu-a", "ups": "ups", "limit_w": 1500, "outlets": 4}
NETWORK = {"id": "network", "priority": "critical", "outlets": ["pdu-a/1"]}


def entities_pdu(pdu: dict[str, Any]) -> dict[str, Any]:
    """`pdu` read from smart-plug entities Home Assistant has."""
    prefix = pdu["id"].replace("-", "_")
    outlets = {n: {"switch": f"switch.{prefix}_{n}"} for n in range(1, pdu["outlets"] + 1)}
    return {**pdu, "source": {"kind": "entities", "outlets": outlets}}


def entities_site(**kwargs: Any) -> MockConfigEntry:
    return site_entry({"kind": "entities", "status": "sensor.ups_status"}, **kwargs)


async def open_options(hass: HomeAssistant, entry: MockConfigEntry, step: str) -> FlowResult:
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.MENU
    assert result["step_id"] == "init"
    assert result["menu_options"] == [
        "add_pdu",
        "add_service",
        "remove",
        "import_topology",
        "planner",
    ]
    return await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": step}
    )


async def add_pdu(
    hass: HomeAssistant, entry: MockConfigEntry, source: str, **pdu: Any
) -> FlowResult:
    """The add_pdu step filled in with PDU_A's fields, changed by `pdu`."""
    result = await open_options(hass, entry, "add_pdu")
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "add_pdu"
    return await hass.config_entries.options.async_configure(
        result["flow_id"], {**PDU_A, **pdu, "source": source}
    )


async def test_modbus_pdu_is_added_and_the_site_reloads(
    hass: HomeAssistant, modbus_site: ModbusSite, closed_port: int
) -> None:
    ups = {"id": "ups1", **RATINGS, "source": modbus_source(modbus_site, "ups1", "apc_smart_ups")}
    pdu_a = {**PDU_A, "ups": "ups1", "source": modbus_source(modbus_site, "pdu-a", "generic_pdu")}
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Rack A",
        unique_id="rack_a",
        data={CONF_SITE_NAME: "Rack A", CONF_TOPOLOGY: {"ups": [ups]}},
        options={"pdus": [pdu_a], "services": [NETWORK]},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert "pdu-b/1" not in entry.runtime_data.snapshot.outlets

    result = await open_options(hass, entry, "add_pdu")
    assert schema_defaults(result)["ups"] == "ups1"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**PDU_A, "id": "pdu-a", "ups": "ups1", "source": "modbus"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"id": "duplicate_id"}
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**PDU_A, "id": "pdu-b", "ups": "ups1", "source": "modbus"}
    )
    assert result["step_id"] == "pdu_modbus"
    typed = {"host": HOST, "port": closed_port, "unit_id": 1, "profile": "generic_pdu"}
    result = await hass.config_entries.options.async_configure(result["flow_id"], typed)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}
    typed["port"] = modbus_site.server.ports["pdu-b"]
    result = await hass.config_entries.options.async_configure(result["flow_id"], typed)
    assert result["type"] is FlowResultType.CREATE_ENTRY

    assert entry.options["pdus"][1] == {
        **PDU_A,
        "id": "pdu-b",
        "ups": "ups1",
        "source": {"kind": "modbus", **typed, "timeout_s": 1.0},
    }
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.snapshot.outlets["pdu-b/1"].available


async def test_modbus_pdu_whose_id_the_topology_refuses(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    entry = entities_site()
    entry.add_to_hass(hass)
    result = await add_pdu(hass, entry, "modbus", id="pdu b")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            "host": HOST,
            "port": modbus_site.server.ports["pdu-b"],
            "unit_id": 1,
            "profile": "generic_pdu",
        },
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_topology"}
    assert result["description_placeholders"] == {
        "error": "pdus[0] (pdu b).id: letters, digits, _ . - only"
    }
    assert entry.options["pdus"] == []


@pytest.mark.parametrize(
    ("profile", "devices", "outlets"),
    [
        ("tasmota", "plug_1, plug_2", {1: {"topic": "plug_1"}, 2: {"topic": "plug_2"}}),
        (
            "shelly_gen2",
            "shelly-a,shelly-b",
            {1: {"prefix": "shelly-a", "switch": 0}, 2: {"prefix": "shelly-b", "switch": 0}},
        ),
        ("power_allocation_outlet", "", {1: {}, 2: {}}),
    ],
)
async def test_mqtt_pdu_is_added(
    hass: HomeAssistant, profile: str, devices: str, outlets: dict[int, Any]
) -> None:
    entry = entities_site(mqtt=broker_input())
    entry.add_to_hass(hass)
    result = await add_pdu(hass, entry, "mqtt", outlets=2)
    assert result["step_id"] == "pdu_mqtt"
    assert result["description_placeholders"] == {"error": "", "outlets": "2"}
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"profile": profile, "devices": devices}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options["pdus"] == [
        {
            **PDU_A,
            "outlets": 2,
            "source": {"kind": "mqtt", "profile": profile, "outlets": outlets},
        }
    ]


async def test_mqtt_pdu_needs_one_device_per_outlet(hass: HomeAssistant) -> None:
    entry = entities_site(mqtt=broker_input())
    entry.add_to_hass(hass)
    result = await add_pdu(hass, entry, "mqtt", outlets=2)
    for devices in ("plug_1", "plug_1, plug_2, plug_3", " , "):
        result = await hass.config_entries.options.async_configure(
            result["flow_id"], {"profile": "tasmota", "devices": devices}
        )
        assert result["type"] is FlowResultType.FORM
        assert result["errors"] == {"devices": "device_count"}


async def test_mqtt_pdu_on_a_site_without_a_broker(hass: HomeAssistant) -> None:
    entry = entities_site()
    entry.add_to_hass(hass)
    result = await add_pdu(hass, entry, "mqtt", outlets=1)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"profile": "tasmota", "devices": "plug_1"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_topology"}
    assert result["description_placeholders"]["error"] == (
        "mqtt: a source or an agent uses MQTT, but no broker is configured"
    )


async def test_entities_pdu_is_added(hass: HomeAssistant) -> None:
    entry = entities_site()
    entry.add_to_hass(hass)
    result = await add_pdu(hass, entry, "entities", outlets=3)
    assert result["step_id"] == "pdu_entities"
    assert result["description_placeholders"] == {"error": "", "outlets": "3"}
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            "switches": ["switch.plug_1", "light.lamp"],
            "power_sensors": ["sensor.plug_1_power", "sensor.lamp_power", "sensor.fan_power"],
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options["pdus"][0]["source"] == {
        "kind": "entities",
        "outlets": {
            1: {"switch": "switch.plug_1", "power": "sensor.plug_1_power"},
            2: {"switch": "light.lamp", "power": "sensor.lamp_power"},
            3: {"power": "sensor.fan_power"},
        },
    }


@pytest.mark.parametrize(
    "typed",
    [
        {},
        {"switches": [], "power_sensors": []},
        {"switches": ["switch.a", "switch.b", "switch.c"]},
        {"power_sensors": ["sensor.a", "sensor.b", "sensor.c"]},
    ],
)
async def test_entities_pdu_needs_entities_within_its_outlets(
    hass: HomeAssistant, typed: dict[str, list[str]]
) -> None:
    entry = entities_site()
    entry.add_to_hass(hass)
    result = await add_pdu(hass, entry, "entities", outlets=2)
    result = await hass.config_entries.options.async_configure(result["flow_id"], typed)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "entity_count"}


async def test_entities_pdu_whose_id_the_topology_refuses(hass: HomeAssistant) -> None:
    entry = entities_site()
    entry.add_to_hass(hass)
    result = await add_pdu(hass, entry, "entities", id="-pdu")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"switches": ["switch.plug_1"]}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_topology"}
    assert "(-pdu).id" in result["description_placeholders"]["error"]


# --- options: services, removal, import ------------------------------------------------------


async def test_a_service_needs_a_pdu(hass: HomeAssistant) -> None:
    entry = entities_site()
    entry.add_to_hass(hass)
    result = await open_options(hass, entry, "add_service")
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "no_pdus"


async def test_services_are_added(hass: HomeAssistant) -> None:
    entry = entities_site(pdus=[entities_pdu(PDU_A)])
    entry.add_to_hass(hass)

    result = await open_options(hass, entry, "add_service")
    assert result["step_id"] == "add_service"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"id": "network", "priority": "critical", "outlets": ["pdu-a/1"]}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options["services"] == [
        {
            "id": "network",
            "priority": "critical",
            "outlets": ["pdu-a/1"],
            "depends_on": [],
            "shutdown_s": 60,
            "startup_s": 60,
            "idle_w": 0,
            "agent": False,
        }
    ]

    result = await open_options(hass, entry, "add_service")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            "id": "nas",
            "priority": "high",
            "outlets": ["pdu-a/2", "pdu-a/3"],
            "depends_on": ["network"],
            "shutdown_s": 90,
            "startup_s": 120,
            "idle_w": 6,
            "throttle_min_w": 40,
            "agent": False,
            "stop_action": "script.stop_nas",
            "throttle_action": "script.throttle_nas",
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options["services"][1] == {
        "id": "nas",
        "priority": "high",
        "outlets": ["pdu-a/2", "pdu-a/3"],
        "depends_on": ["network"],
        "shutdown_s": 90,
        "startup_s": 120,
        "idle_w": 6,
        "throttle": {"min_w": 40},
        "agent": False,
        "stop_action": {"action": "script.stop_nas", "data": {}},
        "throttle_action": {"action": "script.throttle_nas", "data": {}},
    }


async def test_a_service_the_topology_refuses(hass: HomeAssistant) -> None:
    entry = entities_site(pdus=[entities_pdu(PDU_A)], services=[NETWORK])
    entry.add_to_hass(hass)
    result = await open_options(hass, entry, "add_service")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"id": "network", "priority": "low", "outlets": ["pdu-a/4"]}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_topology"}
    assert result["description_placeholders"] == {"error": "duplicate service id 'network'"}
    assert entry.options["services"] == [NETWORK]


async def test_nothing_to_remove(hass: HomeAssistant) -> None:
    entry = entities_site()
    entry.add_to_hass(hass)
    result = await open_options(hass, entry, "remove")
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "nothing_to_remove"


async def test_remove_keeps_the_site_valid(hass: HomeAssistant) -> None:
    pdu_b = entities_pdu({**PDU_A, "id": "pdu-b"})
    entry = entities_site(pdus=[entities_pdu(PDU_A), pdu_b], services=[NETWORK])
    entry.add_to_hass(hass)

    result = await open_options(hass, entry, "remove")
    assert result["step_id"] == "remove"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"items": ["pdu:pdu-a"]}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_topology"}
    assert result["description_placeholders"] == {
        "error": "service 'network': unknown outlet 'pdu-a/1'"
    }
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"items": ["pdu:pdu-b", "service:network"]}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert [p["id"] for p in entry.options["pdus"]] == ["pdu-a"]
    assert entry.options["services"] == []


async def test_import_replaces_pdus_and_services(hass: HomeAssistant) -> None:
    entry = entities_site(pdus=[entities_pdu(PDU_A)], services=[NETWORK])
    entry.add_to_hass(hass)
    result = await open_options(hass, entry, "import_topology")
    assert result["step_id"] == "import_topology"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            "topology": """
pdus:
  - id: plugs
    ups: ups
    limit_w: 800
    outlets: 2
    source:
      kind: entities
      outlets:
        1: {switch: switch.nas}
        2: {switch: switch.router}
services:
  - {id: router, priority: critical, outlets: [plugs/2]}
  - {id: nas, priority: medium, outlets: [plugs/1], depends_on: [router]}
"""
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert [p["id"] for p in entry.options["pdus"]] == ["plugs"]
    assert [(s["id"], s["depends_on"]) for s in entry.options["services"]] == [
        ("router", []),
        ("nas", ["router"]),
    ]

    # Only PDUs: every service goes with the old ones.
    result = await open_options(hass, entry, "import_topology")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            "topology": "pdus:\n  - {id: p1, ups: ups, limit_w: 500, outlets: 1, "
            "source: {kind: entities, outlets: {1: {switch: switch.x}}}}\n"
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert [p["id"] for p in entry.options["pdus"]] == ["p1"]
    assert entry.options["services"] == []


PLAN_FORM_DEFAULTS = {
    "ride_through_s": RIDE_THROUGH_S,
    "momentary_pct": 70.0,
    "sustained_median_min": 45.0,
}
PLAN_FORM = {"ride_through_s": 600, "momentary_pct": 90, "sustained_median_min": 20}
PLAN_OPTIONS = {"ride_through_s": 600.0, "momentary_ratio": 0.9, "sustained_median_s": 1200.0}


async def test_plan_settings_set_the_ride_through_and_the_outage_prior(
    hass: HomeAssistant,
) -> None:
    entry = entities_site(pdus=[entities_pdu(PDU_A)], services=[NETWORK])
    entry.add_to_hass(hass)
    result = await open_options(hass, entry, "planner")
    assert result["step_id"] == "planner"
    # The form shows the prior the plan uses when nothing is set: the engine's own; and, the
    # site not being loaded, no outage seen.
    assert schema_defaults(result) == PLAN_FORM_DEFAULTS
    assert result["description_placeholders"] == {
        "outages": "0",
        "momentary": "0",
        "sustained_median_min": "-",
    }
    prior = OutagePrior()
    assert (prior.momentary_ratio, prior.sustained_median_s) == (0.7, 2700.0)
    # The selectors refuse what the planner would not take.
    for field, value in (
        ("ride_through_s", 7200),
        ("momentary_pct", 101),
        ("sustained_median_min", 4),
    ):
        with pytest.raises(InvalidData):
            await hass.config_entries.options.async_configure(
                result["flow_id"], {**PLAN_FORM, field: value}
            )
    result = await hass.config_entries.options.async_configure(result["flow_id"], PLAN_FORM)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options["planner"] == PLAN_OPTIONS
    assert [p["id"] for p in entry.options["pdus"]] == ["pdu-a"]
    assert entry.options["services"] == [NETWORK]
    topology = parse_topology(entry_topology(entry))
    assert topology.ride_through_s == 600.0
    assert topology.outage_prior.momentary_ratio == 0.9
    assert topology.outage_prior.sustained_median_s == 1200.0
    assert topology.outage_prior.sustained_sigma == prior.sustained_sigma

    # Shown again as set; what else is changed later keeps it.
    result = await open_options(hass, entry, "planner")
    assert schema_defaults(result) == {k: float(v) for k, v in PLAN_FORM.items()}
    result = await open_options(hass, entry, "remove")
    result = await hass.config_entries.options.async_configure(result["flow_id"], {"items": []})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options["planner"] == PLAN_OPTIONS


async def test_plan_settings_keep_a_spread_set_in_yaml(hass: HomeAssistant) -> None:
    """The form has no field for the prior's spread; saving it keeps the one imported."""
    entry = entities_site(
        pdus=[entities_pdu(PDU_A)],
        services=[NETWORK],
        planner={"sustained_sigma": 1.8},
    )
    entry.add_to_hass(hass)
    result = await open_options(hass, entry, "planner")
    assert schema_defaults(result) == PLAN_FORM_DEFAULTS
    result = await hass.config_entries.options.async_configure(result["flow_id"], PLAN_FORM)
    assert entry.options["planner"] == {**PLAN_OPTIONS, "sustained_sigma": 1.8}
    assert parse_topology(entry_topology(entry)).outage_prior.sustained_sigma == 1.8


async def test_import_sets_the_planner_or_keeps_it(hass: HomeAssistant) -> None:
    entry = entities_site(pdus=[entities_pdu(PDU_A)], services=[NETWORK])
    entry.add_to_hass(hass)
    pdus = yaml.safe_dump({"pdus": [entities_pdu(PDU_A)], "services": [NETWORK]})
    result = await open_options(hass, entry, "import_topology")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"topology": pdus + "planner: {ride_through_s: 0}\n"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options["planner"] == {"ride_through_s": 0.0}
    result = await open_options(hass, entry, "import_topology")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"topology": pdus}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options["planner"] == {"ride_through_s": 0.0}


CYCLE_YAML = """
pdus:
  - id: pdu-c
    ups: ups
    limit_w: 900
    outlets: 3
    source: {kind: entities, outlets: {1: {switch: switch.c1}}}
services:
  - {id: web, priority: high, outlets: [pdu-c/1], depends_on: [app]}
  - {id: app, priority: high, outlets: [pdu-c/2], depends_on: [db]}
  - {id: db, priority: critical, outlets: [pdu-c/3], depends_on: [web]}
"""


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("pdus: [", "invalid_topology", "not valid YAML: "),
        (
            "- a list",
            "invalid_topology",
            "a topology must be a mapping with ups, pdus and services",
        ),
        ("pdus: []\nmqtt: {host: broker}\n", "only_pdus_and_services", ""),
        (CYCLE_YAML, "invalid_topology", "dependency cycle: web -> app -> db -> web"),
        (
            "planner: {ride_through_s: 5000}\n",
            "invalid_topology",
            "planner.ride_through_s: value must be at most 3600.0",
        ),
        (
            "planner: {sustained_median_s: 60}\n",
            "invalid_topology",
            "planner.sustained_median_s: value must be at least 300.0",
        ),
        (
            "planner: {momentary_ratio: 1.5}\n",
            "invalid_topology",
            "planner.momentary_ratio: value must be at most 1",
        ),
        (
            "planner: {sustained_sigma: 0}\n",
            "invalid_topology",
            "planner.sustained_sigma: value must be at least 0.2",
        ),
    ],
)
async def test_import_that_is_refused(
    hass: HomeAssistant, text: str, error: str, message: str
) -> None:
    entry = entities_site(pdus=[entities_pdu(PDU_A)], services=[NETWORK])
    entry.add_to_hass(hass)
    result = await open_options(hass, entry, "import_topology")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"topology": text}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": error}
    shown = result["description_placeholders"]["error"]
    # A YAML error goes on with the parser's own account of where it failed.
    assert shown.startswith(message) if message.endswith(": ") else shown == message
    assert [p["id"] for p in entry.options["pdus"]] == ["pdu-a"]
    assert entry.options["services"] == [NETWORK]


async def test_imported_pdus_are_checked_as_setup_checks_them(hass: HomeAssistant) -> None:
    """A Tasmota plug without its topic passes the document's schema; setup could not bind it,
    and a site stored that way would fail setup: the import refuses it and stores nothing."""
    entry = entities_site(mqtt=broker_input())
    entry.add_to_hass(hass)
    result = await open_options(hass, entry, "import_topology")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            "topology": "pdus:\n  - {id: p1, ups: ups, limit_w: 500, outlets: 1, "
            "source: {kind: mqtt, profile: tasmota, outlets: {1: {}}}}\n"
        },
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_topology"}
    assert "topic" in result["description_placeholders"]["error"]
    assert entry.options.get("pdus", []) == []
