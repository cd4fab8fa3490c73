"""Config flow: a config entry is one site (its UPS units, PDUs and services)."""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from homeassistant.config_entries import ConfigFlow, ConfigFlowResult
from homeassistant.util import slugify

from .const import CONF_SITE_NAME, DOMAIN


class PowerAllocationConfigFlow(ConfigFlow, domain=DOMAIN):
    """Creates a site."""

    VERSION = 1

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the site's name; one entry per site."""
        errors: dict[str, str] = {}
        if user_input is not None:
            name = user_input[CONF_SITE_NAME].strip()
            if not any(ch.isalnum() for ch in name):
                errors[CONF_SITE_NAME] = "invalid_name"
            else:
                await self.async_set_unique_id(slugify(name))
                self._abort_if_unique_id_configured()
                return self.async_create_entry(title=name, data={CONF_SITE_NAME: name})
        return self.async_show_form(
            step_id="user",
            data_schema=vol.Schema({vol.Required(CONF_SITE_NAME): str}),
            errors=errors,
        )
