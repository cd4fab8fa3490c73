"""One site's decider: everything that decides for a site, kept across cycles.

The Home Assistant integration (`site_control.SiteControl`) and the simulated `predictive` and
`oracle` policies (`engine/policies.py`) run this same object; they only translate their readings
into `Readings` and carry out the commands it returns. It owns what a site learns and decides:
each service's forecaster, each node's forecaster, each UPS's battery fit, the overload guard,
the outage controller (one for the site's lifetime, so that what it caches survives), the
controller's state with its holds, the administrator's tier changes, the outage prior (the site's
own, or the conservative one) and the outages the site has seen. `to_state` / `from_state` carry
all of it across a restart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .allocator import Allocation, Demand, allocate
from .battery import BatteryModel, PeukertFit, RuntimeReading
from .controller import (
    ControllerSettings,
    ControllerState,
    OutageController,
    Phase,
    Readings,
    UpsReading,
    ended_outage_s,
    hold,
    initial_state,
)
from .cycle import CycleResult, run_cycle
from .demand import ServiceDemand
from .evidence import DrawBelief, MainsBelief
from .forecast import ForecastSettings, NodeForecasters
from .model import Priority, Site
from .outage import ConditionalOutage, OutagePrior
from .overload import OverloadGuard
from .planner import RIDE_THROUGH_S, Plan

STATE_VERSION = 1
# A typical Home Assistant polling interval for a UPS and its PDUs: the decider's cycle.
CYCLE_S = 10.0
# The guard looks two minutes ahead (a graceful shutdown's time) in cycle-sized steps.
NODE_FORECAST_SETTINGS = ForecastSettings(step_s=CYCLE_S, horizon_steps=12)
# The site's own outages, for its Plan settings: enough for a median, few enough to show.
OUTAGES_KEPT = 100
# While the grid is in trouble (a storm warning, planned works), outages are seldom blips and last
# longer: the plan then sheds the lower tiers sooner and keeps more for the critical ones.
CONSERVATIVE_MOMENTARY_RATIO = 0.2
CONSERVATIVE_SUSTAINED_MEDIAN_S = 4 * 3600.0

ControllerFactory = Callable[
    [Site, Mapping[str, BatteryModel], OutagePrior, ControllerSettings], OutageController
]


def conservative_prior(usual: OutagePrior) -> OutagePrior:
    """The site's prior with fewer blips and longer outages, never more of one nor shorter."""
    return replace(
        usual,
        momentary_ratio=min(usual.momentary_ratio, CONSERVATIVE_MOMENTARY_RATIO),
        sustained_median_s=max(usual.sustained_median_s, CONSERVATIVE_SUSTAINED_MEDIAN_S),
    )


@dataclass(frozen=True, slots=True)
class SiteSettings:
    """What a site configures of its decisions (the Plan settings)."""

    prior: OutagePrior = field(default_factory=OutagePrior)
    ride_through_s: float = RIDE_THROUGH_S


