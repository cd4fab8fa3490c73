"""The config flow creates one entry per site, in real Home Assistant."""

from __future__ import annotations

from homeassistant import config_entries
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType

from custom_components.power_allocation.const import CONF_SITE_NAME, DOMAIN


async def test_user_creates_a_site(hass: HomeAssistant) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    assert result["type"] is FlowResultType.FORM
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SITE_NAME: "Rack A"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Rack A"
    assert result["result"].unique_id == "rack_a"


async def test_a_site_is_added_once(hass: HomeAssistant) -> None:
    for expected in (FlowResultType.CREATE_ENTRY, FlowResultType.ABORT):
        result = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": config_entries.SOURCE_USER}
        )
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_SITE_NAME: "Rack A"}
        )
        assert result["type"] is expected
    assert result["reason"] == "already_configured"


async def test_a_name_without_letters_is_refused(hass: HomeAssistant) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SITE_NAME: " -- "}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_SITE_NAME: "invalid_name"}
