"""The policies a simulation compares (DESIGN.md, "Scenario files").

- `none`: does nothing; the UPS runs until it dies.
- `nut`: NUT's upsmon: once a UPS reports low battery (runtime at most two minutes), every service
  is shut down, dependents first, and its outlets cut after its `shutdown_s`; outlets come back
  on, all at once, when mains returns.
- `static_timers`: APC PowerChute / Eaton IPM style: each tier is shed after a fixed time on
  battery, critical at low battery, with no idea of dependencies; everything is switched back on
  together a minute after mains returns.
- `seed_greedy`: the original concept's pseudocode, run every cycle, faithfully: sort by priority,
  budget = UPS rating x remaining runtime (watts times seconds), walk the services subtracting
  their draw (watts) from that budget, and throttle the first one that does not fit (stop it when
  it cannot be throttled). It ignores dependencies.
- `predictive`: this project's site decider (engine/decider.py), the very object the Home
  Assistant integration runs, on loads it forecasts online.
- `oracle`: the same decider told the true remaining outage and the true loads: the bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .allocator import Demand
from .battery import BatteryModel
from .controller import (
    Command,
    ControllerSettings,
    OutageController,
    Readings,
    StartService,
    StopService,
    SwitchOutlets,
    Throttle,
)
from .decider import SiteDecider, SiteSettings
from .demand import SERVICE_FORECAST_SETTINGS
from .model import Priority, Site
from .outage import ConditionalOutage, OutagePrior
from .scenario import Scenario
from .simulate import Observation, Policy

LOW_BATTERY_RUNTIME_S = 120.0  # APC's and NUT's default low-battery warning
STATIC_SHED_AFTER_S: Mapping[Priority, float] = {
    Priority.LOW: 120.0,
    Priority.MEDIUM: 300.0,
    Priority.HIGH: 900.0,
}
STATIC_RESTORE_DELAY_S = 60.0
ORACLE_LOOKAHEAD_S = 4 * 3600.0
# On mains, the oracle's loads are those of the span the integration's forecasts cover (an hour).
ORACLE_MAINS_LOOKAHEAD_S = (
    SERVICE_FORECAST_SETTINGS.step_s * SERVICE_FORECAST_SETTINGS.horizon_steps
)
ORACLE_SAMPLE_S = 60.0
# The oracle's outage "prior": the known duration, as a lognormal this narrow.
ORACLE_SIGMA = 0.02
NEVER_RETURNS_S = 10 * 86400.0  # within the outage prior's grid


def _low_battery(observation: Observation) -> bool:
    return observation.mains_on is False and any(
        reading.runtime_s is not None and reading.runtime_s <= LOW_BATTERY_RUNTIME_S
        for reading in observation.ups.values()
    )


class NonePolicy:
    """Does nothing."""

    name = "none"

    def decide(self, observation: Observation) -> Sequence[Command]:
        """Nothing, ever."""
        return ()


@dataclass(slots=True)
class _TimedStop:
    """A graceful stop on a timer: the outlets are cut `shutdown_s` after the request."""

    requested_s: float
    cut: bool = False


class _TimedStops:
    """Stops on timers, shared by `nut` and `static_timers` (neither watches the draw fall)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.stops: dict[str, _TimedStop] = {}

    def request(self, service_id: str, now_s: float, reason: str) -> list[Command]:
        if service_id in self.stops:
            return []
        self.stops[service_id] = _TimedStop(now_s)
        return [StopService(service_id, reason)]

    def cuts_due(self, now_s: float) -> list[Command]:
        commands: list[Command] = []
        for sid, stop in self.stops.items():
            service = self.site.service_by_id[sid]
            if not stop.cut and now_s - stop.requested_s >= service.shutdown_s:
                stop.cut = True
                commands.append(SwitchOutlets(sid, service.outlets, False, "shutdown_s has passed"))
        return commands

    def done(self, service_id: str, now_s: float) -> bool:
        stop = self.stops.get(service_id)
        return stop is not None and stop.cut

    def restore_all(self, reason: str) -> list[Command]:
        commands: list[Command] = [
            StartService(sid, self.site.service_by_id[sid].outlets, reason) for sid in self.stops
        ]
        self.stops.clear()
        return commands


