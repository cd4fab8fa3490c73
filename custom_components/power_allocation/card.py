"""The dashboard card: its JavaScript module served by Home Assistant and loaded on every page.

Served from the integration's own folder (no build step, nothing for a user to copy) and added
with the frontend's extra module URLs, so the card is in the card picker as soon as the
integration is installed. The version in the URL makes browsers fetch the new file after an
upgrade despite the long cache headers.
"""

from __future__ import annotations

from pathlib import Path

from homeassistant.core import HomeAssistant
from homeassistant.loader import async_get_integration

from .const import DOMAIN

CARD_FILE = Path(__file__).parent / "frontend" / "power-allocation-card.js"
CARD_PATH = f"/{DOMAIN}/{CARD_FILE.name}"


async def async_register_card(hass: HomeAssistant) -> None:
    """Serve the card and load it in the frontend; once per Home Assistant start (from
    `async_setup`). Without http (some tests, a headless set-up) there is nothing to serve."""
    if "http" not in hass.config.components:
        return
    from homeassistant.components.http import StaticPathConfig

    await hass.http.async_register_static_paths(
        [StaticPathConfig(CARD_PATH, str(CARD_FILE), cache_headers=True)]
    )
    # http alone serves the file for a resource added by hand; the frontend loads it by itself.
    if "frontend" not in hass.config.components:
        return
    from homeassistant.components.frontend import add_extra_js_url

    integration = await async_get_integration(hass, DOMAIN)
    add_extra_js_url(hass, f"{CARD_PATH}?v={integration.version}")
