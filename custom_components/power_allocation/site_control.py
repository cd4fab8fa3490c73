"""One site's decisions between the drivers and Home Assistant: no Home Assistant import here.

Each cycle `SiteControl.cycle` turns the drivers' `TelemetrySnapshot` into the decider's
`Readings`, runs one cycle of the site's decider (`engine/decider.py`: the same object the
simulated `predictive` policy runs), and returns its commands with a `SiteView` for the entities.
Everything learnt and decided is in `decider.to_state()` (JSON), so a restart in the middle of an
outage resumes.

Times are seconds on the caller's clock. The coordinator passes wall-clock epoch seconds: the
controller's state must mean the same after a reboot, which a monotonic clock does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .drivers.interface import TelemetrySnapshot
from .drivers.interface import UpsReading as DriverUpsReading
from .engine.controller import (
    Command,
    Fault,
    Mode,
    Phase,
    Readings,
    Telemetry,
    UpsReading,
)
from .engine.decider import SiteDecider, SiteSettings
from .engine.model import Priority, Service, Site
from .engine.outage import OutagePrior
from .engine.overload import GuardDecision, NodeRisk, OverloadLevel
from .engine.planner import Plan
from .topology import SiteTopology

# `simulate_outage` knows the outage's length: the prior becomes that length, this narrow.
KNOWN_OUTAGE_SIGMA = 0.02


class AllocationState:
    """What a service is doing, as its enum sensor shows it."""

    ON = "on"
    THROTTLED = "throttled"
    STOPPING = "stopping"
    OFF = "off"
    STARTING = "starting"
    OPTIONS = (ON, THROTTLED, STOPPING, OFF, STARTING)


def allocation_state(phase: Phase, cap_w: float | None) -> str:
    """The five states users see, from the controller's finer phases."""
    if phase in (Phase.ON, Phase.PENDING_STOP):
        return AllocationState.ON if cap_w is None else AllocationState.THROTTLED
    if phase in (Phase.STOPPING, Phase.CUTTING):
        return AllocationState.STOPPING
    if phase is Phase.STARTING:
        return AllocationState.STARTING
    return AllocationState.OFF


@dataclass(frozen=True, slots=True)
class UpsView:
    """One UPS as its entities show it."""

    available: bool
    on_battery: bool | None
    low_battery: bool | None
    soc_pct: float | None
    runtime_s: float | None  # as the UPS reports it
    predicted_runtime_s: float | None  # until its last service stops, under the current plan
    output_w: float | None
    energy_left_wh: float | None


@dataclass(frozen=True, slots=True)
class PduView:
    """One PDU: its total draw against its limit, and the guard's outlook."""

    available: bool
    power_w: float | None
    limit_w: float
    headroom_w: float | None
    overload_level: str
    overload_probability: float | None


@dataclass(frozen=True, slots=True)
class OutletView:
    """One outlet as last read, and the forecast of what it will draw."""

    available: bool
    is_on: bool | None
    power_w: float | None
    forecast_w: float | None
    service_id: str | None  # None: unmanaged (metered, never switched)


@dataclass(frozen=True, slots=True)
class ServiceView:
    """One service: what it does, what it draws, and when the plan would shed it."""

    priority: Priority
    state: str  # AllocationState
    reason: str
    power_w: float | None
    forecast_w: float
    forecast_upper_w: float
    cap_w: float | None
    held: bool | None  # True held on, False held off, None not held
    planned_shed_in_s: float | None  # from now, if the outage goes on; None: not planned


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """One step of the plan, as the site's entities and actions report it."""

    in_s: float
    service_id: str
    action: str
    reason: str


@dataclass(frozen=True, slots=True)
class SiteView:
    """Everything the entities of a site show, from one cycle."""

    now_s: float
    mode: Mode
    on_battery: bool | None
    critical_runtime_s: float | None
    budget_w: float | None
    plan: tuple[PlannedStep, ...]
    ups: Mapping[str, UpsView]
    pdus: Mapping[str, PduView]
    outlets: Mapping[str, OutletView]
    services: Mapping[str, ServiceView]
    risks: Mapping[str, NodeRisk]

    @property
    def next_step(self) -> PlannedStep | None:
        """The plan's first step, if it has one."""
        return self.plan[0] if self.plan else None