class NutPolicy:
    """Everything down, dependents first, at low battery; everything on when mains returns."""

    name = "nut"

    def __init__(self, site: Site) -> None:
        self.site = site
        self.timed = _TimedStops(site)
        self.shutting_down = False

    def decide(self, observation: Observation) -> Sequence[Command]:
        """See the module docstring."""
        now_s = observation.now_s
        if observation.mains_on is True and self.timed.stops:
            self.shutting_down = False
            return self.timed.restore_all("mains returned: the UPS powers its outlets again")
        if _low_battery(observation):
            self.shutting_down = True
        if not self.shutting_down:
            return ()
        commands = self.timed.cuts_due(now_s)
        graph = self.site.graph
        for sid in graph.shutdown_order():
            if all(self.timed.done(d, now_s) for d in graph.dependents(sid)):
                commands += self.timed.request(sid, now_s, "low battery: forced shutdown")
        return commands


class StaticTimersPolicy:
    """Each tier shed after a fixed time on battery; critical at low battery."""

    name = "static_timers"

    def __init__(self, site: Site) -> None:
        self.site = site
        self.timed = _TimedStops(site)
        self.outage_started_s: float | None = None
        self.mains_back_s: float | None = None

    def decide(self, observation: Observation) -> Sequence[Command]:
        """See the module docstring."""
        now_s = observation.now_s
        if observation.mains_on is True:
            self.outage_started_s = None
            if not self.timed.stops:
                return ()
            if self.mains_back_s is None:
                self.mains_back_s = now_s
            if now_s - self.mains_back_s < STATIC_RESTORE_DELAY_S:
                return ()
            self.mains_back_s = None
            return self.timed.restore_all("mains is back: every group switched on")
        if observation.mains_on is False and self.outage_started_s is None:
            self.outage_started_s = now_s
            self.mains_back_s = None
        if self.outage_started_s is None:
            return ()
        on_battery_s = now_s - self.outage_started_s
        low = _low_battery(observation)
        commands = self.timed.cuts_due(now_s)
        for service in self.site.services:
            after_s = STATIC_SHED_AFTER_S.get(service.priority)
            if (after_s is not None and on_battery_s >= after_s) or low:
                commands += self.timed.request(
                    service.id, now_s, f"{service.priority.value} tier timer on battery"
                )
        return commands


class SeedGreedyPolicy:
    """The original concept's pseudocode, run every cycle (see the module docstring)."""

    name = "seed_greedy"

    def __init__(self, site: Site) -> None:
        self.site = site
        self.acted: set[str] = set()

    def decide(self, observation: Observation) -> Sequence[Command]:
        """See the module docstring."""
        if observation.mains_on is True:
            commands: list[Command] = []
            for sid in sorted(self.acted):
                service = self.site.service_by_id[sid]
                commands.append(Throttle(sid, None, "mains is back"))
                if service.throttle_min_w is None:
                    commands.append(StartService(sid, service.outlets, "mains is back"))
            self.acted.clear()
            return commands
        if observation.mains_on is not False:
            return ()
        # budget = UPS capacity x remaining runtime: watt-seconds, as the pseudocode has it.
        budget = sum(
            ups.rated_w * (observation.ups[ups.id].runtime_s or 0.0) for ups in self.site.ups
        )
        by_priority = sorted(self.site.services, key=lambda s: -s.priority.rank)
        for service in by_priority:
            draw_w = observation.service_draw_w.get(service.id) or 0.0
            if draw_w <= budget:
                budget -= draw_w
                continue
            if service.id in self.acted:
                return ()
            self.acted.add(service.id)
            reason = "does not fit the budget (UPS capacity x remaining runtime)"
            if service.throttle_min_w is not None:
                return [Throttle(service.id, service.throttle_min_w, reason)]
            return [StopService(service.id, reason)]
        return ()


class PredictivePolicy:
    """The site's decider, as the integration runs it, on loads it forecasts online."""

    name = "predictive"

    def __init__(self, decider: SiteDecider) -> None:
        self.decider = decider

    def decide(self, observation: Observation) -> Sequence[Command]:
        """One cycle of the decider on what a real installation would read."""
        cycle = self.decider.decide(readings_of(observation), self.known_demand_w())
        return cycle.step.commands

    def known_demand_w(self) -> dict[str, Demand] | None:
        """The loads if known beforehand; None: each service's forecast (engine/demand.py), as
        the Home Assistant integration has."""
        return None


def readings_of(observation: Observation) -> Readings:
    """What the decider is handed: the observation less the truth only an oracle may use."""
    return Readings(
        now_s=observation.now_s,
        mains_on=observation.mains_on,
        ups=observation.ups,
        service_draw_w=observation.service_draw_w,
        outlet_on=observation.outlet_on,
        outlet_w={o: w for o, w in observation.outlet_draw_w.items() if w is not None},
        ups_w={u: r.output_w for u, r in observation.ups.items() if r.output_w is not None},
        unmanaged_w=observation.unmanaged_w,
    )


