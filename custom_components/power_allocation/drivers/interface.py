"""The one interface between the coordinator and every device driver.

A driver turns a device's protocol into a `TelemetrySnapshot` and carries out `Command`s. It never
raises into its caller for a device fault: the device is marked unavailable in the snapshot, and a
command reports failure in its `CommandResult`. It never sends anything the caller did not ask for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutletReading:
    """One outlet as last read. `power_w`/`is_on` are None when the device does not report them."""

    outlet_id: str  # "<pdu>/<number>"
    available: bool
    power_w: float | None = None
    is_on: bool | None = None


@dataclass(frozen=True, slots=True)
class UpsReading:
    """One UPS as last read; fields the device does not report are None."""

    ups_id: str
    available: bool
    on_battery: bool | None = None
    online: bool | None = None
    low_battery: bool | None = None
    runtime_s: float | None = None
    soc_pct: float | None = None
    output_w: float | None = None
    output_voltage_v: float | None = None
    # The UPS is going down whatever the battery holds (NUT's FSD, APC's ShutdownImminent).
    forced_shutdown: bool | None = None


@dataclass(frozen=True, slots=True)
class TelemetrySnapshot:
    """Everything a driver knows at `monotonic_s` (the caller's clock, passed in)."""

    monotonic_s: float
    ups: dict[str, UpsReading] = field(default_factory=dict)
    outlets: dict[str, OutletReading] = field(default_factory=dict)
    # Draw reported by host agents, keyed by service id (the project's own MQTT schema).
    service_power_w: dict[str, float] = field(default_factory=dict)


class CommandKind(StrEnum):
    """What a command asks for."""

    OUTLET_ON = "outlet_on"
    OUTLET_OFF = "outlet_off"
    UPS_GROUP_ON = "ups_group_on"
    UPS_GROUP_OFF = "ups_group_off"
    UPS_GROUP_SHUTDOWN = "ups_group_shutdown"  # off, then on again when mains returns
    AGENT_THROTTLE = "agent_throttle"
    AGENT_SHUTDOWN = "agent_shutdown"
    AGENT_START = "agent_start"


@dataclass(frozen=True, slots=True)
class Command:
    """One action on one target: an outlet id, `<ups>/<group>` or a service id (host agents)."""

    kind: CommandKind
    target: str
    cap_w: float | None = None  # AGENT_THROTTLE only
    use_delay: bool = False  # UPS outlet-group commands: honour the group's configured delay


@dataclass(frozen=True, slots=True)
class CommandResult:
    """Whether a command was carried out (acknowledged by the device where it can tell)."""

    command: Command
    ok: bool
    error: str | None = None


class Driver(Protocol):
    """What the coordinator needs from every driver."""

    async def start(self) -> None:
        """Connect (in the background: a device that is down is retried, not raised)."""

    async def stop(self) -> None:
        """Disconnect and release every resource."""

    async def read(self, monotonic_s: float) -> TelemetrySnapshot:
        """The latest telemetry; unreachable devices appear with `available=False`."""

    async def execute(self, command: Command) -> CommandResult:
        """Carry out one command; a target this driver was not configured with is refused."""