@dataclass(frozen=True, slots=True)
class CycleOutcome:
    """One cycle: the view, what to carry out, what to report, and the guard's new alarms."""

    view: SiteView
    commands: tuple[Command, ...]
    faults: tuple[Fault, ...]
    overloads_predicted: tuple[NodeRisk, ...]
    mode_changed: bool


def _on_battery(reading: DriverUpsReading) -> bool | None:
    """On battery as the UPS says; a forced shutdown (NUT's FSD) is its output about to go."""
    return True if reading.forced_shutdown else reading.on_battery


def _mains_on(snapshot: TelemetrySnapshot, ups_ids: tuple[str, ...]) -> bool | None:
    """Off once any UPS is on battery; on once every UPS says it is not; else unknown."""
    readings = [snapshot.ups.get(u) for u in ups_ids]
    flags = [_on_battery(r) if r is not None and r.available else None for r in readings]
    if any(flag is True for flag in flags):
        return False
    if flags and all(flag is False for flag in flags):
        return True
    return None


class SiteControl:
    """The decisions of one site, fed one snapshot per cycle."""

    def __init__(
        self,
        topology: SiteTopology,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        self.topology = topology
        self.decider = SiteDecider.from_state(
            topology.site,
            state,
            SiteSettings(prior=topology.outage_prior, ride_through_s=topology.ride_through_s),
        )
        self._no_stop_channel = frozenset(
            sid for sid, c in topology.controls.items() if not c.agent and c.stop is None
        )
        self.view: SiteView | None = None
        self._warned_nodes: set[str] = set()

    @property
    def site(self) -> Site:
        """The site as decided on now: the topology with the administrator's tier changes."""
        return self.decider.site

    # --- the cycle --------------------------------------------------------------------------

    def _service_draw_w(self, snapshot: TelemetrySnapshot, service: Service) -> float | None:
        """What its outlets meter; its host agent's own report only where they do not.

        The meter is in the power path; the agent is a program on the host reporting about
        itself (over a broker anyone may publish on), so it never overrules the meter (I9).
        """
        total = 0.0
        for outlet_id in service.outlets:
            reading = snapshot.outlets.get(outlet_id)
            if reading is None or not reading.available or reading.power_w is None:
                return snapshot.service_power_w.get(service.id)
            total += reading.power_w
        return total

    def cycle(
        self,
        snapshot: TelemetrySnapshot,
        now_s: float,
        stops_undelivered: frozenset[str] = frozenset(),
    ) -> CycleOutcome:
        """Learn, guard, decide: one control cycle. `stops_undelivered`: the services whose
        stop, sent after the last cycle, failed to reach their agent or stop action."""
        site = self.site
        ups_ids = tuple(u.id for u in site.ups)
        draw_w = {s.id: self._service_draw_w(snapshot, s) for s in site.services}
        outlet_w = {
            o: r.power_w
            for o, r in snapshot.outlets.items()
            if r.available and r.power_w is not None and o in site.outlet_by_id
        }
        ups_w = {
            u: r.output_w
            for u, r in snapshot.ups.items()
            if r.available and r.output_w is not None and u in ups_ids
        }

        ups_readings: dict[str, UpsReading] = {}
        for ups_id in ups_ids:
            reading = snapshot.ups.get(ups_id)
            if reading is None or not reading.available:
                ups_readings[ups_id] = UpsReading(None, None, None)
                continue
            soc = None if reading.soc_pct is None else reading.soc_pct / 100.0
            ups_readings[ups_id] = UpsReading(
                soc,
                reading.runtime_s,
                reading.output_w,
                on_battery=_on_battery(reading),
                low_battery=reading.low_battery or reading.forced_shutdown,
            )

        readings = Readings(
            now_s=now_s,
            mains_on=_mains_on(snapshot, ups_ids),
            ups=ups_readings,
            service_draw_w=draw_w,
            outlet_on={
                o: (r.is_on if r.available else None)
                for o, r in snapshot.outlets.items()
                if o in site.outlet_by_id
            },
            outlet_w=outlet_w,
            ups_w=ups_w,
            unmanaged_w={o: outlet_w.get(o, 0.0) for o in site.unmanaged_outlets},
            no_stop_channel=self._no_stop_channel,
            stops_undelivered=stops_undelivered,
        )
        decider = self.decider
        before = decider.state.mode
        cycle = decider.decide(readings)
        result, decision, telemetry, node_w = cycle.step, cycle.guard, cycle.telemetry, cycle.node_w
        predicted = tuple(
            risk
            for node_id, risk in decision.risks.items()
            if risk.level is not OverloadLevel.NORMAL and node_id not in self._warned_nodes
        )
        self._warned_nodes = {
            n for n, r in decision.risks.items() if r.level is not OverloadLevel.NORMAL
        }
        # On battery the view shows the plan the controller acted on; where it made none (on
        # mains, in the final shutdown) the view's is the plan if the outage goes on, or if
        # mains failed now.
        plan = (
            result.plan
            if result.plan is not None
            else decider.plan(now_s=now_s, demand_w=telemetry.demand_w)
        )
        self.view = self._view(snapshot, now_s, telemetry, decision, node_w, draw_w, plan)
        return CycleOutcome(
            view=self.view,
            commands=result.commands,
            faults=result.faults,
            overloads_predicted=predicted,
            mode_changed=result.state.mode is not before,
        )

    # --- plans ------------------------------------------------------------------------------

    def simulate_outage(self, now_s: float, duration_s: float) -> dict[str, Any]:
        """What the plan does if mains fails now and stays off for `duration_s`.

        The plan is made knowing the duration (as the oracle policy does), from the present
        charge and forecasts; steps due after mains returns never happen.
        """
        running = self.decider.running()
        known = OutagePrior(
            momentary_ratio=0.0,
            sustained_median_s=max(1.0, duration_s),
            sustained_sigma=KNOWN_OUTAGE_SIGMA,
        )
        plan = self.decider.plan(known.given(0.0))
        timeline: list[dict[str, Any]] = []
        tier_runtime: dict[str, float] = {}
        final_s: float | None = None
        if plan is not None:
            timeline = [
                {
                    "at_s": round(step.at_s, 1),
                    "service": step.service_id,
                    "action": step.action,
                    "cap_w": step.cap_w,
                    "reason": step.reason,
                }
                for step in plan.steps
                if step.at_s <= duration_s
            ]
            tier_runtime = {
                tier.value: round(min(runtime_s, duration_s), 1)
                for tier, runtime_s in plan.tier_runtime_s.items()
                if any(self.site.service_by_id[s].priority is tier for s in running)
            }
            final_s = plan.final_shutdown_at_s if plan.final_shutdown_at_s <= duration_s else None
        stopped = {step["service"] for step in timeline if step["action"] == "shutdown"}
        return {
            "duration_s": duration_s,
            "timeline": timeline,
            "tier_runtime_s": tier_runtime,
            "final_shutdown_at_s": None if final_s is None else round(final_s, 1),
            "survives": sorted(running - stopped),
            "shut_down": sorted(stopped),
            "soc_pct": {u: round(100.0 * s, 1) for u, s in self.decider.state.soc_ratio.items()},
        }

    # --- the view ---------------------------------------------------------------------------

    def _view(
        self,
        snapshot: TelemetrySnapshot,
        now_s: float,
        telemetry: Telemetry,
        decision: GuardDecision,
        node_w: Mapping[str, float],
        draw_w: Mapping[str, float | None],
        plan: Plan | None,
    ) -> SiteView:
        site = self.site
        state = self.decider.state
        # What is held on, and what it needs, is never stopped (I8): not part of the plan shown.
        kept_on = site.graph.dependency_closure(state.held_on)
        steps = () if plan is None else tuple(s for s in plan.steps if s.service_id not in kept_on)
        critical_runtime = None if plan is None else plan.tier_runtime_s[Priority.CRITICAL]
        shed_in = (
            {} if plan is None else {k: v for k, v in plan.stop_at_s.items() if k not in kept_on}
        )
        ups: dict[str, UpsView] = {}
        budget_w = 0.0
        for u in site.ups:
            reading = snapshot.ups.get(u.id)
            soc = state.soc_ratio.get(u.id)
            model = self.decider.controller.batteries[u.id]
            load_w = node_w.get(u.id, 0.0)
            energy_wh = None if soc is None else model.energy_left_wh(soc, load_w)
            last_stop = max(
                (shed_in[s.id] for s in site.services if s.id in shed_in and self._feeds(u.id, s)),
                default=None,
            )
            shown = reading if reading is not None and reading.available else None
            ups[u.id] = UpsView(
                available=shown is not None,
                on_battery=None if shown is None else shown.on_battery,
                low_battery=None if shown is None else shown.low_battery,
                soc_pct=None if shown is None else shown.soc_pct,
                runtime_s=None if shown is None else shown.runtime_s,
                predicted_runtime_s=None
                if last_stop is None or math.isinf(last_stop)
                else last_stop,
                output_w=None if shown is None else shown.output_w,
                energy_left_wh=energy_wh,
            )
            if plan is not None and energy_wh is not None and plan.final_shutdown_at_s > 0:
                budget_w += min(u.rated_w, energy_wh * 3600.0 / plan.final_shutdown_at_s)
            else:
                budget_w += u.rated_w
        pdus = {}
        for pdu in site.pdus:
            readings = [snapshot.outlets.get(o.id) for o in pdu.outlets]
            available = any(r is not None and r.available for r in readings)
            power = node_w.get(pdu.id) if available else None
            risk = decision.risks.get(pdu.id)
            pdus[pdu.id] = PduView(
                available=available,
                power_w=power,
                limit_w=pdu.limit_w,
                headroom_w=None if power is None else pdu.limit_w - power,
                overload_level=(risk.level if risk else OverloadLevel.NORMAL).value,
                overload_probability=None if risk is None else risk.exceed_probability,
            )
        outlet_forecast = {
            o: points[0].mean_w
            for o, points in self.decider.nodes.forecasts().items()
            if points and o in site.outlet_by_id
        }
        outlets = {}
        for outlet_id in site.outlet_by_id:
            outlet = snapshot.outlets.get(outlet_id)
            available = outlet is not None and outlet.available
            service_id = site.service_by_outlet.get(outlet_id)
            forecast = outlet_forecast.get(outlet_id)
            if forecast is None and service_id is not None:
                service = site.service_by_id[service_id]
                forecast = telemetry.demand_w[service_id].mean_w / len(service.outlets)
            outlets[outlet_id] = OutletView(
                available=available,
                is_on=outlet.is_on if available and outlet else None,
                power_w=outlet.power_w if available and outlet else None,
                forecast_w=forecast,
                service_id=service_id,
            )
        services = {}
        for service in site.services:
            control = state.services[service.id]
            demand = telemetry.demand_w[service.id]
            held = (
                True
                if service.id in state.held_on
                else False
                if service.id in state.held_off
                else None
            )
            shed_at = shed_in.get(service.id)
            services[service.id] = ServiceView(
                priority=service.priority,
                state=allocation_state(control.phase, control.cap_w),
                reason=control.reason,
                power_w=draw_w.get(service.id),
                forecast_w=demand.mean_w,
                forecast_upper_w=demand.upper_w,
                cap_w=control.cap_w,
                held=held,
                planned_shed_in_s=None if shed_at is None or math.isinf(shed_at) else shed_at,
            )
        return SiteView(
            now_s=now_s,
            mode=state.mode,
            on_battery=telemetry.mains_on is False if telemetry.mains_on is not None else None,
            critical_runtime_s=(
                None
                if critical_runtime is None or math.isinf(critical_runtime)
                else critical_runtime
            ),
            budget_w=budget_w,
            plan=tuple(PlannedStep(s.at_s, s.service_id, s.action, s.reason) for s in steps),
            ups=ups,
            pdus=pdus,
            outlets=outlets,
            services=services,
            risks=decision.risks,
        )

    def _feeds(self, ups_id: str, service: Service) -> bool:
        return any(self.site.nodes_above_outlet(o)[2] == ups_id for o in service.outlets)
