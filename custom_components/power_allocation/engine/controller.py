"""The outage controller: a state machine that turns telemetry and the plan into commands.

Each cycle the caller passes what it measured (`Telemetry`, with `now_s`) and the state the last
cycle returned; `step` returns the new state, the commands to carry out, the faults to report
and the plan it acted on.
The state is a plain value (`to_dict` / `from_dict`), so a controller restarted in the middle of an
outage picks up where it was: what it shed stays shed, a shutdown under way goes on.

How it decides, on battery: the planner (`plan_outage`, re-planned every cycle over what still
runs) says when each service would be throttled or shut down and when the final shutdown begins;
what is due now is done. The allocation of this instant (`allocate`) sheds or caps whatever does not
fit under a limit (I2). A service is stopped only once everything that depends on it is down (I1),
its outlets are cut only once its graceful stop's `shutdown_s` has run out (I3),
and a switch that does not happen is retried with backoff and reported (I7). Holds are obeyed (I8).
Once mains has been back for `restore_delay_s`, what was stopped comes back dependencies first,
highest priority first, one start every `restore_stagger_s` (I6).

On mains, what was stopped or capped for a limit (`shed_for_limit_s`) is given back once each node
above it fits with it back, with a margin: the node's draw now plus the service's mean through its
share of the node, plus the root-sum-square of the node's own forecast spread (`node_upper_w` over
the guard's lookahead, above `node_draw_w`) and the service's, within
`(1 - give_back_margin_ratio)` of the limit (I2). The node's own series, not the allocation's
quantile of each service's hour ahead: on mains the guard watches every node each cycle and acts
by its trip curve, so what a start needs is room now and for the next minutes; the hour's peak is
the guard's to meet if it comes. (On battery the allocation keeps every node's quantile of the sum
of the services' forecasts within its limit: the plan covers the rest of the outage, over which
the set of running services changes, and the node's band was learnt with another set running.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .allocator import (
    Allocation,
    Demand,
    HoldConflictError,
    ServiceState,
    allocate,
    hold_conflicts,
    node_loads_w,
    service_node_shares,
)
from .battery import BatteryModel
from .model import Priority, Site
from .outage import ConditionalOutage, OutagePrior
from .overload import GIVE_BACK_MARGIN_RATIO, Returning, node_total_with_w
from .planner import RESERVE_MARGIN_RATIO, RIDE_THROUGH_S, Plan, clean_shutdown_soc, plan_outage

STATE_VERSION = 1
MAX_RIDE_THROUGH_S = 3600.0  # a longer "delay before shedding" is an outage ignored, not ridden
# A restore waits for the charge a clean stop needs, but never for more than a pack holds once
# charged: one too small to stop everything cleanly even when full would otherwise never restore.
RESTORE_CHARGE_CAP_RATIO = 0.95
# Sites as fed with some outlets dead, kept for reuse: each has its own allocation index.
FED_SITES_KEPT = 8


class Mode(StrEnum):
    """Where the site is in an outage's life."""

    NORMAL = "normal"
    ON_BATTERY = "on_battery"  # nothing shed yet
    SHEDDING = "shedding"  # some services throttled or stopped
    CRITICAL_ONLY = "critical_only"  # only critical services (and what they need) still run
    FINAL_SHUTDOWN = "final_shutdown"  # everything still on is being stopped cleanly
    RESTORING = "restoring"  # mains is back: bringing services back


class Phase(StrEnum):
    """Where one service is, as the controller drives it."""

    ON = "on"
    PENDING_STOP = "pending_stop"  # to stop once everything depending on it is down
    STOPPING = "stopping"  # asked to stop; waiting for the agent's word or shutdown_s to pass
    CUTTING = "cutting"  # OS down; its outlets are being switched off
    OFF = "off"
    STARTING = "starting"  # outlets on and asked to boot; running once startup_s has passed


RUNNING_PHASES = frozenset({Phase.ON, Phase.PENDING_STOP})


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """Tunables; the defaults are what an operator would pick for a small rack."""

    # How often the controller is stepped on battery, until it has seen the interval itself: on
    # mains it may be stepped less often (the simulation learns at coarser steps).
    cycle_s: float = 10.0
    restore_delay_s: float = 60.0  # mains stable this long before anything restarts (I6)
    restore_stagger_s: float = 15.0  # between two starts, to bound inrush (I6)
    idle_margin_w: float = 5.0  # a service drawing more than idle_w + this is up ...
    # ... or, when less, this share of what it draws running above idle (a 5-W board is up at
    # 3 W), but never less than a meter's noise.
    idle_margin_ratio: float = 0.5
    idle_margin_min_w: float = 1.0
    min_run_s: float = 600.0  # I5: a restart on battery must leave this much run time
    retry_base_s: float = 5.0  # first retry of a switch that did not happen; doubles each time
    retry_max_s: float = 120.0
    switch_verify_s: float = 5.0  # an outlet not reporting its new state after this has failed
    runtime_confirm_s: float = 60.0  # a UPS reading that disagrees must persist this long
    # A charge reading further than this below what the pack could have lost since the last
    # look (at the UPS's rated load) is implausible until it has persisted `runtime_confirm_s`.
    charge_tolerance_ratio: float = 0.05
    runtime_disagree_ratio: float = 0.5  # ... by more than this share of the charge
    limit_recheck_s: float = 300.0  # a service shed for a limit waits this long to come back
    # On mains, what comes back for a limit leaves this share of each node's limit free.
    give_back_margin_ratio: float = GIVE_BACK_MARGIN_RATIO
    cap_hysteresis_ratio: float = 0.1  # a cap is tightened only by more than this share
    # Margin on the final shutdown's reserve, which is already planned on each service's highest
    # forecast band of the hour (engine/demand.py), not the next step's.
    reserve_margin_ratio: float = RESERVE_MARGIN_RATIO
    # How long a blip is ridden through before anything is stopped (shortened by the planner
    # when the battery cannot afford it); a site's own choice: with 0 the plan is followed at once.
    ride_through_s: float = RIDE_THROUGH_S

    def __post_init__(self) -> None:
        # Written so that NaN fails it too, as infinity does.
        if not 0.0 <= self.ride_through_s <= MAX_RIDE_THROUGH_S:
            raise ValueError(
                f"ride_through_s must be between 0 and {MAX_RIDE_THROUGH_S:g} s, "
                f"not {self.ride_through_s}"
            )


@dataclass(frozen=True, slots=True)
class UpsReading:
    """One UPS as last read; None where the reading is missing."""

    soc_ratio: float | None
    runtime_s: float | None
    output_w: float | None
    on_battery: bool | None = None
    # The UPS's own alarm: NUT's LB or FSD, APC's low-battery bit. Acted on at once (I9).
    low_battery: bool | None = None


@dataclass(frozen=True, slots=True)
class Readings:
    """What a site reported this cycle. Missing readings are None or absent."""

    now_s: float
    mains_on: bool | None
    ups: Mapping[str, UpsReading]
    service_draw_w: Mapping[str, float | None]
    outlet_on: Mapping[str, bool | None]  # the relay state each outlet reports
    outlet_w: Mapping[str, float] = field(default_factory=dict)  # the outlets that report power
    ups_w: Mapping[str, float] = field(default_factory=dict)  # the UPS units that report output
    unmanaged_w: Mapping[str, float] = field(default_factory=dict)
    # Services nobody can ask to stop (no host agent, no stop action): their stop is over when
    # their shutdown_s has run out (I3); a draw still up then is no lost command to retry.
    no_stop_channel: frozenset[str] = frozenset()
    # Services whose stop, sent last cycle, could not be delivered (their host agent or stop
    # action reported an error): asked again at once, with backoff, not only once their
    # shutdown_s has run out and their draw shows the stop never arrived.
    stops_undelivered: frozenset[str] = frozenset()
    # When the readings saying mains is off began, where that is before `now_s` (an outage is
    # believed on its second reading, and began at its first).
    mains_off_since_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Telemetry(Readings):
    """The readings, with what the cycle made of them: the controller decides on this."""

    demand_w: Mapping[str, Demand]  # forecast draw of every service, running uncapped
    # The overload guard's pre-emptive shed (engine/overload.py), when one is under way: what it
    # turns off or caps is shed or capped here, and stays so while the shed holds.
    overload_allocation: Allocation | None = None
    # The nodes that shed is on: nothing is restored onto them until it is released (I5).
    overload_shedding_nodes: frozenset[str] = frozenset()
    # Each limited node's own forecast upper draw over the guard's lookahead, the draw now
    # included, and its draw now; empty when no node was assessed (then the allocation decides
    # a restore).
    node_upper_w: Mapping[str, float] = field(default_factory=dict)
    node_draw_w: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StopService:
    """Ask a service's OS to shut down gracefully."""

    service_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class SwitchOutlets:
    """Switch a service's outlets on or off."""

    service_id: str
    outlet_ids: tuple[str, ...]
    on: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Throttle:
    """Cap a service's draw (None releases the cap)."""

    service_id: str
    cap_w: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class StartService:
    """Power a service's outlets and ask it to boot."""

    service_id: str
    outlet_ids: tuple[str, ...]
    reason: str


