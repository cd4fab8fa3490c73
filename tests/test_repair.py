"""A site whose stored topology setup refuses: a clear repair issue, and two ways to repair it
(the `load_topology` action and the reconfigure flow), neither of which stores a site that setup
would refuse again."""

from __future__ import annotations

from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.power_allocation.const import CONF_TOPOLOGY, DOMAIN, ISSUE_TOPOLOGY
from tests.fixtures.modbus_site import HOST, ModbusSite
from tests.fixtures.mqtt_broker import free_port
from tests.site_entry import small_site_entry

# A NUT UPS without the prefix its topics hang off: the schema took it, setup refuses it.
NUT_WITHOUT_PREFIX = {"kind": "mqtt", "profile": "nut", "variables": {}}
PREFIX_MISSING = "nut ups1: variable 'prefix' is required"


def _broken_entry(modbus_site: ModbusSite, **ups_source: Any) -> MockConfigEntry:
    """The small site, its UPS's source changed to `ups_source`, stored as is."""
    entry = small_site_entry(modbus_site)
    topology = dict(entry.data[CONF_TOPOLOGY])
    topology["ups"] = [{**topology["ups"][0], "source": ups_source}]
    topology["mqtt"] = {"host": HOST, "port": free_port(), "base_topic": "rack", "tls": False}
    return MockConfigEntry(
        domain=DOMAIN,
        title=entry.title,
        data={**entry.data, CONF_TOPOLOGY: topology},
        options=dict(entry.options),
    )


async def _set_up_and_fail(hass: HomeAssistant, entry: MockConfigEntry, problem: str) -> None:
    """Setup refuses the entry, with a repair issue that says why."""
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert entry.reason is not None
    assert problem in entry.reason
    issue = ir.async_get(hass).async_get_issue(DOMAIN, f"{ISSUE_TOPOLOGY}_{entry.entry_id}")
    assert issue is not None
    assert issue.translation_key == ISSUE_TOPOLOGY
    assert issue.translation_placeholders is not None
    assert problem in issue.translation_placeholders["error"]


async def _assert_repaired(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert ir.async_get(hass).async_get_issue(DOMAIN, f"{ISSUE_TOPOLOGY}_{entry.entry_id}") is None
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def test_load_topology_repairs_a_site_that_failed_to_set_up(
    hass: HomeAssistant, modbus_site: ModbusSite, small_site_clock: None
) -> None:
    entry = _broken_entry(modbus_site, **NUT_WITHOUT_PREFIX)
    await _set_up_and_fail(hass, entry, PREFIX_MISSING)
    # Before the fix the action asked for a loaded site: a broken one could not be repaired.
    good_ups = small_site_entry(modbus_site).data[CONF_TOPOLOGY]["ups"]
    response = await hass.services.async_call(
        DOMAIN,
        "load_topology",
        {"config_entry_id": entry.entry_id, "topology": yaml.safe_dump({"ups": good_ups})},
        blocking=True,
        return_response=True,
    )
    assert response == {"ups": 1, "pdus": 0, "services": 0}
    assert entry.data[CONF_TOPOLOGY]["ups"][0]["source"]["kind"] == "modbus"
    await _assert_repaired(hass, entry)


async def test_load_topology_refuses_to_store_what_setup_would_refuse_on_a_broken_site(
    hass: HomeAssistant, modbus_site: ModbusSite, small_site_clock: None
) -> None:
    entry = _broken_entry(modbus_site, **NUT_WITHOUT_PREFIX)
    await _set_up_and_fail(hass, entry, PREFIX_MISSING)
    data = dict(entry.data)
    with pytest.raises(ServiceValidationError, match="variable .prefix. is required"):
        await hass.services.async_call(
            DOMAIN,
            "load_topology",
            {"config_entry_id": entry.entry_id, "topology": "services: []"},
            blocking=True,
        )
    await hass.async_block_till_done()
    assert dict(entry.data) == data
    assert entry.state is ConfigEntryState.SETUP_ERROR


async def test_reconfigure_repairs_a_site_that_failed_to_set_up(
    hass: HomeAssistant, modbus_site: ModbusSite, small_site_clock: None
) -> None:
    broken = {**small_site_entry(modbus_site).data[CONF_TOPOLOGY]["ups"][0]["source"]}
    broken["unit_id"] = 300
    entry = _broken_entry(modbus_site, **broken)
    await _set_up_and_fail(hass, entry, "unit_id")
    result = await entry.start_reconfigure_flow(hass)
    assert result["step_id"] == "reconfigure"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {
            "host": HOST,
            "port": modbus_site.server.ports["ups1"],
            "unit_id": 1,
            "profile": "apc_smart_ups",
        },
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await _assert_repaired(hass, entry)


async def test_reconfigure_refuses_to_store_what_setup_would_refuse(
    hass: HomeAssistant, modbus_site: ModbusSite, small_site_clock: None
) -> None:
    entry = _broken_entry(modbus_site, **NUT_WITHOUT_PREFIX)
    await _set_up_and_fail(hass, entry, PREFIX_MISSING)
    data = dict(entry.data)
    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {"host": HOST, "port": free_port(), "tls": False, "base_topic": "rack"},
    )
    # Before, it tested the broker and stored the site, which setup refused again.
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_topology"}
    assert result["description_placeholders"] is not None
    assert PREFIX_MISSING in result["description_placeholders"]["error"]
    assert dict(entry.data) == data
