"""The physical site a scenario describes: loads, outlets that really switch, UPS batteries.

The one copy of the site physics: the simulator's servers and the engine's outage simulation
both drive it.

`SimulatedSite` holds no clock: simulated time moves only through `advance(dt_s)`, so the same
scenario and the same calls give the same site, and servers or runners decide how fast it goes.

Public API (used by the simulation, the Modbus server, the MQTT bridge, the CLI and the
benchmarks)::

    site = SimulatedSite(scenario, start_s=0.0, follow_timeline=True)
    site.advance(dt_s)                   # drain/recharge batteries, then move time on by dt_s
    site.snapshot() -> SiteSnapshot      # .time_s, .mains_on, .ups[id] -> UpsState,
                                         # .outlets["pdu/n"] -> OutletState,
                                         # .services[id] -> ServiceState
    site.set_outlet(outlet_id, on)       # a PDU relay; off means 0 W on that outlet
    site.request_shutdown(service_id)    # graceful: demand for shutdown_s, then idle_w
    site.request_start(service_id)       # a stopped service boots: startup_s, then running
    site.throttle(service_id, cap_w)     # draw = min(demand, cap_w); None releases the cap
    site.set_mains(on)                   # start or end an outage now
    site.step_load(service_id, extra_w, duration_s)  # extra demand from now on, for a while
    site.ups_group(ups_id, group, action, use_delay=False)  # APC outlet groups: on/off/shutdown

Unknown ids raise `KeyError`; commands the physics cannot honour (starting an unpowered service)
are no-ops, as on real hardware.

Physics, in the order `advance` applies it:
- A service's demand comes from the scenario (load model plus timeline load steps) plus the steps
  added with `step_load`. Running or starting it draws min(demand, cap); stopping, it keeps
  drawing that until `shutdown_s` has passed, then falls to `idle_w`; unpowered it draws 0. Its draw
  is shared equally by its powered outlets (a dual-PSU server balances its supplies).
- A service loses power when none of its outlets is powered; it boots (`startup_s`) as soon as one
  is powered again, like a server set to power on after AC loss. Losing power while not stopped
  counts as an unclean power loss.
- An outlet is powered when it is switched on, its UPS is alive, and the UPS's `main` group and the
  switched outlet group feeding its PDU are on. Switched outlet groups `sog0..sog2` feed the UPS's
  first three PDUs in site order; further PDUs hang off `main` only.
- Following the timeline, mains goes off and on at each of its outages (the main one and every
  `mains_flicker`); `set_mains` overrides it until the next change.
- On mains the battery recharges linearly to full in `RECHARGE_FULL_S`; on battery the UPS output
  (the sum of its outlets' draws) drains it through `engine.battery.BatteryModel`. At 0 % the UPS
  dies: every outlet it feeds loses power until mains returns.
- `low_battery` is the APC/NUT signal: on battery with runtime at most `LOW_BATTERY_RUNTIME_S`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from .battery import BatteryModel
from .model import Service
from .scenario import LoadStep, Scenario

# APC's default low-battery warning: two minutes of runtime left.
LOW_BATTERY_RUNTIME_S = 120.0
# Small lead-acid UPS units quote 3 h to recharge; linear is close enough for a simulation.
RECHARGE_FULL_S = 3 * 3600.0
# Runtime at zero load is unbounded; report what a network card's counters would show at most.
MAX_REPORTED_RUNTIME_S = 86400.0
NOMINAL_OUTPUT_VOLTAGE_V = 230.0
# APC's default outlet-group power-off delay, used when a command asks for the delay.
UPS_GROUP_OFF_DELAY_S = 90.0
# A group shut down "and return" stays off at least this long before mains can bring it back.
UPS_GROUP_MIN_OFF_S = 10.0

UPS_GROUPS = ("main", "sog0", "sog1", "sog2")
UPS_GROUP_ACTIONS = ("on", "off", "shutdown")


class ServiceMode(StrEnum):
    """Where a simulated host is in its life."""

    RUNNING = "running"
    STARTING = "starting"
    STOPPING = "stopping"
    STOPPED = "stopped"  # OS down, PSU on: draws idle_w
    UNPOWERED = "unpowered"


@dataclass(frozen=True, slots=True)
class OutletState:
    """One outlet: its relay, whether power reaches it, and what flows through it."""

    outlet_id: str
    is_on: bool
    powered: bool
    power_w: float


@dataclass(frozen=True, slots=True)
class UpsState:
    """One UPS as its network card would report it."""

    ups_id: str
    alive: bool  # output present (False once the battery has run out)
    on_battery: bool
    online: bool  # on mains with output present
    low_battery: bool
    runtime_s: float
    soc_pct: float
    output_w: float
    output_voltage_v: float
    groups_on: dict[str, bool]


@dataclass(frozen=True, slots=True)
class ServiceState:
    """One simulated service: its mode, what it would draw, what it draws, its cap."""

    service_id: str
    mode: ServiceMode
    demand_w: float
    power_w: float
    cap_w: float | None


@dataclass(frozen=True, slots=True)
class SiteSnapshot:
    """Everything observable at `time_s`."""

    time_s: float
    mains_on: bool
    ups: dict[str, UpsState]
    outlets: dict[str, OutletState]
    services: dict[str, ServiceState]


@dataclass(frozen=True, slots=True)
class _GroupAction:
    at_s: float
    ups_id: str
    group: str
    action: str


class SimulatedSite:
    """A site in simulated time; see the module docstring for the API and the physics."""

    def __init__(
        self, scenario: Scenario, start_s: float = 0.0, follow_timeline: bool = True
    ) -> None:
        self.scenario = scenario
        self.follow_timeline = follow_timeline
        site = scenario.site
        self.time_s = start_s
        self.mains_on = scenario.timeline.mains_on_at(start_s) if follow_timeline else True
        self._batteries = {u.id: BatteryModel.from_ups(u) for u in site.ups}
        self._soc_ratio = {u.id: scenario.soc_start_pct[u.id] / 100.0 for u in site.ups}
        self._ups_alive = dict.fromkeys(self._batteries, True)
        self._group_on = {(u, g): True for u in self._batteries for g in UPS_GROUPS}
        self._group_return_at_s: dict[tuple[str, str], float] = {}
        self._pending_group_actions: list[_GroupAction] = []
        self._feeding_group = {
            pdu.id: UPS_GROUPS[1 + index] if index < len(UPS_GROUPS) - 1 else None
            for ups in site.ups
            for index, pdu in enumerate(p for p in site.pdus if p.ups == ups.id)
        }
        # Each outlet's UPS and the switched outlet group (if any) its PDU hangs off.
        self._feed = {
            outlet.id: (pdu.ups, self._feeding_group[pdu.id])
            for pdu in site.pdus
            for outlet in pdu.outlets
        }
        self._outlet_on = dict.fromkeys(site.outlet_by_id, True)
        self._mode = dict.fromkeys(site.service_by_id, ServiceMode.RUNNING)
        self._mode_until_s: dict[str, float] = {}
        self._cap_w: dict[str, float | None] = dict.fromkeys(site.service_by_id)
        self._load_steps: list[LoadStep] = []
        self.unclean_power_losses = dict.fromkeys(site.service_by_id, 0)

    # --- commands -------------------------------------------------------------------------

    def set_outlet(self, outlet_id: str, on: bool) -> None:
        """Switch one PDU outlet."""
        self._outlet_on[_known(self._outlet_on, outlet_id, "outlet")] = on
        self._settle()

    def request_shutdown(self, service_id: str) -> None:
        """Ask a running or booting service to shut its OS down gracefully."""
        if self._mode[_known(self._mode, service_id, "service")] in (
            ServiceMode.RUNNING,
            ServiceMode.STARTING,
        ):
            self._enter(service_id, ServiceMode.STOPPING, self._service(service_id).shutdown_s)

    def request_start(self, service_id: str) -> None:
        """Boot a stopped service whose outlets are powered (wake-on-LAN, IPMI power on)."""
        if self._mode[_known(self._mode, service_id, "service")] is ServiceMode.STOPPED:
            self._enter(service_id, ServiceMode.STARTING, self._service(service_id).startup_s)

    def throttle(self, service_id: str, cap_w: float | None) -> None:
        """Cap a service's draw (None releases the cap)."""
        if cap_w is not None and (not math.isfinite(cap_w) or cap_w < 0):
            raise ValueError(f"cap_w must be a finite number of watts >= 0, got {cap_w!r}")
        self._cap_w[_known(self._cap_w, service_id, "service")] = cap_w

    def set_mains(self, on: bool) -> None:
        """Start (False) or end (True) an outage now."""
        self.mains_on = on
        self._settle()

    def step_load(self, service_id: str, extra_w: float, duration_s: float) -> None:
        """Add `extra_w` to a service's demand from now for `duration_s`."""
        _known(self._mode, service_id, "service")
        self._load_steps.append(LoadStep(self.time_s, service_id, extra_w, duration_s))

    def ups_group(self, ups_id: str, group: str, action: str, use_delay: bool = False) -> None:
        """An APC outlet-group command: `on`, `off`, or `shutdown` (off, back on with mains)."""
        _known(self._batteries, ups_id, "UPS")
        if group not in UPS_GROUPS or action not in UPS_GROUP_ACTIONS:
            raise KeyError(f"unknown outlet group {group!r} or action {action!r}")
        at_s = self.time_s + (UPS_GROUP_OFF_DELAY_S if use_delay and action != "on" else 0.0)
        self._pending_group_actions.append(_GroupAction(at_s, ups_id, group, action))
        self._settle()

    # --- time -----------------------------------------------------------------------------

    def advance(self, dt_s: float) -> None:
        """Run the physics for `dt_s` seconds of simulated time."""
        if dt_s < 0:
            raise ValueError("time only moves forward")
        demand_w = {service_id: self.demand_w(service_id) for service_id in self._mode}
        output_w = self._ups_output_w(self._outlet_power_w(self._service_power_w(demand_w)))
        for ups_id, battery in self._batteries.items():
            if self.mains_on:
                self._soc_ratio[ups_id] = min(1.0, self._soc_ratio[ups_id] + dt_s / RECHARGE_FULL_S)
            elif self._ups_alive[ups_id]:
                soc = battery.soc_after(self._soc_ratio[ups_id], output_w[ups_id], dt_s)
                self._soc_ratio[ups_id] = soc
                if soc <= 0:
                    self._ups_alive[ups_id] = False
        before_s, self.time_s = self.time_s, self.time_s + dt_s
        if self.follow_timeline:
            for start_s, end_s in self.scenario.timeline.outages_s:
                if before_s < start_s <= self.time_s:
                    self.mains_on = False
                if before_s < end_s <= self.time_s:
                    self.mains_on = True
        self._load_steps = [s for s in self._load_steps if s.at_s + s.duration_s > self.time_s]
        self._settle()

    # --- observation ----------------------------------------------------------------------

    def demand_w(self, service_id: str) -> float:
        """What a service would draw now, running and uncapped."""
        extra_w = sum(s.extra_at(self.time_s) for s in self._load_steps if s.service == service_id)
        return max(0.0, self.scenario.demand_w(service_id, self.time_s) + extra_w)

    def snapshot(self) -> SiteSnapshot:
        """Every outlet, UPS and service as they are now."""
        demand_w = {service_id: self.demand_w(service_id) for service_id in self._mode}
        service_power_w = self._service_power_w(demand_w)
        outlet_power_w = self._outlet_power_w(service_power_w)
        output_w = self._ups_output_w(outlet_power_w)
        ups = {}
        for ups_id, battery in self._batteries.items():
            alive = self._ups_alive[ups_id]
            soc = self._soc_ratio[ups_id]
            runtime_s = (
                min(MAX_REPORTED_RUNTIME_S, battery.runtime_s(output_w[ups_id], soc))
                if soc > 0
                else 0.0
            )
            on_battery = alive and not self.mains_on
            ups[ups_id] = UpsState(
                ups_id=ups_id,
                alive=alive,
                on_battery=on_battery,
                online=alive and self.mains_on,
                low_battery=(on_battery and runtime_s <= LOW_BATTERY_RUNTIME_S)
                or (not alive and not self.mains_on),
                runtime_s=runtime_s,
                soc_pct=100.0 * soc,
                output_w=output_w[ups_id],
                output_voltage_v=NOMINAL_OUTPUT_VOLTAGE_V if alive else 0.0,
                groups_on={g: self._group_on[ups_id, g] for g in UPS_GROUPS},
            )
        outlets = {
            outlet_id: OutletState(
                outlet_id, on, self._powered(outlet_id), outlet_power_w[outlet_id]
            )
            for outlet_id, on in self._outlet_on.items()
        }
        services = {
            service_id: ServiceState(
                service_id=service_id,
                mode=mode,
                demand_w=demand_w[service_id],
                power_w=service_power_w[service_id],
                cap_w=self._cap_w[service_id],
            )
            for service_id, mode in self._mode.items()
        }
        return SiteSnapshot(self.time_s, self.mains_on, ups, outlets, services)

    # --- internals ------------------------------------------------------------------------

    def _service(self, service_id: str) -> Service:
        return self.scenario.site.service_by_id[service_id]

    def _enter(self, service_id: str, mode: ServiceMode, duration_s: float) -> None:
        self._mode[service_id] = mode
        self._mode_until_s[service_id] = self.time_s + duration_s
        self._settle()

    def _powered(self, outlet_id: str) -> bool:
        ups_id, group = self._feed[outlet_id]
        return (
            self._outlet_on[outlet_id]
            and self._ups_alive[ups_id]
            and self._group_on[ups_id, "main"]
            and (group is None or self._group_on[ups_id, group])
        )

    def _service_power_w(self, demand_w: Mapping[str, float]) -> dict[str, float]:
        power_w = {}
        for service_id, mode in self._mode.items():
            cap_w = self._cap_w[service_id]
            if mode is ServiceMode.UNPOWERED:
                power_w[service_id] = 0.0
            elif mode is ServiceMode.STOPPED:
                power_w[service_id] = float(self._service(service_id).idle_w)
            elif cap_w is None:
                power_w[service_id] = demand_w[service_id]
            else:
                power_w[service_id] = min(demand_w[service_id], cap_w)
        return power_w

    def _outlet_power_w(self, service_power_w: Mapping[str, float]) -> dict[str, float]:
        power_w = dict.fromkeys(self._outlet_on, 0.0)
        for service in self.scenario.site.services:
            powered = [o for o in service.outlets if self._powered(o)]
            if powered:
                share_w = service_power_w[service.id] / len(powered)
                for outlet_id in powered:
                    power_w[outlet_id] = share_w
        return power_w

    def _ups_output_w(self, outlet_power_w: dict[str, float]) -> dict[str, float]:
        output_w = dict.fromkeys(self._batteries, 0.0)
        for outlet_id, watts in outlet_power_w.items():
            output_w[self._feed[outlet_id][0]] += watts
        return output_w

    def _settle(self) -> None:
        """Apply what is due now: group actions, revived UPS units, finished transitions."""
        if self.mains_on:
            for ups_id in self._batteries:
                self._ups_alive[ups_id] = True
            for key, return_at_s in list(self._group_return_at_s.items()):
                if return_at_s <= self.time_s:
                    self._group_on[key] = True
                    del self._group_return_at_s[key]
        due = [a for a in self._pending_group_actions if a.at_s <= self.time_s]
        self._pending_group_actions = [a for a in self._pending_group_actions if a not in due]
        for action in due:
            key = (action.ups_id, action.group)
            self._group_on[key] = action.action == "on"
            self._group_return_at_s.pop(key, None)
            if action.action == "shutdown":
                self._group_return_at_s[key] = self.time_s + UPS_GROUP_MIN_OFF_S
        for service in self.scenario.site.services:
            powered = any(self._powered(o) for o in service.outlets)
            mode = self._mode[service.id]
            if not powered and mode is not ServiceMode.UNPOWERED:
                if mode is not ServiceMode.STOPPED:
                    self.unclean_power_losses[service.id] += 1
                self._mode[service.id] = ServiceMode.UNPOWERED
                self._mode_until_s.pop(service.id, None)
            elif powered and mode is ServiceMode.UNPOWERED:
                self._mode[service.id] = ServiceMode.STARTING
                self._mode_until_s[service.id] = self.time_s + service.startup_s
            until_s = self._mode_until_s.get(service.id)
            if until_s is not None and until_s <= self.time_s:
                del self._mode_until_s[service.id]
                self._mode[service.id] = (
                    ServiceMode.STOPPED
                    if self._mode[service.id] is ServiceMode.STOPPING
                    else ServiceMode.RUNNING
                )


def _known[T](items: Mapping[T, object], key: T, kind: str) -> T:
    if key not in items:
        raise KeyError(f"unknown {kind} {key!r}")
    return key
