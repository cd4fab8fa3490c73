"""What setting a site up checks of its document, for whatever is about to store one.

The schema (`parse_topology`) is not all of it: building the drivers binds every MQTT source to
its profile, which refuses a source without a variable the profile needs (a NUT UPS without its
`prefix`). Setup, the `load_topology` action and the reconfigure flow all check through here, so
that nothing is stored that setup would then refuse.
"""

from __future__ import annotations

from typing import Any

from homeassistant.core import HomeAssistant

from .engine.model import TopologyError
from .sources import SiteDrivers, async_build_drivers
from .topology import SiteTopology, parse_topology


async def async_check_site(hass: HomeAssistant, document: Any) -> tuple[SiteTopology, SiteDrivers]:
    """The site of `document` and its drivers, built but not started (nothing to stop if they
    are dropped). Raises `TopologyError` naming the first problem."""
    topology = parse_topology(document)
    try:
        drivers = await async_build_drivers(hass, topology)
    except ValueError as error:  # a device binding that cannot work
        raise TopologyError(str(error)) from error
    return topology, drivers