Command = StopService | SwitchOutlets | Throttle | StartService


@dataclass(frozen=True, slots=True)
class Fault:
    """Something the caller must report (entity unavailable, repair issue, event)."""

    service_id: str | None
    kind: str  # outlet_stuck, stop_unconfirmed, start_unconfirmed, telemetry_missing, ...
    message: str


@dataclass(frozen=True, slots=True)
class ServiceControl:
    """One service's phase, since when, and the retry state of its switches."""

    phase: Phase = Phase.ON
    since_s: float = 0.0
    cap_w: float | None = None
    shed_in_outage: bool = False
    # When it was shed for a limit, or last found not to fit on a restore (None: neither).
    shed_for_limit_s: float | None = None
    switch_attempts: int = 0
    next_switch_s: float = 0.0
    reason: str = ""  # why it is in this phase


@dataclass(frozen=True, slots=True)
class ControllerState:
    """Everything the controller remembers between cycles; JSON-able through `to_dict`."""

    mode: Mode = Mode.NORMAL
    outage_started_s: float | None = None
    mains_back_s: float | None = None
    last_start_s: float = -math.inf
    soc_ratio: Mapping[str, float] = field(default_factory=dict)  # last estimate per UPS
    soc_at_s: float | None = None  # when the controller last looked
    look_interval_s: float | None = None  # between the two looks before this one
    runtime_disagrees_since_s: Mapping[str, float] = field(default_factory=dict)
    charge_implausible_since_s: Mapping[str, float] = field(default_factory=dict)
    services: Mapping[str, ServiceControl] = field(default_factory=dict)
    held_on: frozenset[str] = frozenset()
    held_off: frozenset[str] = frozenset()
    # Held off because they were found off, not stopped by the controller: released by an
    # administrator, or once they are seen running again.
    found_off: frozenset[str] = frozenset()
    # Services running for the controller whose outlets read off (and draw nothing), since when.
    seen_off_since_s: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy (infinities as None)."""
        return {
            "version": STATE_VERSION,
            "mode": self.mode.value,
            "outage_started_s": self.outage_started_s,
            "mains_back_s": self.mains_back_s,
            "last_start_s": None if math.isinf(self.last_start_s) else self.last_start_s,
            "soc_ratio": dict(self.soc_ratio),
            "soc_at_s": self.soc_at_s,
            "look_interval_s": self.look_interval_s,
            "runtime_disagrees_since_s": dict(self.runtime_disagrees_since_s),
            "charge_implausible_since_s": dict(self.charge_implausible_since_s),
            "services": {sid: _control_dict(control) for sid, control in self.services.items()},
            "held_on": sorted(self.held_on),
            "held_off": sorted(self.held_off),
            "found_off": sorted(self.found_off),
            "seen_off_since_s": dict(self.seen_off_since_s),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ControllerState:
        """Restores `to_dict`'s output."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown controller state version {data.get('version')!r}")
        last_start = data["last_start_s"]
        return cls(
            mode=Mode(data["mode"]),
            outage_started_s=data["outage_started_s"],
            mains_back_s=data["mains_back_s"],
            last_start_s=-math.inf if last_start is None else float(last_start),
            soc_ratio={k: float(v) for k, v in data["soc_ratio"].items()},
            soc_at_s=data["soc_at_s"],
            # Absent from a state saved before it was kept.
            look_interval_s=data.get("look_interval_s"),
            runtime_disagrees_since_s={
                k: float(v) for k, v in data["runtime_disagrees_since_s"].items()
            },
            charge_implausible_since_s={
                k: float(v) for k, v in data.get("charge_implausible_since_s", {}).items()
            },
            services={
                sid: ServiceControl(
                    phase=Phase(c["phase"]),
                    since_s=float(c["since_s"]),
                    cap_w=c["cap_w"],
                    shed_in_outage=bool(c["shed_in_outage"]),
                    shed_for_limit_s=c["shed_for_limit_s"],
                    switch_attempts=int(c["switch_attempts"]),
                    next_switch_s=float(c["next_switch_s"]),
                    reason=str(c["reason"]),
                )
                for sid, c in data["services"].items()
            },
            held_on=frozenset(data["held_on"]),
            held_off=frozenset(data["held_off"]),
            found_off=frozenset(data.get("found_off", ())),
            seen_off_since_s={k: float(v) for k, v in data.get("seen_off_since_s", {}).items()},
        )


def _control_dict(control: ServiceControl) -> dict[str, Any]:
    return {
        "phase": control.phase.value,
        "since_s": control.since_s,
        "cap_w": control.cap_w,
        "shed_in_outage": control.shed_in_outage,
        "shed_for_limit_s": control.shed_for_limit_s,
        "switch_attempts": control.switch_attempts,
        "next_switch_s": control.next_switch_s,
        "reason": control.reason,
    }


@dataclass(frozen=True, slots=True)
class StepResult:
    """One cycle's outcome."""

    state: ControllerState
    commands: tuple[Command, ...]
    faults: tuple[Fault, ...]
    # The plan this cycle acted on; None where it made none (on mains, in the final shutdown,
    # nothing running).
    plan: Plan | None = None


def initial_state(site: Site, soc_ratio: Mapping[str, float] | None = None) -> ControllerState:
    """Everything on, on mains."""
    return ControllerState(
        soc_ratio=dict(soc_ratio or {u.id: 1.0 for u in site.ups}),
        services={s.id: ServiceControl() for s in site.services},
    )


def ended_outage_s(before: ControllerState, after: ControllerState) -> float | None:
    """How long the outage lasted that the step from `before` to `after` ended (None: none did).

    An outage ends when mains has stayed back (its start is forgotten) or when a second one
    begins after mains had stayed back; a flicker within the restore delay ends nothing.
    """
    started_s, back_s = before.outage_started_s, before.mains_back_s
    if started_s is None or back_s is None or after.outage_started_s == started_s:
        return None
    return back_s - started_s


def hold(site: Site, state: ControllerState, service_id: str, on: bool | None) -> ControllerState:
    """Hold a service on or off (I8); None releases it.

    A hold that contradicts the others through a dependency (a service held on that needs one
    held off) raises `HoldConflictError` naming what would have to be both on and off.
    """
    held_on = state.held_on - {service_id}
    held_off = state.held_off - {service_id}
    state = replace(state, found_off=state.found_off - {service_id})
    if on is True:
        held_on |= {service_id}
    elif on is False:
        held_off |= {service_id}
    # A release takes a hold away: it cannot contradict the holds left.
    conflict = frozenset() if on is None else hold_conflicts(site, held_on, held_off)
    if conflict:
        raise HoldConflictError(
            f"holding {service_id} {'on' if on else 'off'} contradicts the holds on "
            f"{', '.join(sorted(conflict))} through their dependencies",
            conflict,
        )
    return replace(state, held_on=held_on, held_off=held_off)