class _KnownOutageController(OutageController):
    """A controller that knows when mains returns: its prior is the true outage, nearly exact."""

    def __init__(
        self,
        site: Site,
        batteries: Mapping[str, BatteryModel],
        prior: OutagePrior,
        settings: ControllerSettings,
        current_outage_s: Callable[[], tuple[float, float, float]],
    ) -> None:
        super().__init__(site, batteries, prior, settings)
        self.current_outage_s = current_outage_s
        self._priors: dict[float, OutagePrior] = {}

    def outage_given(self, elapsed_s: float) -> ConditionalOutage:
        start_s, end_s, now_s = self.current_outage_s()
        duration_s = min(end_s - start_s, NEVER_RETURNS_S)
        prior = self._priors.get(duration_s)
        if prior is None:
            prior = OutagePrior(
                momentary_ratio=0.0,
                sustained_median_s=max(1.0, duration_s),
                sustained_sigma=ORACLE_SIGMA,
            )
            self._priors[duration_s] = prior
        return prior.given(now_s - start_s)


class OraclePolicy(PredictivePolicy):
    """The controller with the true remaining outage and the true loads."""

    name = "oracle"

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.now_s = 0.0

        def knowing_the_outage(
            site: Site,
            batteries: Mapping[str, BatteryModel],
            prior: OutagePrior,
            settings: ControllerSettings,
        ) -> OutageController:
            return _KnownOutageController(site, batteries, prior, settings, self._current_outage_s)

        super().__init__(SiteDecider(scenario.site, controller_factory=knowing_the_outage))
        self._demand_cache: tuple[float, dict[str, Demand]] | None = None

    def _current_outage_s(self) -> tuple[float, float, float]:
        return self._outage_at(self.now_s)

    def _outage_at(self, now_s: float) -> tuple[float, float, float]:
        """(start, end, now) of the outage under way; a zero-length one when there is none."""
        for start_s, end_s in self.scenario.timeline.outages_s:
            if start_s <= now_s < end_s:
                return start_s, end_s, now_s
        return now_s, now_s, now_s

    def decide(self, observation: Observation) -> Sequence[Command]:
        """As the controller, knowing the future."""
        self.now_s = observation.now_s
        return super().decide(observation)

    def known_demand_w(self) -> dict[str, Demand] | None:
        """The true loads (`true_demand_w`) now."""
        return self.true_demand_w(self.now_s)

    def true_demand_w(self, now_s: float) -> dict[str, Demand]:
        """The true mean and peak of each load over the rest of the outage under way at `now_s`,
        and on mains over the hour ahead (the span the integration's forecasts cover): the
        instant alone let a restore start what the load's next peak did not fit."""
        if self._demand_cache is not None and 0.0 <= now_s - self._demand_cache[0] < 60.0:
            return self._demand_cache[1]
        _, outage_end_s, _ = self._outage_at(now_s)
        if outage_end_s > now_s:
            end_s = min(outage_end_s, now_s + ORACLE_LOOKAHEAD_S)
        else:
            end_s = now_s + ORACLE_MAINS_LOOKAHEAD_S
        count = max(1, math.ceil((end_s - now_s) / ORACLE_SAMPLE_S))
        times = [now_s + i * ORACLE_SAMPLE_S for i in range(count)]
        demand = {}
        for sid in self.scenario.site.service_by_id:
            values = [self.scenario.demand_w(sid, t) for t in times]
            demand[sid] = Demand(sum(values) / len(values), max(values))
        self._demand_cache = (now_s, demand)
        return demand


POLICY_NAMES = ("none", "nut", "static_timers", "seed_greedy", "predictive", "oracle")


def make_policy(name: str, scenario: Scenario, prior: OutagePrior | None = None) -> Policy:
    """A fresh policy for one run of `scenario`; `prior` is `predictive`'s (None: the default)."""
    site = scenario.site
    factories: dict[str, Callable[[], Policy]] = {
        "none": NonePolicy,
        "nut": lambda: NutPolicy(site),
        "static_timers": lambda: StaticTimersPolicy(site),
        "seed_greedy": lambda: SeedGreedyPolicy(site),
        "predictive": lambda: PredictivePolicy(
            SiteDecider(site, SiteSettings(prior=prior or OutagePrior()))
        ),
        "oracle": lambda: OraclePolicy(scenario),
    }
    if name not in factories:
        raise ValueError(f"unknown policy {name!r} ({', '.join(POLICY_NAMES)})")
    return factories[name]()
