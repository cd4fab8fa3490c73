"""Constants of the Predictive Power Allocation integration."""

from typing import Final

DOMAIN: Final = "power_allocation"
CONF_SITE_NAME: Final = "site_name"