class OutageController:
    """The pure decision function, with what is fixed for a site bound once."""

    def __init__(
        self,
        site: Site,
        batteries: Mapping[str, BatteryModel] | None = None,
        prior: OutagePrior | None = None,
        settings: ControllerSettings | None = None,
    ) -> None:
        self.site = site
        self.batteries = dict(batteries or {u.id: BatteryModel.from_ups(u) for u in site.ups})
        self.prior = prior or OutagePrior()
        self.settings = settings or ControllerSettings()
        self._fed_sites: dict[frozenset[str], Site] = {}

    def fed_site(self, dead_feeds: frozenset[str]) -> Site:
        """The site as fed with `dead_feeds` off (`Site.fed_through`), built once per set."""
        site = self._fed_sites.get(dead_feeds)
        if site is None:
            if len(self._fed_sites) >= FED_SITES_KEPT:
                self._fed_sites.clear()
            site = self._fed_sites[dead_feeds] = self.site.fed_through(dead_feeds)
        return site

    def outage_given(self, elapsed_s: float) -> ConditionalOutage:
        """The outage's remaining duration as this controller believes it (overridable)."""
        return self.prior.given(elapsed_s)

    def plan(
        self,
        soc_ratio: Mapping[str, float],
        demand_w: Mapping[str, Demand],
        outage: ConditionalOutage,
        running: frozenset[str],
        unmanaged_w: Mapping[str, float] | None = None,
        stopping_s: Mapping[str, float] | None = None,
    ) -> Plan:
        """The plan for `running` under `outage`, with this controller's batteries and settings.

        `stopping_s`: what is on its way down, as `plan_outage`'s `stopping`.
        """
        return plan_outage(
            self.site,
            self.batteries,
            soc_ratio,
            demand_w,
            outage,
            running=running,
            stopping=stopping_s,
            unmanaged_w=unmanaged_w,
            restore_delay_s=self.settings.restore_delay_s,
            restore_stagger_s=self.settings.restore_stagger_s,
            reserve_margin_ratio=self.settings.reserve_margin_ratio,
            ride_through_s=self.settings.ride_through_s,
        )

    def step(self, state: ControllerState, telemetry: Telemetry) -> StepResult:
        """One control cycle."""
        cycle = _Cycle(self, state, telemetry)
        cycle.run()
        return StepResult(cycle.finish(), tuple(cycle.commands), tuple(cycle.faults), cycle.plan)


