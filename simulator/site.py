"""The simulated site: the engine's site physics (`engine.plant`), served here under its old name.

The Modbus server, the MQTT bridge, the CLI and the benchmarks import the site from here; the
physics lives once, in the engine, because the engine's outage simulation runs it too.
"""

from custom_components.power_allocation.engine.plant import (
    LOW_BATTERY_RUNTIME_S,
    MAX_REPORTED_RUNTIME_S,
    NOMINAL_OUTPUT_VOLTAGE_V,
    RECHARGE_FULL_S,
    UPS_GROUP_ACTIONS,
    UPS_GROUP_MIN_OFF_S,
    UPS_GROUP_OFF_DELAY_S,
    UPS_GROUPS,
    OutletState,
    ServiceMode,
    ServiceState,
    SimulatedSite,
    SiteSnapshot,
    UpsState,
)

__all__ = [
    "LOW_BATTERY_RUNTIME_S",
    "MAX_REPORTED_RUNTIME_S",
    "NOMINAL_OUTPUT_VOLTAGE_V",
    "RECHARGE_FULL_S",
    "UPS_GROUPS",
    "UPS_GROUP_ACTIONS",
    "UPS_GROUP_MIN_OFF_S",
    "UPS_GROUP_OFF_DELAY_S",
    "OutletState",
    "ServiceMode",
    "ServiceState",
    "SimulatedSite",
    "SiteSnapshot",
    "UpsState",
]
