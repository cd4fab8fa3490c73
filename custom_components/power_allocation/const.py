"""Constants of the Predictive Power Allocation integration."""

from datetime import timedelta
from typing import Final

DOMAIN: Final = "power_allocation"

CONF_SITE_NAME: Final = "site_name"
CONF_TOPOLOGY: Final = "topology"

UPDATE_INTERVAL: Final = timedelta(seconds=10)
STORAGE_VERSION: Final = 1
# Written at most this often in steady state; at once after a cycle that commanded something, so
# that a restart never forgets what was shed.
STORAGE_SAVE_DELAY_S: Final = 60.0

EVENT_DECISION: Final = f"{DOMAIN}_decision"
EVENT_STATE_CHANGED: Final = f"{DOMAIN}_state_changed"
EVENT_OVERLOAD_PREDICTED: Final = f"{DOMAIN}_overload_predicted"
# What the controller noticed that an operator should know of: a reading it does not believe
# yet, the UPS's low-battery alarm, a service stopped by something else.
EVENT_FAULT: Final = f"{DOMAIN}_fault"

ATTR_SITE: Final = "site"
ATTR_SERVICE: Final = "service"

ISSUE_UNREACHABLE: Final = "device_unreachable"
ISSUE_FOUND_STOPPED: Final = "service_found_stopped"
ISSUE_TOPOLOGY: Final = "broken_topology"