class _Cycle:
    """The working copy of one `step`; nothing here outlives the call."""

    def __init__(
        self, controller: OutageController, state: ControllerState, telemetry: Telemetry
    ) -> None:
        self.controller = controller
        self.site = controller.site
        self.settings = controller.settings
        self.telemetry = telemetry
        self.now_s = telemetry.now_s
        self.state = state
        self.services = {
            s.id: state.services.get(s.id, ServiceControl()) for s in self.site.services
        }
        self.commands: list[Command] = []
        self.faults: list[Fault] = []
        self.plan: Plan | None = None
        # The limits are checked on the feeds that are on: a dual-fed service with an outlet
        # reported off (stuck, or switched off by hand) draws all of it through the others.
        self.fed_site = controller.fed_site(self._dead_feeds())
        # What a clean stop is reserved for: the forecast, its upper band no lower than the draw
        # now. A forecaster takes minutes to believe a step up (engine/demand.py), and a final
        # shutdown planned on the old band ran a small pack flat under a long stop meanwhile.
        self.reserve_demand_w = {
            sid: _at_least_drawn(demand, telemetry.service_draw_w.get(sid))
            for sid, demand in telemetry.demand_w.items()
        }
        # What is due before the next look is done now. The best guess of when that will be is
        # the last interval, once it was one on battery; but one longer than the one before it
        # (a restart, a stalled poll) says nothing of the next, which comes at the usual cadence:
        # taken for it, everything due in a restart's downtime would stop at once, and the final
        # shutdown begin that much early.
        last_s = 0.0 if state.soc_at_s is None else max(0.0, self.now_s - state.soc_at_s)
        self.look_interval_s = last_s if state.soc_at_s is not None else None
        if state.mode is Mode.NORMAL:
            self.cycle_s = min(last_s, self.settings.cycle_s)
        elif state.look_interval_s is None:
            self.cycle_s = last_s
        else:
            self.cycle_s = min(last_s, state.look_interval_s)

    # --- the cycle --------------------------------------------------------------------------

    def run(self) -> None:
        self._track_mains()
        self._estimate_charge()
        self._notice_found_off()
        self._apply_holds()
        if self._on_battery_now():
            self._on_battery()
        else:
            self._on_mains()
        self._obey_guard()
        self._advance_phases()
        if self._on_battery_now():
            self._cap_what_waits_to_stop()

    def _dead_feeds(self) -> frozenset[str]:
        """Outlets reported off under a service another of whose outlets is reported on."""
        outlet_on = self.telemetry.outlet_on
        return frozenset(
            o
            for s in self.site.services
            if len(s.outlets) > 1 and any(outlet_on.get(x) is True for x in s.outlets)
            for o in s.outlets
            if outlet_on.get(o) is False
        )

    def _on_battery_now(self) -> bool:
        return self.state.outage_started_s is not None and self.state.mains_back_s is None

    def finish(self) -> ControllerState:
        return replace(
            self.state,
            services=dict(self.services),
            mode=self._mode(),
            look_interval_s=self.look_interval_s,
        )

    # --- mains and charge -------------------------------------------------------------------

    def _track_mains(self) -> None:
        mains_on = self.telemetry.mains_on
        state = self.state
        if mains_on is None:
            self.faults.append(Fault(None, "telemetry_missing", "mains state unknown: unchanged"))
            return
        if not mains_on:
            began_s = self.telemetry.mains_off_since_s
            began_s = self.now_s if began_s is None else min(began_s, self.now_s)
            if state.outage_started_s is None:
                state = replace(state, outage_started_s=began_s, mains_back_s=None)
                self.services = {
                    sid: replace(c, shed_in_outage=False) for sid, c in self.services.items()
                }
            elif state.mains_back_s is not None:
                # Mains came back but did not stay: the same outage goes on if nothing had
                # restarted yet; otherwise this is a second outage, planned from now.
                flicker = self.now_s - state.mains_back_s < self.settings.restore_delay_s
                state = replace(
                    state,
                    mains_back_s=None,
                    outage_started_s=state.outage_started_s if flicker else began_s,
                )
        elif state.outage_started_s is not None and state.mains_back_s is None:
            state = replace(state, mains_back_s=self.now_s)
        self.state = state

    def _estimate_charge(self) -> None:
        """Each UPS's charge: its own reading, else dead reckoning from the last one.

        A runtime reading that implies much less charge than the charge reading is believed only
        once it has persisted for `runtime_confirm_s` (a UPS's estimate jumps when the load
        changes; an aged pack shows it for good).
        """
        soc: dict[str, float] = {}
        disagree: dict[str, float] = {}
        implausible: dict[str, float] = {}
        dt_s = 0.0 if self.state.soc_at_s is None else max(0.0, self.now_s - self.state.soc_at_s)
        on_battery = self._on_battery_now()
        for ups in self.site.ups:
            model = self.controller.batteries[ups.id]
            reading = self.telemetry.ups.get(ups.id)
            last = self.state.soc_ratio.get(ups.id, 1.0)
            reckoned = (
                model.soc_after(last, self._ups_load_w(ups.id, self._drawing()), dt_s)
                if on_battery
                else last
            )
            if reading is None or reading.soc_ratio is None:
                soc[ups.id] = reckoned
                self.faults.append(
                    Fault(None, "telemetry_missing", f"UPS {ups.id}: charge estimated")
                )
                continue
            # Even at its rated load the pack cannot have lost more since the last look: a
            # lower reading (a forged or garbled one) waits until it persists, and the charge
            # is reckoned meanwhile, so that it never starts a final shutdown by itself (I9).
            # Before the first look there is nothing to compare with.
            floor = model.soc_after(last, ups.rated_w, dt_s) - self.settings.charge_tolerance_ratio
            if self.state.soc_at_s is not None and reading.soc_ratio < floor:
                since = self.state.charge_implausible_since_s.get(ups.id, self.now_s)
                if self.now_s - since < self.settings.runtime_confirm_s:
                    implausible[ups.id] = since
                    soc[ups.id] = reckoned
                    self.faults.append(
                        Fault(
                            None,
                            "reading_implausible",
                            f"UPS {ups.id}: charge reads {reading.soc_ratio:.0%}, the pack could "
                            f"not have fallen below {max(0.0, floor):.0%}: estimated until it "
                            "persists",
                        )
                    )
                    continue
            estimate = reading.soc_ratio
            load_w = (
                reading.output_w
                if reading.output_w is not None
                else self._ups_load_w(ups.id, self._drawing())
            )
            if reading.runtime_s is not None and load_w > 0:
                implied = reading.runtime_s / model.full_runtime_s(load_w)
                if implied < estimate * (1.0 - self.settings.runtime_disagree_ratio):
                    since = self.state.runtime_disagrees_since_s.get(ups.id, self.now_s)
                    disagree[ups.id] = since
                    if self.now_s - since >= self.settings.runtime_confirm_s:
                        estimate = implied
                        self.faults.append(
                            Fault(
                                None,
                                "runtime_disagrees",
                                f"UPS {ups.id}: runtime reading implies {implied:.0%} charge, "
                                f"charge reads {reading.soc_ratio:.0%}: planning on the lower",
                            )
                        )
            soc[ups.id] = max(0.0, min(1.0, estimate))
        self.state = replace(
            self.state,
            soc_ratio=soc,
            soc_at_s=self.now_s,
            runtime_disagrees_since_s=disagree,
            charge_implausible_since_s=implausible,
        )

    def _drawing(self) -> frozenset[str]:
        return drawing(self.services)

    def _on(self) -> frozenset[str]:
        """Running or starting: what the controller keeps on."""
        return frozenset(
            sid for sid, c in self.services.items() if c.phase in (Phase.ON, Phase.STARTING)
        )

    def _ups_load_w(self, ups_id: str, drawing: frozenset[str]) -> float:
        """The forecast upper quantile of a UPS's load with `drawing` on, unmanaged included."""
        return node_loads_w(
            self.site, self.telemetry.demand_w, drawing, self.telemetry.unmanaged_w
        )[ups_id]

    # --- holds ------------------------------------------------------------------------------

    def _notice_found_off(self) -> None:
        """A running service whose outlets read off and which draws nothing, two readings in a
        row, was stopped by something else (a person, a forged command, a tripped outlet): it
        is reported and held off, so that what depends on it stops cleanly (I1) and nothing
        starts it behind whoever stopped it. It is started again once an administrator releases
        it, or left to run once it is seen running again."""
        seen = dict(self.state.seen_off_since_s)
        found = set(self.state.found_off)
        held_off = set(self.state.held_off)
        protected = self._protected()
        for sid, control in self.services.items():
            outlets = self.site.service_by_id[sid].outlets
            reported = [self.telemetry.outlet_on.get(o) for o in outlets]
            draw_w = self.telemetry.service_draw_w.get(sid)
            if sid in found and control.phase is Phase.OFF:
                running = any(r is True for r in reported) and (
                    draw_w is not None and draw_w > self._up_threshold_w(sid)
                )
                if running:
                    found.discard(sid)
                    held_off.discard(sid)
                    self.services[sid] = replace(
                        control, phase=Phase.ON, reason="found running again"
                    )
                    self.faults.append(Fault(sid, "found_running", f"{sid}: found running again"))
                continue
            looks_off = (
                control.phase is Phase.ON
                and sid not in protected
                and all(r is False for r in reported)
                and (draw_w is None or draw_w <= self._up_threshold_w(sid))
            )
            if not looks_off:
                seen.pop(sid, None)
                continue
            if sid not in seen:
                seen[sid] = self.now_s
                continue
            seen.pop(sid)
            found.add(sid)
            held_off.add(sid)
            self.services[sid] = replace(
                control,
                phase=Phase.OFF,
                since_s=self.now_s,
                reason="found off, not stopped by this controller: held off until released",
            )
            self.faults.append(
                Fault(
                    sid,
                    "found_stopped",
                    f"{sid}: its outlets read off and it draws nothing, but nothing here "
                    "stopped it: held off until an administrator releases it",
                )
            )
        self.state = replace(
            self.state,
            seen_off_since_s=seen,
            found_off=frozenset(found),
            held_off=frozenset(held_off),
        )

    def _apply_holds(self) -> None:
        for sid in self._held_off_closure():
            self._shed(sid, "held off by an administrator", for_limit=False)

    def _protected(self) -> frozenset[str]:
        """Held on, and what a held-on service needs: never stopped by the controller (I8)."""
        return self.site.graph.dependency_closure(self.state.held_on)

    # --- on battery -------------------------------------------------------------------------

    def _on_battery(self) -> None:
        assert self.state.outage_started_s is not None
        elapsed_s = self.now_s - self.state.outage_started_s
        if self.state.mode is Mode.FINAL_SHUTDOWN:
            self._final_shutdown()
            return
        if self._heed_low_battery_alarms():
            return
        running = self._on()
        if running:
            plan = self.controller.plan(
                self.state.soc_ratio,
                self.reserve_demand_w,
                self.controller.outage_given(elapsed_s),
                running,
                self._base_load_w(),
                self._stopping_s(),
            )
            self.plan = plan
            # The final shutdown starts early by a cycle per wave of it: each wave is seen to
            # have stopped only at a cycle, and the plan's reserve assumes no such wait.
            waves = len(self.site.graph.shutdown_waves(running))
            if plan.final_shutdown_at_s <= self.cycle_s * (waves + 1):
                self.state = replace(self.state, mode=Mode.FINAL_SHUTDOWN)
                self._final_shutdown()
                return
            lead_s = self._stop_lead_s(running)
            for sid in running:
                stop_at_s = plan.stop_at_s[sid]
                # What stops with the final shutdown waits for it (I4); its lead is counted there.
                # Nothing is asked to stop while the plan rides a blip through.
                ask_at_s = max(stop_at_s - lead_s[sid], plan.ride_through_s)
                if stop_at_s < plan.final_shutdown_at_s and ask_at_s <= self.cycle_s:
                    reason = next(
                        (
                            s.reason
                            for s in plan.steps
                            if s.service_id == sid and s.action == "shutdown"
                        ),
                        "plan: stop now",
                    )
                    self._shed(sid, reason, for_limit=False)
            self._stop_what_the_pack_could_not_stop_later(plan)
            # After the stops, so that a service waiting for its dependents to stop is capped
            # meanwhile whatever stopped it.
            for sid in running:
                if plan.throttle_at_s[sid] <= self.cycle_s and self.services[sid].phase in (
                    RUNNING_PHASES
                ):
                    self._throttle(
                        sid,
                        self.site.service_by_id[sid].throttle_min_w,
                        "plan: capped so that more important services run longer",
                    )
        self._fit_limits()

    def _heed_low_battery_alarms(self) -> bool:
        """A UPS's own low-battery alarm stops what it feeds at once, as NUT's upsmon shuts a
        host down on `OB LB`: the UPS knows its pack better than any model of it (I9). With
        every UPS alarmed that is the final shutdown; True then, when the plan has nothing left
        to decide."""
        alarmed = [
            ups.id
            for ups in self.site.ups
            if (reading := self.telemetry.ups.get(ups.id)) is not None
            and reading.low_battery is True
        ]
        if not alarmed:
            return False
        reason = f"final shutdown: low-battery alarm of UPS {', '.join(alarmed)}"
        if len(alarmed) == len(self.site.ups):
            self.state = replace(self.state, mode=Mode.FINAL_SHUTDOWN)
            self.faults.append(Fault(None, "low_battery_alarm", reason))
            self._final_shutdown()
            return True
        fed = [
            sid
            for sid, control in self.services.items()
            if control.phase in (Phase.ON, Phase.STARTING)
            and not self.site.service_nodes(sid).isdisjoint(alarmed)
        ]
        if fed:
            self.faults.append(Fault(None, "low_battery_alarm", reason))
        for sid in fed:
            self._shed(sid, reason, for_limit=False)
        return False

    def _stop_what_the_pack_could_not_stop_later(self, plan: Plan) -> None:
        """Ask now the stops the plan has before the final shutdown, on a UPS whose charge is
        down to a clean stop of everything it carries.

        The plan walks energy on the mean: a stop it puts just before a small UPS runs out ends
        there only if the service draws no more than its mean while it stops, and a stop once
        begun cannot be hastened. The final shutdown's reserve (the upper quantile and the
        margin) is what every stop is owed (I4): past it, waiting is a bet the OS may lose.
        """
        early = [
            sid
            for sid, stop_at_s in plan.stop_at_s.items()
            if stop_at_s < plan.final_shutdown_at_s
            and self.services[sid].phase in (Phase.ON, Phase.STARTING)
        ]
        if not early:
            return  # the reserve is not worked out for nothing on every cycle
        wanted = self._clean_stop_charge(self._drawing(), late_cycles=1)
        for ups_id in (u.id for u in self.site.ups):
            if self.state.soc_ratio.get(ups_id, 1.0) >= wanted[ups_id]:
                continue
            for sid in early:
                if ups_id in self.site.service_nodes(sid):
                    self._shed(
                        sid,
                        f"UPS {ups_id} holds just enough to stop what it carries cleanly: "
                        "stopping now what the plan stops before the final shutdown",
                        for_limit=False,
                    )

    def _stop_lead_s(self, running: frozenset[str]) -> dict[str, float]:
        """How much earlier than planned each service's stop must be asked for.

        A service begins to stop only once what depends on it is seen down (I1): a cycle after
        each dependent's own `shutdown_s`, down every level of the chain. The plan's time is when
        the service itself stops drawing, so its dependents are asked that much before.
        """
        cycle_s = self.cycle_s
        if cycle_s <= 0:
            return dict.fromkeys(running, 0.0)
        graph = self.site.graph
        lead_s: dict[str, float] = {}
        for sid in graph.shutdown_order(running):
            waits_s = [
                lead_s[d]
                + max(1, math.ceil(self.site.service_by_id[d].shutdown_s / cycle_s)) * cycle_s
                for d in graph.dependents(sid)
                if d in running
            ]
            lead_s[sid] = max(waits_s, default=0.0)
        return lead_s

    def _stopping_s(self) -> dict[str, float]:
        """What is on its way down, each with how long it still draws once its own stop begins.

        A stop that was asked of it begins at once; a pending one only after its dependents
        are down, and the plan walks that wait. (A failed stop is in `_base_load_w`.)
        """
        stopping_s: dict[str, float] = {}
        for sid, control in self.services.items():
            shutdown_s = self.site.service_by_id[sid].shutdown_s
            if control.phase is Phase.PENDING_STOP:
                stopping_s[sid] = shutdown_s
            elif control.phase is Phase.STOPPING and not _stop_failed(control):
                stopping_s[sid] = max(0.0, shutdown_s - (self.now_s - control.since_s))
        return stopping_s

    def _base_load_w(self) -> dict[str, float]:
        """What the plan cannot switch, by outlet: unmanaged outlets, and failed stops.

        A service whose stop or cut did not happen draws for as long as the fault lasts, so the
        energy walk and the reserve for the final shutdown must carry it.
        """
        base_w = dict(self.telemetry.unmanaged_w)
        for sid, control in self.services.items():
            if control.phase not in (Phase.STOPPING, Phase.CUTTING) or not _stop_failed(control):
                continue
            service = self.site.service_by_id[sid]
            draw_w = self.telemetry.service_draw_w.get(sid)
            if draw_w is None:
                draw_w = self.telemetry.demand_w[sid].upper_w
            for outlet in service.outlets:
                base_w[outlet] = base_w.get(outlet, 0.0) + draw_w / len(service.outlets)
        return base_w

    def _final_shutdown(self) -> None:
        for sid, control in self.services.items():
            if control.phase in (Phase.ON, Phase.STARTING):
                self._shed(
                    sid,
                    "final shutdown: the battery holds just enough to stop everything cleanly",
                    for_limit=False,
                )

    def _cap_what_waits_to_stop(self) -> None:
        """On battery, what is to stop but waits for its dependents to stop first runs at its
        throttle floor meanwhile: the watts it saves are what the last stops run on."""
        for sid, control in self.services.items():
            floor_w = self.site.service_by_id[sid].throttle_min_w
            if control.phase is Phase.PENDING_STOP and floor_w is not None:
                self._throttle(
                    sid, floor_w, "capped while what needs it stops, before its own stop"
                )

    def _fit_limits(self) -> None:
        """Shed or cap whatever the allocation of this instant cannot fit (I2).

        The critical tier, and what it needs, is shed for a limit only once what it draws now is
        over it, as the overload guard does (I4): a forecast band wider than a tight limit (a
        young forecaster's, after a jump) would otherwise take it down with its real draw far
        below. Every other tier still goes by the band.
        """
        on = self._on()
        down = frozenset(self.services) - on
        protected = self._protected()
        critical = self.site.graph.dependency_closure(
            s.id for s in self.site.services if s.priority is Priority.CRITICAL
        )
        kept = (protected | critical) & (on - self._held_off_closure())
        allocation = allocate(
            self.fed_site,
            self.telemetry.demand_w,
            unmanaged_w=self.telemetry.unmanaged_w,
            held_on=kept,
            held_off=down - protected,
        )
        if not allocation.within_limits and not self._draws_fit(kept):
            allocation = allocate(
                self.fed_site,
                self.telemetry.demand_w,
                unmanaged_w=self.telemetry.unmanaged_w,
                held_on=protected & on,
                held_off=down - protected,
            )
        for sid, decision in allocation.decisions.items():
            control = self.services[sid]
            if control.phase not in (Phase.ON, Phase.STARTING):
                continue
            if decision.state is ServiceState.OFF:
                self._shed(sid, f"over a limit: {decision.reason}", for_limit=True)
            elif decision.state is ServiceState.THROTTLED:
                self._throttle(sid, decision.cap_w, f"over a limit: {decision.reason}")

    def _draws_fit(self, services: frozenset[str]) -> bool:
        """Whether `services` alone, at the draw measured now, are within every limit."""
        measured: dict[str, Demand] = {}
        for sid, forecast in self.telemetry.demand_w.items():
            draw_w = self.telemetry.service_draw_w.get(sid)
            measured[sid] = forecast if draw_w is None else Demand(draw_w, draw_w)
        return allocate(
            self.fed_site,
            measured,
            unmanaged_w=self.telemetry.unmanaged_w,
            held_on=services,
            held_off=frozenset(self.services) - services,
        ).within_limits

    def _obey_guard(self) -> None:
        """Carry out the overload guard's shed: it chose by priority and dependencies already."""
        allocation = self.telemetry.overload_allocation
        if allocation is None:
            return
        for sid, decision in allocation.decisions.items():
            if self.services[sid].phase not in (Phase.ON, Phase.STARTING):
                continue
            if decision.state is ServiceState.OFF:
                self._shed(sid, f"overload predicted: {decision.reason}", for_limit=True)
            elif decision.state is ServiceState.THROTTLED:
                self._throttle(sid, decision.cap_w, f"overload predicted: {decision.reason}")

    # --- on mains ---------------------------------------------------------------------------

    def _on_mains(self) -> None:
        state = self.state
        if state.mains_back_s is not None:
            self._abort_pending_stops()
            if self.now_s - state.mains_back_s < self.settings.restore_delay_s:
                return
            self.state = replace(state, outage_started_s=None, mains_back_s=None)
        # On mains in steady state, overloads are the overload guard's (engine/overload.py);
        # here only what adds load is checked against the limits: caps lifted, restarts.
        self._release_caps()
        self._restore_next()

    def _release_caps(self) -> None:
        """Lift the caps of the plan or the guard once everything on fits without them (I2).

        All at once or none: lifting one at a time could leave the last over a limit. A cap
        under a node the guard is shedding on, or one its shed still wants, stays; a check that
        fails is tried again after `limit_recheck_s`, as a restore is.
        """
        guard = self.telemetry.overload_allocation
        capped = [
            sid
            for sid, control in self.services.items()
            if control.cap_w is not None
            and control.phase in (Phase.ON, Phase.STARTING)
            and self._limit_recheck_due(control)
            and self._guard_shedding_above(sid) is None
            and (guard is None or guard.decisions[sid].state is ServiceState.ON)
        ]
        if not capped:
            return
        allowed_w = {sid: self.services[sid].cap_w or 0.0 for sid in capped}
        forecast = self._node_forecast_fit(allowed_w, f"{', '.join(capped)} uncapped")
        if forecast is None:
            misfit = self._misfit_with(capped[0], self._on())
            why = "on mains, and everything fits at its full draw"
        else:
            fits, figure = forecast
            misfit = None if fits else figure
            why = f"{figure}: releasing" if figure else "on mains, and nothing limits it"
        for sid in capped:
            if misfit is None:
                self._throttle(sid, None, why)
            else:
                self.services[sid] = replace(
                    self.services[sid],
                    shed_for_limit_s=self.now_s,
                    reason=f"capped on mains: over a limit without the cap ({misfit})",
                )

    def _abort_pending_stops(self) -> None:
        """Mains is back: a stop not yet asked is called off, in the restore's order (I6).

        Under the restore's charge gate: a service kept on now is one a second outage must be
        able to stop with the charge the first left, as one restarted later is (I4). What the
        gate does not let through goes on stopping, and is restored once the pack has recharged.
        """
        held_off = self._held_off_closure()
        pending = [
            sid
            for sid, control in self.services.items()
            if control.phase is Phase.PENDING_STOP and sid not in held_off
        ]
        by_id = self.site.service_by_id
        graph = self.site.graph
        for sid in graph.startup_order(pending, key=lambda sid: -by_id[sid].priority.rank):
            control = self.services[sid]
            if any(self.services[d].phase is not Phase.ON for d in graph.dependencies(sid)):
                continue
            short = self._charge_short_of(sid)
            if short is None:
                self.services[sid] = replace(control, phase=Phase.ON, shed_in_outage=False)
                continue
            ups_id, wanted = short
            # A critical service waits to stop only in the final shutdown (I4): that goes on.
            going_on = (
                "the final shutdown goes on"
                if by_id[sid].priority is Priority.CRITICAL
                else "its stop goes on"
            )
            self.services[sid] = replace(
                control,
                reason=(
                    f"{going_on}: mains is back, but UPS {ups_id} holds less than the "
                    f"{wanted:.0%} that would stop it cleanly should mains fail again; it is "
                    "restored once recharged"
                ),
            )

    def _held_off_closure(self) -> frozenset[str]:
        return self.site.graph.dependent_closure(self.state.held_off)

    def _restore_next(self) -> None:
        """Start the next service that may come back: one per stagger, in order (I6)."""
        if self.now_s - self.state.last_start_s < self.settings.restore_stagger_s:
            return
        graph = self.site.graph
        held_off = self._held_off_closure()
        # A service started under a node the guard is shedding on would be shed again as soon
        # as the node's forecast saw it, and the next restore would start it again. (Elsewhere
        # the guard's allocation holds what is off now off: that is no reason to keep it off.)
        for sid, control in self.services.items():
            node_id = self._guard_shedding_above(sid)
            if control.phase is Phase.OFF and sid not in held_off and node_id is not None:
                self.services[sid] = replace(
                    control,
                    reason=f"waiting to restore: the overload guard is shedding on {node_id}",
                )
                held_off |= {sid}
        candidates = [
            sid
            for sid, control in self.services.items()
            if control.phase is Phase.OFF
            and sid not in held_off
            and self._limit_recheck_due(control)
            and all(self.services[d].phase is Phase.ON for d in graph.dependencies(sid))
        ]
        if not candidates:
            return
        by_id = self.site.service_by_id
        order = graph.startup_order(candidates, key=lambda sid: -by_id[sid].priority.rank)
        on = self._on()
        still_stopping = drawing(self.services) - on
        for sid in order:
            forecast = self._node_forecast_fit({sid: 0.0}, sid)
            if forecast is None:
                misfit = self._misfit_with(sid, on)
                why = "mains is back and stable: restoring in dependency order"
            else:
                fits, figure = forecast
                misfit = None if fits else figure
                why = f"{figure}: restoring" if figure else "on mains, and nothing limits it"
            if misfit is not None:
                # Checked again once loads may have changed, as after a shed for a limit: an
                # allocation every cycle for each waiting service would cost more than the wait.
                self.services[sid] = replace(
                    self.services[sid],
                    shed_for_limit_s=self.now_s,
                    reason=f"waiting to restore: over a limit ({misfit})",
                )
                continue
            # What is still stopping draws until it is off, within its shutdown_s: a start
            # that fits only without it waits for it, and is checked again next cycle. (A node's
            # own forecast already carries what still draws.)
            if (
                forecast is None
                and still_stopping
                and self._misfit_with(sid, on | still_stopping) is not None
            ):
                self.services[sid] = replace(
                    self.services[sid],
                    reason="waiting to restore: over a limit until what is stopping is off",
                )
                continue
            short = self._charge_short_of(sid)
            if short is None:
                self._start(sid, why)
            else:
                # What comes after it in the order is less important, or needs it (I6): all
                # of it waits for the charge, which grows on mains.
                ups_id, wanted = short
                reason = (
                    f"waiting for UPS {ups_id} to recharge to {wanted:.0%}: enough to stop it "
                    "cleanly should mains fail again"
                )
                self.services[sid] = replace(self.services[sid], reason=reason)
            return

    def _charge_short_of(self, service_id: str) -> tuple[str, float] | None:
        """A UPS (and the charge it wants) that could not stop everything cleanly with this
        service started, were mains to fail at once; None if every UPS could.

        A second outage soon after the first finds the pack as the first left it: what is
        restored then must be what that charge can still shut down (I4). The plan's reserve
        and margin, plus the time before the controller acts: the failure is seen up to a
        cycle late, and the final shutdown begins a cycle per wave early.
        """
        before = self._on()
        after = before | {service_id}
        wanted = {on: self._clean_stop_charge(on, late_cycles=2) for on in (before, after)}
        for ups in self.site.ups:
            wanted_before, wanted_after = (
                min(wanted[on][ups.id], RESTORE_CHARGE_CAP_RATIO) for on in (before, after)
            )
            # A UPS this start adds nothing to is not its concern.
            soc_ratio = self.state.soc_ratio.get(ups.id, 1.0)
            if wanted_after > wanted_before and soc_ratio < wanted_after:
                return ups.id, wanted_after
        return None

    def _clean_stop_charge(self, on: frozenset[str], *, late_cycles: int) -> dict[str, float]:
        """Per UPS, the charge a clean stop of `on` begun `late_cycles` cycles from now needs.

        The plan's reserve and margin, plus a cycle per wave of it: each wave is seen to be down
        only at a cycle.
        """
        settings = self.settings
        needed = clean_shutdown_soc(
            self.site,
            self.controller.batteries,
            self.reserve_demand_w,
            on,
            self.telemetry.unmanaged_w,
        )
        wait_s = (len(self.site.graph.shutdown_waves(on)) + late_cycles) * settings.cycle_s
        return {
            ups.id: needed[ups.id] * (1.0 + settings.reserve_margin_ratio)
            + wait_s
            / self.controller.batteries[ups.id].full_runtime_s(self._ups_load_w(ups.id, on))
            for ups in self.site.ups
        }

    def _pack_affords_another_stop(self, service_id: str) -> bool:
        """In the final shutdown: whether a stop that visibly did not happen may be asked again.

        It may while every UPS that it, or what waits for it to be down, draws from still holds
        the charge to stop all that is drawing cleanly, its own stop counted in full from now.
        Past that, the battery will not wait: its outlets are cut, so that what it depends on can
        still stop cleanly (I1).
        """
        drawing = self._drawing()
        waiting = self.site.graph.dependency_closure([service_id]) & drawing
        nodes = frozenset[str]().union(*(self.site.service_nodes(sid) for sid in waiting))
        feeding = nodes.intersection(u.id for u in self.site.ups)
        wanted = self._clean_stop_charge(drawing, late_cycles=1)
        return all(self.state.soc_ratio.get(u, 1.0) >= wanted[u] for u in feeding)

    def _limit_recheck_due(self, control: ServiceControl) -> bool:
        """Whether a service kept off (or capped) for a limit may be checked against it again."""
        return (
            control.shed_for_limit_s is None
            or self.now_s - control.shed_for_limit_s >= self.settings.limit_recheck_s
        )

    def _guard_shedding_above(self, service_id: str) -> str | None:
        """A node this service's draw counts against that the overload guard is shedding on."""
        nodes = self.telemetry.overload_shedding_nodes & self.site.service_nodes(service_id)
        return min(nodes, default=None)

    def _node_forecast_fit(
        self, allowed_w: Mapping[str, float], what: str
    ) -> tuple[bool, str] | None:
        """Whether the services of `allowed_w` coming back (each to its demand, from the draw it
        is allowed now: 0 when off, its cap when capped) fit every limited node above them with
        the give-back margin, and the figure of the tightest, e.g. "pdu-b forecast
        812 W of 1,000 W with web back"; None where a node above it has no forecast this cycle
        (then the allocation decides). The node's total is the guard's (`node_total_with_w`)."""
        upper_w, draw_w = self.telemetry.node_upper_w, self.telemetry.node_draw_w
        returning: dict[str, Returning] = {}
        for sid, allowed in allowed_w.items():
            demand = self.telemetry.demand_w[sid]
            for node_id, share in service_node_shares(self.fed_site, sid).items():
                returning[node_id] = returning.get(node_id, Returning()).plus(
                    share, demand, allowed
                )
        keep = 1.0 - self.settings.give_back_margin_ratio
        tightest: tuple[float, str] | None = None
        fits = True
        for node in self.fed_site.nodes:
            if node.limit_w is None or node.id not in returning:
                continue
            if node.id not in upper_w or node.id not in draw_w:
                return None
            total_w = node_total_with_w(draw_w[node.id], upper_w[node.id], returning[node.id])
            fits = fits and total_w <= keep * node.limit_w
            ratio = total_w / node.limit_w if node.limit_w > 0 else math.inf
            if tightest is None or ratio > tightest[0]:
                figure = f"{node.id} forecast {total_w:,.0f} W of {node.limit_w:,.0f} W"
                tightest = (ratio, f"{figure} with {what} back")
        return fits, "" if tightest is None else tightest[1]

    def _misfit_with(self, service_id: str, drawing: frozenset[str]) -> str | None:
        """Why `drawing` and this service do not all fit the limits at their upper draw; None
        when they do.

        All of it, not only what the allocation keeps: one that would rather have this service
        than a running one of its tier would start it into an overload until the other is shed.
        """
        wanted = drawing | {service_id}
        demand_w = self.telemetry.demand_w
        allocation = allocate(
            self.fed_site,
            demand_w,
            unmanaged_w=self.telemetry.unmanaged_w,
            held_off=frozenset(self.services) - wanted,
        )
        for sid in sorted(wanted):
            decision = allocation.decisions[sid]
            # A service that draws nothing is off in any allocation, and fits.
            if decision.state is not ServiceState.ON and demand_w[sid].upper_w > 0:
                return decision.reason if sid == service_id else f"{sid} would not fit beside it"
        return None

    # --- actions ----------------------------------------------------------------------------

    def _shed(self, service_id: str, reason: str, *, for_limit: bool) -> None:
        """Mark a service and everything depending on it to stop, dependents first (I1)."""
        protected = self._protected()
        for sid in self.site.graph.dependent_closure([service_id]):
            control = self.services[sid]
            if sid in protected or control.phase not in (Phase.ON, Phase.STARTING):
                continue
            why = reason if sid == service_id else f"a service it depends on stops: {reason}"
            self.services[sid] = replace(
                control,
                phase=Phase.PENDING_STOP,
                since_s=self.now_s,
                shed_in_outage=self.state.outage_started_s is not None,
                shed_for_limit_s=self.now_s if for_limit else None,
                reason=why,
            )

    def _throttle(self, service_id: str, cap_w: float | None, reason: str) -> None:
        control = self.services[service_id]
        if cap_w is not None and service_id in self._protected():
            return
        if control.cap_w == cap_w or (
            # Hysteresis (I5): a cap is only loosened by the restore, and tightened by a step
            # that matters, not on every wobble of the forecast.
            cap_w is not None
            and control.cap_w is not None
            and cap_w >= control.cap_w * (1.0 - self.settings.cap_hysteresis_ratio)
        ):
            return
        if control.phase is Phase.ON:
            # Checked once it has had the time a switch has to report (`_verify_cap`).
            control = replace(
                control, switch_attempts=0, next_switch_s=self.now_s + self.settings.switch_verify_s
            )
        self.services[service_id] = replace(control, cap_w=cap_w)
        self.commands.append(Throttle(service_id, cap_w, reason))

    def _verify_cap(self, sid: str, control: ServiceControl) -> None:
        """A cap the draw stays above did not take: it is sent again, with backoff, and reported
        (I7). The plan counts the capped draw: a lost cap is energy the last services lose."""
        assert control.cap_w is not None
        draw_w = self.telemetry.service_draw_w.get(sid)
        if (
            draw_w is None
            or draw_w <= control.cap_w + self.settings.idle_margin_w
            or self.now_s < control.next_switch_s
        ):
            return
        self.services[sid] = replace(
            control,
            switch_attempts=control.switch_attempts + 1,
            next_switch_s=self.now_s + self._backoff_s(control.switch_attempts),
        )
        drawn = f"drawing {draw_w:.0f} W over its {control.cap_w:.0f} W cap"
        self.faults.append(Fault(sid, "cap_unconfirmed", f"{sid}: {drawn}; sending it again"))
        self.commands.append(
            Throttle(sid, control.cap_w, f"retrying a cap that did not take ({drawn})")
        )

    def _start(self, service_id: str, reason: str) -> None:
        service = self.site.service_by_id[service_id]
        self.services[service_id] = replace(
            self.services[service_id],
            phase=Phase.STARTING,
            since_s=self.now_s,
            switch_attempts=0,
            next_switch_s=self.now_s + self.settings.switch_verify_s,
            shed_for_limit_s=None,
        )
        self.state = replace(self.state, last_start_s=self.now_s)
        self.commands.append(StartService(service_id, service.outlets, reason))

    # --- phases -----------------------------------------------------------------------------

    def _advance_phases(self) -> None:
        graph = self.site.graph
        for sid in graph.shutdown_order(list(self.services)):
            control = self.services[sid]
            service = self.site.service_by_id[sid]
            if control.phase is Phase.PENDING_STOP:
                if all(self._is_down(d) for d in graph.dependents(sid)):
                    self.services[sid] = replace(
                        control,
                        phase=Phase.STOPPING,
                        since_s=self.now_s,
                        switch_attempts=0,
                        next_switch_s=self.now_s,
                    )
                    self.commands.append(StopService(sid, control.reason))
            elif control.phase is Phase.STOPPING:
                if sid in self.telemetry.stops_undelivered and self.now_s >= control.next_switch_s:
                    self._ask_stop_again(
                        sid,
                        control,
                        self._backoff_s(control.switch_attempts),
                        Fault(sid, "stop_undelivered", f"{sid}: its stop was not delivered"),
                        f"retrying a stop that could not be delivered: {control.reason}",
                    )
                else:
                    self._finish_stop(sid, control)
        for sid, control in list(self.services.items()):
            service = self.site.service_by_id[sid]
            if control.phase is Phase.CUTTING:
                self._verify_switch(sid, control, on=False)
            elif control.phase is Phase.STARTING:
                if not self._verify_switch(sid, control, on=True):
                    # Its OS boots only once powered: startup_s counts from the outlets on, or
                    # what depends on it would start beside an OS still booting (I1).
                    self.services[sid] = replace(self.services[sid], since_s=self.now_s)
                elif self.now_s - control.since_s >= service.startup_s:
                    self._confirm_started(sid)
            elif control.phase is Phase.ON and control.cap_w is not None:
                self._verify_cap(sid, control)

    def _finish_stop(self, sid: str, control: ServiceControl) -> None:
        """Cut a stopping service's outlets once its OS is down (I3).

        The OS is down when `shutdown_s` has run out: an agent on the host goes with it before
        its disks are synced, so its word cannot tell, and a draw at idle is no proof either: a
        load that dips (most real ones do) would be cut mid-stop. A draw still well
        above idle when `shutdown_s` runs out is: the stop was most likely lost, so it is asked
        again, with backoff, rather than the OS losing its power (once mains is back, it is left
        running). In the final shutdown it is asked again only while the pack affords another
        stop; then the cut goes ahead: the battery will not wait, and what the service depends on
        can stop only once it is down (I1).
        """
        service = self.site.service_by_id[sid]
        if self.now_s - control.since_s < service.shutdown_s or self.now_s < control.next_switch_s:
            return
        draw_w = self.telemetry.service_draw_w.get(sid)
        threshold_w = self._up_threshold_w(sid)
        # With no reading, a stop that already had to be asked again is taken as still up.
        still_up = sid not in self.telemetry.no_stop_channel and (
            draw_w > threshold_w if draw_w is not None else control.switch_attempts > 0
        )
        drawing = "no draw reading" if draw_w is None else f"still drawing {draw_w:.0f} W"
        lost = still_up and self._draw_tells(sid)
        if lost and not self._on_battery_now():
            # Mains is back and the stop never happened: the service simply runs on.
            self.services[sid] = replace(
                control, phase=Phase.ON, shed_in_outage=False, switch_attempts=0
            )
            self.faults.append(Fault(sid, "stop_unconfirmed", f"{sid}: {drawing}; left running"))
            return
        final = self.state.mode is Mode.FINAL_SHUTDOWN
        if lost and (not final or self._pack_affords_another_stop(sid)):
            # In the final shutdown, again as soon as its shutdown_s has run out: the pack drains
            # while it waits, and it is checked against the pack at each ask.
            self._ask_stop_again(
                sid,
                control,
                0.0 if final else self._backoff_s(control.switch_attempts),
                Fault(sid, "stop_unconfirmed", f"{sid}: {drawing}; asking again"),
                f"retrying a stop that did not happen ({drawing}): {control.reason}",
            )
            return
        if still_up:
            self.faults.append(Fault(sid, "stop_unconfirmed", f"{sid}: {drawing}"))
        # After a stop that had to be asked again, the cut is checked on the backoff of the
        # attempts so far, not at once.
        attempts = control.switch_attempts + 1
        wait_s = self.settings.switch_verify_s
        if attempts > 1:
            wait_s = max(wait_s, self._backoff_s(control.switch_attempts))
        self.services[sid] = replace(
            control,
            phase=Phase.CUTTING,
            since_s=self.now_s,
            switch_attempts=attempts,
            next_switch_s=self.now_s + wait_s,
        )
        self.commands.append(
            SwitchOutlets(sid, service.outlets, False, "graceful stop done: its shutdown_s ran out")
        )

    def _ask_stop_again(
        self, sid: str, control: ServiceControl, backoff_s: float, fault: Fault, reason: str
    ) -> None:
        """Ask for a stop again; its shutdown_s counts from now, as the OS's stop does."""
        self.services[sid] = replace(
            control,
            since_s=self.now_s,
            switch_attempts=control.switch_attempts + 1,
            next_switch_s=self.now_s + backoff_s,
        )
        self.faults.append(fault)
        self.commands.append(StopService(sid, reason))

    def _up_threshold_w(self, sid: str) -> float:
        """The draw above which a service is up: its idle draw plus the margin.

        The margin keeps a stopped server's idle noise from reading as a lost stop; for a
        service that runs within it (a small board, a switch) it is a share of its running draw,
        or no draw could ever show its stop lost, and a lost stop would be cut (I3).
        """
        idle_w = self.site.service_by_id[sid].idle_w
        running_w = self.telemetry.demand_w[sid].mean_w
        settings = self.settings
        share_w = settings.idle_margin_ratio * (running_w - idle_w)
        return idle_w + max(settings.idle_margin_min_w, min(settings.idle_margin_w, share_w))

    def _draw_tells(self, sid: str) -> bool:
        """Whether this service's draw, running, is far enough above idle to show it is up.

        Not when it is capped that low: a start would never be seen, and be retried forever.
        A cap its draw is above has not taken (it was lost, or not yet carried out), and hides
        nothing.
        """
        threshold_w = self._up_threshold_w(sid)
        cap_w = self.services[sid].cap_w
        draw_w = self.telemetry.service_draw_w.get(sid)
        capped_low = cap_w is not None and cap_w <= threshold_w
        cap_holds = draw_w is None or cap_w is None or draw_w <= cap_w
        return self.telemetry.demand_w[sid].mean_w > threshold_w and not (capped_low and cap_holds)

    def _is_down(self, sid: str) -> bool:
        """Whether a service is known to be down, so what it needs may stop (I1).

        Its outlets reported off; or its stop is over and it draws no more than idle (an outlet
        stuck on then holds up nothing). A stop or a cut that was lost leaves it drawing: what
        it needs waits, and keeps running, until it really is down.
        """
        control = self.services[sid]
        if control.phase is Phase.OFF:
            return True
        if control.phase is not Phase.CUTTING:
            return False
        if not self._draw_tells(sid):
            return True  # its draw cannot tell: its shutdown_s is all there is to go by
        service = self.site.service_by_id[sid]
        draw_w = self.telemetry.service_draw_w.get(sid)
        if draw_w is None:
            # No reading at all: in the final shutdown the battery does not wait for telemetry
            # to come back, and its stop has run its shutdown_s and its cut has been sent.
            return self.state.mode is Mode.FINAL_SHUTDOWN and all(
                self.telemetry.outlet_on.get(o) is None for o in service.outlets
            )
        return draw_w <= self._up_threshold_w(sid)

    def _confirm_started(self, sid: str) -> None:
        """A start counts once the service draws more than idle: what depends on it waits (I1).

        A start that shows no draw is asked for again, with backoff, and reported (I7).
        """
        control = self.services[sid]
        service = self.site.service_by_id[sid]
        threshold_w = self._up_threshold_w(sid)
        draw_w = self.telemetry.service_draw_w.get(sid)
        if (draw_w is not None and draw_w > threshold_w) or not self._draw_tells(sid):
            self.services[sid] = replace(control, phase=Phase.ON, switch_attempts=0)
            return
        if draw_w is None or self.now_s < control.next_switch_s:
            return
        backoff_s = self._backoff_s(control.switch_attempts)
        self.services[sid] = replace(
            control,
            switch_attempts=control.switch_attempts + 1,
            next_switch_s=self.now_s + backoff_s,
        )
        self.faults.append(
            Fault(sid, "start_unconfirmed", f"{sid}: not running after its startup; retrying")
        )
        self.commands.append(
            StartService(sid, service.outlets, "retrying a start that did not happen")
        )

    def _backoff_s(self, attempts: int) -> float:
        return min(self.settings.retry_max_s, self.settings.retry_base_s * 2.0**attempts)

    def _verify_switch(self, sid: str, control: ServiceControl, *, on: bool) -> bool:
        """Whether the outlets report the state asked for; if not, retry with backoff (I7).

        A cut that did not happen is retried by asking the OS to stop again first, unless its
        draw shows it is down: whatever lost the cut may have lost the stop before it, and a
        retried cut that then went through would take power from a running OS (I3).
        """
        service = self.site.service_by_id[sid]
        reported = [self.telemetry.outlet_on.get(o) for o in service.outlets]
        if all(r is None for r in reported):
            return False  # no readback now: neither confirmed nor failed, so wait
        switched = any(r is True for r in reported) if on else all(r is False for r in reported)
        if switched:
            if not on:
                self.services[sid] = replace(control, phase=Phase.OFF, switch_attempts=0)
            return True
        if self.now_s < control.next_switch_s:
            return False
        backoff_s = self._backoff_s(control.switch_attempts)
        draw_w = self.telemetry.service_draw_w.get(sid)
        if not on and (draw_w is None or draw_w > self._up_threshold_w(sid)):
            self.services[sid] = replace(
                control,
                phase=Phase.STOPPING,
                since_s=self.now_s,
                switch_attempts=control.switch_attempts + 1,
                next_switch_s=self.now_s + backoff_s,
            )
            drawing = "unknown" if draw_w is None else f"{draw_w:.0f} W"
            self.faults.append(
                Fault(
                    sid,
                    "outlet_stuck",
                    f"{sid}: outlets did not switch off and it still draws {drawing} "
                    f"(attempt {control.switch_attempts}); asking it to stop again",
                )
            )
            self.commands.append(
                StopService(
                    sid,
                    f"retrying the stop before the cut (still drawing {drawing}): {control.reason}",
                )
            )
            return False
        self.services[sid] = replace(
            control,
            switch_attempts=control.switch_attempts + 1,
            next_switch_s=self.now_s + backoff_s,
        )
        self.faults.append(
            Fault(
                sid,
                "outlet_stuck",
                f"{sid}: outlets did not switch {'on' if on else 'off'} "
                f"(attempt {control.switch_attempts}); retrying in {backoff_s:.0f} s",
            )
        )
        self.commands.append(
            SwitchOutlets(sid, service.outlets, on, "retrying a switch that did not happen")
        )
        return False

    # --- mode -------------------------------------------------------------------------------

    def _mode(self) -> Mode:
        state = self.state
        if state.outage_started_s is None:
            busy = any(c.phase is not Phase.ON for c in self.services.values())
            return Mode.RESTORING if busy and state.mode is not Mode.NORMAL else Mode.NORMAL
        if state.mains_back_s is not None:
            return Mode.RESTORING
        if state.mode is Mode.FINAL_SHUTDOWN:
            return Mode.FINAL_SHUTDOWN
        up = [sid for sid, c in self.services.items() if c.phase in RUNNING_PHASES]
        throttled = any(c.cap_w is not None for c in self.services.values())
        if len(up) == len(self.services) and not throttled:
            return Mode.ON_BATTERY
        needed = self.site.graph.dependency_closure(
            s.id for s in self.site.services if s.priority is Priority.CRITICAL
        )
        if up and all(sid in needed for sid in up):
            return Mode.CRITICAL_ONLY
        return Mode.SHEDDING


def _at_least_drawn(demand: Demand, draw_w: float | None) -> Demand:
    if draw_w is None or draw_w <= demand.upper_w:
        return demand
    return Demand(demand.mean_w, draw_w)


def _stop_failed(control: ServiceControl) -> bool:
    """A stop asked again, or a cut retried (the first cut is attempt 1)."""
    return control.switch_attempts > (1 if control.phase is Phase.CUTTING else 0)


def drawing(services: Mapping[str, ServiceControl]) -> frozenset[str]:
    """The services that still draw power: all but those switched off."""
    return frozenset(sid for sid, c in services.items() if c.phase is not Phase.OFF)


def running_free(services: Mapping[str, ServiceControl]) -> frozenset[str]:
    """The services on and uncapped: what they draw is what they would draw (their demand)."""
    return frozenset(sid for sid, c in services.items() if c.phase is Phase.ON and c.cap_w is None)