class SiteDecider:
    """The decisions of one site: `decide` once per cycle, with that cycle's readings."""

    def __init__(
        self,
        site: Site,
        settings: SiteSettings | None = None,
        *,
        controller_factory: ControllerFactory = OutageController,
    ) -> None:
        self.base_site = site
        self.settings = settings or SiteSettings()
        self.normal_prior = self.settings.prior
        self.conservative_prior = conservative_prior(self.normal_prior)
        self._controller_factory = controller_factory
        self.priority_overrides: dict[str, Priority] = {}
        self.site = site
        ids = [s.id for s in site.services]
        self.demand = ServiceDemand(ids)
        self.nodes = NodeForecasters.for_site(site, NODE_FORECAST_SETTINGS)
        self.fits = {u.id: PeukertFit(BatteryModel.from_ups(u)) for u in site.ups}
        self.state: ControllerState = initial_state(site)
        self._conservative = False
        self.outages_s: list[float] = []
        self.guard = OverloadGuard(site)
        self.controller = self._new_controller()
        # Not kept across a restart: after one, mains is believed afresh (the outage under way
        # is in the controller's state, and an unknown mains state changes nothing).
        self.mains = MainsBelief()
        self.draws = DrawBelief()

    # --- configuration at run time ----------------------------------------------------------

    def _new_controller(self) -> OutageController:
        return self._controller_factory(
            self.site,
            self._batteries(),
            self.prior,
            ControllerSettings(cycle_s=CYCLE_S, ride_through_s=self.settings.ride_through_s),
        )

    def _batteries(self) -> dict[str, BatteryModel]:
        return {u: fit.model() for u, fit in self.fits.items()}

    @property
    def prior(self) -> OutagePrior:
        """The outage prior the plan uses now: the conservative one while it is switched on."""
        return self.conservative_prior if self._conservative else self.normal_prior

    @property
    def conservative(self) -> bool:
        """Whether the plan assumes long outages (a storm warning, planned works)."""
        return self._conservative

    @conservative.setter
    def conservative(self, on: bool) -> None:
        self._conservative = on
        self.controller = self._new_controller()

    def set_priority(self, service_id: str, priority: Priority) -> None:
        """Change a service's tier from now on (kept across restarts)."""
        if priority is self.base_site.service_by_id[service_id].priority:
            self.priority_overrides.pop(service_id, None)
        else:
            self.priority_overrides[service_id] = priority
        self._apply_overrides()

    def _apply_overrides(self) -> None:
        base = self.base_site
        self.site = (
            Site(
                ups=base.ups,
                pdus=base.pdus,
                services=tuple(
                    replace(s, priority=self.priority_overrides.get(s.id, s.priority))
                    for s in base.services
                ),
            )
            if self.priority_overrides
            else base
        )
        self.guard = OverloadGuard(self.site)
        self.controller = self._new_controller()

    def hold(self, service_id: str, on: bool | None) -> None:
        """Hold a service on or off (I8); None releases it. A conflict raises
        `HoldConflictError` (a `ValueError`) and changes nothing."""
        self.state = hold(self.site, self.state, service_id, on)

    def release_all(self) -> None:
        """Release every hold."""
        self.state = replace(
            self.state, held_on=frozenset(), held_off=frozenset(), found_off=frozenset()
        )

    # --- the cycle --------------------------------------------------------------------------

    def decide(
        self, readings: Readings, demand_w: Mapping[str, Demand] | None = None
    ) -> CycleResult:
        """Learn, guard, decide: one cycle. `demand_w` stands in for the forecasts (the
        oracle's true loads)."""
        self._learn_batteries(readings.ups)
        self.mains, unconfirmed = self.mains.observe(readings)
        steady = frozenset(s for s, c in self.state.services.items() if c.phase is Phase.ON)
        self.draws, draw_w, held_back = self.draws.observe(readings.service_draw_w, steady)
        cycle = run_cycle(
            self.site,
            self.controller,
            self.state,
            replace(
                readings,
                mains_on=self.mains.believed,
                mains_off_since_s=self.mains.run_since_s if self.mains.believed is False else None,
                service_draw_w=draw_w,
            ),
            (self.demand, self.nodes, self.guard),
            demand_w,
        )
        doubted = (*([] if unconfirmed is None else [unconfirmed]), *held_back)
        if doubted:
            step = cycle.step
            cycle = replace(cycle, step=replace(step, faults=(*doubted, *step.faults)))
        ended_s = ended_outage_s(self.state, cycle.step.state)
        if ended_s is not None:
            self.outages_s = [*self.outages_s, ended_s][-OUTAGES_KEPT:]
        self.state = cycle.step.state
        return cycle

    def _learn_batteries(self, ups: Mapping[str, UpsReading]) -> None:
        learnt = False
        for ups_id, reading in ups.items():
            fit = self.fits.get(ups_id)
            if fit is None or None in (reading.soc_ratio, reading.runtime_s, reading.output_w):
                continue
            learnt |= fit.learn_one(
                RuntimeReading(reading.output_w, reading.runtime_s, reading.soc_ratio)  # type: ignore[arg-type]
            )
        if learnt:
            self.controller.batteries = self._batteries()

    # --- plans ------------------------------------------------------------------------------

    def running(self) -> frozenset[str]:
        """What runs now, or will once started: what a plan has to decide about."""
        return frozenset(
            sid
            for sid, c in self.state.services.items()
            if c.phase in (Phase.ON, Phase.STARTING, Phase.PENDING_STOP)
        )

    def elapsed_s(self, now_s: float) -> float:
        """How long the outage under way has lasted; 0 on mains."""
        started = self.state.outage_started_s
        return 0.0 if started is None or self.state.mains_back_s is not None else now_s - started

    def plan(
        self,
        outage: ConditionalOutage | None = None,
        *,
        now_s: float = 0.0,
        demand_w: Mapping[str, Demand] | None = None,
    ) -> Plan | None:
        """The plan for what runs now under `outage` (by default the outage under way, or one
        beginning now, as the prior sees it); None when nothing runs. `demand_w`: the cycle's
        forecasts, when it has them (else they are computed anew)."""
        running = self.running()
        if not running:
            return None
        if outage is None:
            outage = self.controller.outage_given(self.elapsed_s(now_s))
        if demand_w is None:
            demand_w = self.demand.demand_w()
        return self.controller.plan(self.state.soc_ratio, demand_w, outage, running)

    def allocate_now(self) -> Allocation:
        """The allocation of this instant under every limit, holds included."""
        return allocate(
            self.site,
            self.demand.demand_w(),
            held_on=self.state.held_on,
            held_off=self.state.held_off,
        )

    # --- persistence ------------------------------------------------------------------------

    def powered_state(self) -> tuple[Any, ...]:
        """What decides what is powered: what is shed, held, capped or stopping, the mode and the
        outage under way, tiers and the plan's prior. A change of it must be on disk before the
        next cycle (I10); what is only learnt (forecasts, fits) may wait for the next save."""
        state = self.state
        return (
            state.mode,
            state.outage_started_s,
            state.mains_back_s,
            state.held_on,
            state.held_off,
            tuple(
                (sid, c.phase, c.cap_w, c.shed_in_outage, c.shed_for_limit_s)
                for sid, c in sorted(state.services.items())
            ),
            tuple(sorted(self.priority_overrides.items())),
            self._conservative,
        )

    def to_state(self) -> dict[str, Any]:
        """Everything learnt and decided, JSON-able."""
        return {
            "version": STATE_VERSION,
            "controller": self.state.to_dict(),
            "demand": self.demand.to_state(),
            "nodes": self.nodes.to_state(),
            "battery_fits": {u: fit.to_state() for u, fit in self.fits.items()},
            "priority_overrides": {s: p.value for s, p in self.priority_overrides.items()},
            "conservative": self._conservative,
            "outages_s": list(self.outages_s),
        }

    @classmethod
    def from_state(
        cls,
        site: Site,
        state: Mapping[str, Any] | None,
        settings: SiteSettings | None = None,
        *,
        controller_factory: ControllerFactory = OutageController,
    ) -> SiteDecider:
        """A decider for `site` resuming from `to_state`'s output. What the stored state says
        of services, nodes or UPS units the site no longer has is dropped; new ones start cold;
        a state of another version starts everything cold."""
        decider = cls(site, settings, controller_factory=controller_factory)
        stored = dict(state or {})
        if stored.get("version") != STATE_VERSION:
            return decider
        decider.priority_overrides = {
            sid: Priority(p)
            for sid, p in stored.get("priority_overrides", {}).items()
            if sid in site.service_by_id
        }
        ids = [s.id for s in site.services]
        decider.demand = ServiceDemand.from_state(stored.get("demand", {}), ids)
        nodes = NodeForecasters.from_state(stored.get("nodes", {}), NODE_FORECAST_SETTINGS)
        fresh = decider.nodes.by_node
        decider.nodes.by_node = {n: nodes.by_node.get(n) or fresh[n] for n in fresh}
        for ups_id, fit_state in stored.get("battery_fits", {}).items():
            if ups_id in decider.fits:
                decider.fits[ups_id].load_state(fit_state)
        decider._conservative = bool(stored.get("conservative", False))
        decider.outages_s = _outages_s(stored.get("outages_s"))
        decider._apply_overrides()
        decider.state = _restored_controller_state(decider.site, stored.get("controller"))
        return decider


def _restored_controller_state(site: Site, stored: Mapping[str, Any] | None) -> ControllerState:
    fresh = initial_state(site)
    if not stored:
        return fresh
    try:
        state = ControllerState.from_dict(stored)
    except (KeyError, TypeError, ValueError):
        return fresh
    # Services added to or removed from the topology since the state was saved.
    services = {sid: state.services.get(sid, fresh.services[sid]) for sid in fresh.services}
    known = frozenset(services)
    return replace(
        state,
        services=services,
        held_on=state.held_on & known,
        held_off=state.held_off & known,
        found_off=state.found_off & known,
        seen_off_since_s={k: v for k, v in state.seen_off_since_s.items() if k in known},
    )


def _outages_s(stored: Any) -> list[float]:
    """The outage lengths a stored state kept; whatever is not one is left out."""
    if not isinstance(stored, list):
        return []
    return [
        float(d)
        for d in stored[-OUTAGES_KEPT:]
        if isinstance(d, int | float) and not isinstance(d, bool) and math.isfinite(d) and d >= 0
    ]
