"""A repair issue while the site's MQTT broker lets anyone in.

On a broker that takes anonymous clients, anyone on the network can publish a UPS's readings (a
forged "on battery" sheds the site) or a device's acknowledgements. At setup, and each time the
broker connection comes back (not every cycle), the integration connects once more with no
credentials at all: no username, no password, no client certificate, the same CA. Accepted: the
issue is raised. Refused for want of credentials or of a certificate: it is withdrawn. No answer,
or another refusal, says nothing either way and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from .connection import AUTH_FAILURES, TlsHandshakeError, mqtt_connack
from .const import DOMAIN
from .drivers.mqtt_tls import CLIENT_CERT, CLIENT_KEY

if TYPE_CHECKING:
    from homeassistant.config_entries import ConfigEntry

    from .coordinator import PowerAllocationCoordinator

ISSUE_ANONYMOUS_BROKER = "anonymous_broker"
LEARN_MORE_URL = (
    "https://github.com/power-allocation/power_allocation/blob/main/docs/security.md"
    "#the-anonymous-broker-repair"
)
_CREDENTIALS = frozenset({"username", "password", CLIENT_CERT, CLIENT_KEY})


def anonymous_login(broker: Mapping[str, Any]) -> dict[str, Any]:
    """The broker's settings with every credential left out."""
    return {key: value for key, value in broker.items() if key not in _CREDENTIALS}


async def async_check_anonymous_access(
    hass: HomeAssistant, entry: ConfigEntry, broker: Mapping[str, Any]
) -> None:
    """Raise or withdraw the site's anonymous-broker issue, as the broker answers."""
    try:
        code = await hass.async_add_executor_job(mqtt_connack, anonymous_login(broker))
        refused = code in AUTH_FAILURES
    except TlsHandshakeError:
        code, refused = None, True  # it wants a client certificate
    issue_id = f"{ISSUE_ANONYMOUS_BROKER}_{entry.entry_id}"
    if code == 0:
        ir.async_create_issue(
            hass,
            DOMAIN,
            issue_id,
            is_fixable=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key=ISSUE_ANONYMOUS_BROKER,
            translation_placeholders={"site": entry.title},
            learn_more_url=LEARN_MORE_URL,
        )
    elif refused:
        ir.async_delete_issue(hass, DOMAIN, issue_id)


@callback
def async_watch_anonymous_access(
    hass: HomeAssistant,
    entry: ConfigEntry,
    broker: Mapping[str, Any],
    coordinator: PowerAllocationCoordinator,
) -> CALLBACK_TYPE:
    """Check now, then after each cycle that finds the broker has accepted the connection again;
    the returned callback stops watching."""
    connections = coordinator.drivers.broker_connections

    def check() -> None:
        entry.async_create_task(
            hass, async_check_anonymous_access(hass, entry, broker), "anonymous broker check"
        )

    @callback
    def after_cycle() -> None:
        nonlocal connections
        if coordinator.drivers.broker_connections != connections:
            connections = coordinator.drivers.broker_connections
            check()

    check()
    return coordinator.async_add_listener(after_cycle)
