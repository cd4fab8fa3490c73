"""A deterministic, time-stepped run of a scenario under a policy, and its report.

The site's physics is `plant.SimulatedSite`; a policy sees what a real installation would read
(through the scenario's faults: gaps, a UPS runtime that jumps) and answers with controller
commands, which are carried out on the plant (or lost, or ignored by a stuck outlet). History runs
at a coarse step (policies learn their loads there); from the first outage on, the physics runs at
the scenario's step and the policy decides every `cycle_s`. The run ends `tail_s` after mains
last returns (when it never returns: once no service has been up for `NEVER_RETURNS_DARK_S`, or
after `NEVER_RETURNS_MAX_S`).

The report is DESIGN.md's "Scenario files" report. Everything is measured at every step of the
whole run, history included (at its coarser step); a service is *up* while it runs (throttled
counts, booting and stopping do not) and *down* otherwise, from its stop or power loss until it
runs again, also after mains returns: a stop costs its restart.

Per service:
- `uptime_s`, `demand_s`: seconds up, and seconds wanted, over the *scored window*: from the
  first outage's start to the end of the run (a restore still under way at the end is down);
- `interruptions` (up -> down), `clean_shutdown` (None if it never went down, else whether it
  never lost power while its OS was up), `unclean_power_loss`: over the whole run;
- `longest_mains_downtime_s`: the most time on mains within one stretch of being down (a stop
  on mains and what it takes to come back; after an outage, the restore).

Per tier: `uptime_ratio`, its services' uptime over their demand (None: no window, or no service).

Site:
- `weighted_score`: sum of weight x uptime over sum of weight x demand, tier weights critical
  1000, high 100, medium 10, low 1 (`planner.TIER_WEIGHTS`); 1.0 with no scored window;
- `mains_availability`: the same weights over the time on mains (history, between outages and
  after them): 1.0 when all ran all the time on mains (and with no time on mains);
- `mains_stops`: stops and caps (`StopService`, `Throttle` with a cap) carried out on mains that
  begin one: a stop of a service running or booting, a cap of one that had none;
- `false_mains_stops`: those after which no node would have gone above its limit within
  `FALSE_STOP_WINDOW_S` had the service been kept on: at every step of that window, every node
  above the service's outlets (outlet, PDU, UPS) draws what it measured plus what the service
  would have drawn and did not (its demand less its draw, split equally over its outlets), at
  most its limit (judged at the end of the run for a window cut short by it);
- `unclean_power_losses`, `dependency_violation_s` (a service up while a dependency is down) and
  `overload_s` (any node above its limit): over the whole run; `mains_overload_s`: the part of
  `overload_s` on mains;
- `trips`: how often a node's trip curve was crossed (`trips.TripCounter`), `mains_trips`: those
  in a step that began on mains;
- `unnecessary_sheds`: services stopped in an outage that ended while the battery could still
  have carried them to its end; `battery_end_pct`: the lowest charge when the last outage ended;
- and the decision log, each command with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .allocator import service_node_shares
from .battery import BatteryModel
from .controller import (
    Command,
    StartService,
    StopService,
    SwitchOutlets,
    Throttle,
    UpsReading,
)
from .forecast import node_draw_w
from .model import TIERS_MOST_IMPORTANT_FIRST, Site
from .planner import TIER_WEIGHTS
from .plant import ServiceMode, SimulatedSite, SiteSnapshot
from .scenario import Scenario
from .trips import OVER_LIMIT_TOLERANCE_W, TripCounter

HISTORY_STEP_S = 60.0
# A typical Home Assistant polling interval for a UPS and its PDUs.
CYCLE_S = 10.0
# After the last outage, long enough for a restore to finish: a restore waits for the pack to
# hold a clean shutdown's charge again. In the suite the longest took 65 minutes (deep-chain, a
# 1-hour outage); in the extra scenarios 15. What is still down at the end counts as down.
TAIL_S = 7200.0
# When mains never returns, the run stops once no service has been up for this long (or for
# `tail_s`, if shorter: nothing comes back), or after `NEVER_RETURNS_MAX_S`.
NEVER_RETURNS_DARK_S = 1800.0
NEVER_RETURNS_MAX_S = 12 * 3600.0
OVERLOAD_TOLERANCE_W = OVER_LIMIT_TOLERANCE_W
# A stop on mains is false if keeping the service on would have overloaded nothing this long.
FALSE_STOP_WINDOW_S = 1800.0
_UP_MODES = frozenset({ServiceMode.RUNNING, ServiceMode.STARTING, ServiceMode.STOPPING})
# What a stop or a cap on mains begins from: a service that is, or is becoming, up.
_STOPPABLE_MODES = frozenset({ServiceMode.RUNNING, ServiceMode.STARTING})


@dataclass(frozen=True, slots=True)
class Observation:
    """What a policy reads in one cycle, and the truth an oracle may use."""

    now_s: float
    mains_on: bool | None  # None during a telemetry gap
    ups: Mapping[str, UpsReading]
    service_draw_w: Mapping[str, float | None]
    outlet_on: Mapping[str, bool | None]
    outlet_draw_w: Mapping[str, float | None]  # what each outlet meters
    unmanaged_w: Mapping[str, float]
    truth: SiteSnapshot  # for the oracle only: every other policy must ignore it


class Policy(Protocol):
    """Anything that answers an observation with commands."""

    name: str

    def decide(self, observation: Observation) -> Sequence[Command]:
        """The commands to carry out now."""
        ...


@dataclass(frozen=True, slots=True)
class ServiceReport:
    """One service over the run (see the module docstring for each figure)."""

    uptime_s: float
    demand_s: float
    interruptions: int
    clean_shutdown: bool | None  # None: never went down
    unclean_power_loss: int
    longest_mains_downtime_s: float


@dataclass(frozen=True, slots=True)
class Report:
    """The report of one run (see the module docstring for each figure)."""

    scenario: str
    policy: str
    services: Mapping[str, ServiceReport]
    tier_uptime_ratio: Mapping[str, float | None]
    weighted_score: float
    mains_availability: float
    mains_stops: int
    false_mains_stops: int
    unclean_power_losses: int
    dependency_violation_s: float
    overload_s: float
    mains_overload_s: float
    trips: int
    mains_trips: int
    unnecessary_sheds: int
    battery_end_pct: float
    decisions: tuple[Mapping[str, Any], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return {
            "scenario": self.scenario,
            "policy": self.policy,
            "services": {
                sid: {
                    "uptime_s": r.uptime_s,
                    "demand_s": r.demand_s,
                    "interruptions": r.interruptions,
                    "clean_shutdown": r.clean_shutdown,
                    "unclean_power_loss": r.unclean_power_loss,
                    "longest_mains_downtime_s": r.longest_mains_downtime_s,
                }
                for sid, r in self.services.items()
            },
            "tiers": {tier: {"uptime_ratio": v} for tier, v in self.tier_uptime_ratio.items()},
            "site": {
                "weighted_score": self.weighted_score,
                "mains_availability": self.mains_availability,
                "mains_stops": self.mains_stops,
                "false_mains_stops": self.false_mains_stops,
                "unclean_power_losses": self.unclean_power_losses,
                "dependency_violation_s": self.dependency_violation_s,
                "overload_s": self.overload_s,
                "mains_overload_s": self.mains_overload_s,
                "trips": self.trips,
                "mains_trips": self.mains_trips,
                "unnecessary_sheds": self.unnecessary_sheds,
                "battery_end_pct": self.battery_end_pct,
            },
            "decisions": list(self.decisions),
        }


def simulate(
    scenario: Scenario,
    policy: Policy,
    *,
    cycle_s: float = CYCLE_S,
    history_step_s: float = HISTORY_STEP_S,
    tail_s: float = TAIL_S,
) -> Report:
    """Run `scenario` under `policy` and report."""
    return _Run(scenario, policy, cycle_s, history_step_s, tail_s).report()


@dataclass(frozen=True, slots=True)
class _PendingStop:
    """A stop or cap on mains not yet judged: false unless a node goes over before `until_s`."""

    service_id: str
    until_s: float


def observe(snapshot: SiteSnapshot, scenario: Scenario) -> Observation:
    """What the site's meters report at `snapshot`, with the scenario's faults active then."""
    t_s = snapshot.time_s
    faults = [f for f in scenario.timeline.faults if f.active_at(t_s)]
    gap = any(f.kind == "telemetry_gap" for f in faults)
    jumps = {f.target: f.factor for f in faults if f.kind == "ups_runtime_jump"}
    unmanaged = {o: snapshot.outlets[o].power_w for o in scenario.site.unmanaged_outlets}
    if gap:
        return Observation(
            now_s=t_s,
            mains_on=None,
            ups={u: UpsReading(None, None, None) for u in snapshot.ups},
            service_draw_w=dict.fromkeys(snapshot.services),
            outlet_on=dict.fromkeys(snapshot.outlets),
            outlet_draw_w=dict.fromkeys(snapshot.outlets),
            unmanaged_w=unmanaged,
            truth=snapshot,
        )
    return Observation(
        now_s=t_s,
        mains_on=snapshot.mains_on,
        ups={
            u: UpsReading(
                soc_ratio=s.soc_pct / 100.0,
                runtime_s=s.runtime_s * jumps.get(u, 1.0),
                output_w=s.output_w,
                on_battery=s.on_battery,
                low_battery=s.low_battery,
            )
            for u, s in snapshot.ups.items()
        },
        service_draw_w={sid: s.power_w for sid, s in snapshot.services.items()},
        outlet_on={o: s.is_on for o, s in snapshot.outlets.items()},
        outlet_draw_w={o: s.power_w for o, s in snapshot.outlets.items()},
        unmanaged_w=unmanaged,
        truth=snapshot,
    )


class _Run:
    def __init__(
        self,
        scenario: Scenario,
        policy: Policy,
        cycle_s: float,
        history_step_s: float,
        tail_s: float,
    ) -> None:
        self.scenario = scenario
        self.policy = policy
        self.site = scenario.site
        self.plant = SimulatedSite(scenario, start_s=0.0, follow_timeline=True)
        self.outages = scenario.timeline.outages_s
        self.first_s = self.outages[0][0] if self.outages else scenario.timeline.history_s
        self.decisions: list[dict[str, Any]] = []
        ids = list(self.site.service_by_id)
        self.weight = {s.id: TIER_WEIGHTS[s.priority] for s in self.site.services}
        self.limit_w = {n.id: n.limit_w for n in self.site.nodes if n.limit_w is not None}
        # The scored window (first outage to the end) and the time on mains, and each service's
        # share of them up.
        self.window_s = 0.0
        self.uptime_s = dict.fromkeys(ids, 0.0)
        self.mains_s = 0.0
        self.mains_up_s = dict.fromkeys(ids, 0.0)
        # Time on mains in each service's present stretch of being down, and its longest.
        self.down_mains_s = dict.fromkeys(ids, 0.0)
        self.longest_mains_down_s = dict.fromkeys(ids, 0.0)
        self.was_running = dict.fromkeys(ids, True)
        self.interruptions = dict.fromkeys(ids, 0)
        self.went_down = dict.fromkeys(ids, False)
        self.mains_stops = 0
        self.false_mains_stops = 0
        self.pending_stops: list[_PendingStop] = []
        self.shed_at_s: dict[str, float] = {}
        # Per step of the present outage: its length, each UPS's output, what each service shed
        # so far would draw and does not, and when the step began.
        self.outage_steps: list[tuple[float, list[float], dict[str, float], float]] = []
        self.dependency_violation_s = 0.0
        self.overload_s = 0.0
        self.mains_overload_s = 0.0
        self.trip_counter = TripCounter.for_site(self.site)
        self.trips = 0
        self.mains_trips = 0
        self.unnecessary = 0
        self.battery_end_soc = {u.id: 1.0 for u in self.site.ups}
        self._run(cycle_s, history_step_s, tail_s)

    # --- the loop ---------------------------------------------------------------------------

    def _run(self, cycle_s: float, history_step_s: float, tail_s: float) -> None:
        first_s = self.first_s
        last_end_s = self.outages[-1][1] if self.outages else first_s
        end_s = last_end_s + tail_s if math.isfinite(last_end_s) else first_s + NEVER_RETURNS_MAX_S
        dark_wait_s = min(tail_s, NEVER_RETURNS_DARK_S)
        step_s = self.scenario.step_s
        t_s = 0.0
        next_cycle_s = 0.0
        was_mains = True
        dark_since_s: float | None = None
        while t_s < end_s - 1e-9:
            # History: a coarse step and a decision at each; it ends exactly at the first outage.
            history = t_s < first_s - 1e-9
            dt_s = min(history_step_s, first_s - t_s) if history else step_s
            snapshot = self.plant.snapshot()
            if was_mains and not snapshot.mains_on:
                # Before this step's cycle: a shed decided in an outage's first cycle counts.
                self.shed_at_s = {}
                self.outage_steps = []
            if history or t_s >= next_cycle_s - 1e-9:
                self._cycle(snapshot)
                next_cycle_s = first_s if history else t_s + cycle_s
                snapshot = self.plant.snapshot()
            in_outage = not snapshot.mains_on
            if not was_mains and snapshot.mains_on:
                self._count_unnecessary(snapshot)
                self.battery_end_soc = {u: s.soc_pct / 100.0 for u, s in snapshot.ups.items()}
            was_mains = snapshot.mains_on
            self._measure(snapshot, t_s, dt_s, scored=not history)
            if in_outage:
                self._record_draw(snapshot, dt_s)
            if not math.isfinite(last_end_s):
                up = any(s.mode in _UP_MODES for s in snapshot.services.values())
                dark_since_s = None if up else (dark_since_s or t_s)
                if dark_since_s is not None and t_s - dark_since_s > dark_wait_s:
                    break
                self.battery_end_soc = {u: s.soc_pct / 100.0 for u, s in snapshot.ups.items()}
            self.plant.advance(dt_s)
            t_s = self.plant.time_s
        # A stop whose window the end of the run cut short is judged on what it saw.
        self.false_mains_stops += len(self.pending_stops)
        self.pending_stops = []

    def _cycle(self, snapshot: SiteSnapshot) -> None:
        observation = observe(snapshot, self.scenario)
        for command in self.policy.decide(observation):
            self._carry_out(command, snapshot)

    def _carry_out(self, command: Command, before: SiteSnapshot) -> None:
        """Carry out one command; `before` is the site as the policy saw it this cycle."""
        t_s = before.time_s
        faults = [f for f in self.scenario.timeline.faults if f.active_at(t_s)]
        lost = any(f.kind == "command_fails" and f.target == command.service_id for f in faults)
        stuck = {f.target for f in faults if f.kind == "outlet_stuck"}
        self.decisions.append(_logged(command, t_s, lost))
        if lost:
            return
        plant = self.plant
        if plant.mains_on and _begins_mains_stop(command, before):
            self.mains_stops += 1
            self.pending_stops.append(_PendingStop(command.service_id, t_s + FALSE_STOP_WINDOW_S))
        match command:
            case StopService(service_id=sid):
                plant.request_shutdown(sid)
                if not plant.mains_on:
                    self.shed_at_s.setdefault(sid, t_s)
            case SwitchOutlets(outlet_ids=outlets, on=on):
                for outlet in outlets:
                    if outlet not in stuck:
                        plant.set_outlet(outlet, on)
            case Throttle(service_id=sid, cap_w=cap_w):
                plant.throttle(sid, cap_w)
            case StartService(service_id=sid, outlet_ids=outlets):
                for outlet in outlets:
                    if outlet not in stuck:
                        plant.set_outlet(outlet, True)
                plant.request_start(sid)
                self.shed_at_s.pop(sid, None)

    # --- measuring --------------------------------------------------------------------------

    def _record_draw(self, snapshot: SiteSnapshot, dt_s: float) -> None:
        self.outage_steps.append(
            (
                dt_s,
                [snapshot.ups[u.id].output_w for u in self.site.ups],
                {
                    sid: max(0.0, snapshot.services[sid].demand_w - snapshot.services[sid].power_w)
                    for sid in self.shed_at_s
                },
                snapshot.time_s,
            )
        )

    def _outage_overlap_s(self, t_s: float, dt_s: float) -> float:
        """How much of the step [t, t + dt) is in an outage: the report's uptime is counted on
        it, so that a step across mains returning counts only its part before (an outage of 208 s
        at a 5-s step scored 210 s of uptime, a ratio above 1)."""
        return sum(
            max(0.0, min(end_s, t_s + dt_s) - max(start_s, t_s)) for start_s, end_s in self.outages
        )

    def _measure(self, snapshot: SiteSnapshot, t_s: float, dt_s: float, scored: bool) -> None:
        """The step [t, t + dt) as `snapshot` shows it; `scored`: inside the scored window."""
        outage_dt_s = self._outage_overlap_s(t_s, dt_s)
        mains_dt_s = dt_s - outage_dt_s
        window_dt_s = dt_s if scored else 0.0
        self.window_s += window_dt_s
        self.mains_s += mains_dt_s
        running = {sid: s.mode is ServiceMode.RUNNING for sid, s in snapshot.services.items()}
        for sid, now_running in running.items():
            if now_running:
                self.uptime_s[sid] += window_dt_s
                self.mains_up_s[sid] += mains_dt_s
                self.down_mains_s[sid] = 0.0
            else:
                if self.was_running[sid]:
                    self.interruptions[sid] += 1
                    self.went_down[sid] = True
                self.down_mains_s[sid] += mains_dt_s
                self.longest_mains_down_s[sid] = max(
                    self.longest_mains_down_s[sid], self.down_mains_s[sid]
                )
            self.was_running[sid] = now_running
        site = self.site
        if any(running[s.id] and not all(running[d] for d in s.depends_on) for s in site.services):
            self.dependency_violation_s += dt_s
        draw_w = node_draws_w(snapshot, site)
        if any(draw_w[n] > limit_w + OVERLOAD_TOLERANCE_W for n, limit_w in self.limit_w.items()):
            self.overload_s += dt_s
            self.mains_overload_s += mains_dt_s
        tripped = len(self.trip_counter.observe(draw_w, dt_s))
        self.trips += tripped
        if snapshot.mains_on:
            self.mains_trips += tripped
        self._judge_mains_stops(snapshot, draw_w)

    def _judge_mains_stops(self, snapshot: SiteSnapshot, draw_w: Mapping[str, float]) -> None:
        """Settle the stops on mains this step decides: justified once a node would have gone
        over with the service kept on, false once their window has passed without."""
        pending = []
        for stop in self.pending_stops:
            if snapshot.time_s >= stop.until_s:
                self.false_mains_stops += 1
                continue
            withheld_w = withheld_by_node_w(snapshot, self.site, stop.service_id)
            if not any(
                draw_w[node] + extra_w > self.limit_w[node] + OVERLOAD_TOLERANCE_W
                for node, extra_w in withheld_w.items()
                if node in self.limit_w
            ):
                pending.append(stop)
        self.pending_stops = pending

    def _count_unnecessary(self, snapshot: SiteSnapshot) -> None:
        """Sheds the battery could have carried to the end of the outage that just ended.

        Per UPS, the outage is replayed through the battery curve with the shed services kept on
        from their shed (drawing what they would have drawn), smallest energy first, for as many
        as leave the pack with charge at the end: a watt costs more charge at a heavier load
        (Peukert), so the energy left at the light load the sheds left behind would overstate it.
        """
        if not self.outage_steps:
            return
        dt_s = np.array([step[0] for step in self.outage_steps])
        at_s = np.array([step[3] for step in self.outage_steps])
        output_w = np.array([step[1] for step in self.outage_steps])
        for j, ups in enumerate(self.site.ups):
            state = snapshot.ups[ups.id]
            if not state.alive:
                continue
            model = BatteryModel.from_ups(ups)
            used = float(np.sum(dt_s / model.full_runtimes_s(output_w[:, j])))
            extra_by_cost = []
            for sid, shed_s in self.shed_at_s.items():
                share = self.site.ups_share(sid, ups.id)
                if share == 0:
                    continue
                withheld_w = np.array([step[2].get(sid, 0.0) for step in self.outage_steps])
                extra_w = np.where(at_s >= shed_s, share * withheld_w, 0.0)
                extra_by_cost.append((float(extra_w @ dt_s), sid, extra_w))
            load_w = output_w[:, j].copy()
            for _, _, extra_w in sorted(extra_by_cost, key=lambda item: item[:2]):
                load_w += extra_w
                kept_used = float(np.sum(dt_s / model.full_runtimes_s(load_w)))
                if state.soc_pct / 100.0 - (kept_used - used) <= 0:
                    break
                self.unnecessary += 1
        self.shed_at_s = {}
        self.outage_steps = []

    # --- the report -------------------------------------------------------------------------

    def report(self) -> Report:
        losses = self.plant.unclean_power_losses
        services = {
            sid: ServiceReport(
                uptime_s=self.uptime_s[sid],
                demand_s=self.window_s,
                interruptions=self.interruptions[sid],
                clean_shutdown=(losses[sid] == 0) if self.went_down[sid] else None,
                unclean_power_loss=losses[sid],
                longest_mains_downtime_s=self.longest_mains_down_s[sid],
            )
            for sid in self.uptime_s
        }
        tiers: dict[str, float | None] = {}
        for tier in TIERS_MOST_IMPORTANT_FIRST:
            members = [s.id for s in self.site.services if s.priority is tier]
            wanted = self.window_s * len(members)
            up = sum(self.uptime_s[sid] for sid in members)
            tiers[tier.value] = up / wanted if wanted > 0 else None
        return Report(
            scenario=self.scenario.name,
            policy=self.policy.name,
            services=services,
            tier_uptime_ratio=tiers,
            weighted_score=self._weighted(self.uptime_s, self.window_s),
            mains_availability=self._weighted(self.mains_up_s, self.mains_s),
            mains_stops=self.mains_stops,
            false_mains_stops=self.false_mains_stops,
            unclean_power_losses=sum(losses.values()),
            dependency_violation_s=self.dependency_violation_s,
            overload_s=self.overload_s,
            mains_overload_s=self.mains_overload_s,
            trips=self.trips,
            mains_trips=self.mains_trips,
            unnecessary_sheds=self.unnecessary,
            battery_end_pct=100.0 * min(self.battery_end_soc.values(), default=1.0),
            decisions=tuple(self.decisions),
        )

    def _weighted(self, up_s: Mapping[str, float], wanted_s: float) -> float:
        """Sum of weight x seconds up over sum of weight x seconds wanted; 1.0 if none wanted."""
        total = sum(self.weight.values()) * wanted_s
        return sum(self.weight[sid] * up_s[sid] for sid in up_s) / total if total > 0 else 1.0


def _logged(command: Command, t_s: float, lost: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "at_s": t_s,
        "service": command.service_id,
        "action": type(command).__name__,
        "reason": command.reason,
    }
    if isinstance(command, Throttle):
        entry["cap_w"] = command.cap_w
    if isinstance(command, SwitchOutlets):
        entry["on"] = command.on
    if lost:
        entry["lost"] = True
    return entry


def _begins_mains_stop(command: Command, before: SiteSnapshot) -> bool:
    """Whether `command` stops or caps a service that was up and uncapped when decided."""
    match command:
        case StopService(service_id=sid):
            return before.services[sid].mode in _STOPPABLE_MODES
        case Throttle(service_id=sid, cap_w=cap_w) if cap_w is not None:
            state = before.services[sid]
            return state.mode in _STOPPABLE_MODES and state.cap_w is None
    return False


def node_draws_w(snapshot: SiteSnapshot, site: Site) -> dict[str, float]:
    """What every outlet, PDU and UPS draws in `snapshot`."""
    return node_draw_w(
        site,
        {outlet_id: state.power_w for outlet_id, state in snapshot.outlets.items()},
        {ups_id: state.output_w for ups_id, state in snapshot.ups.items()},
    )


def withheld_by_node_w(snapshot: SiteSnapshot, site: Site, service_id: str) -> dict[str, float]:
    """What a service would draw and does not (stopped or capped), on every node above it: its
    demand less its draw, through each node's share of it (a service kept on would have had
    every outlet on)."""
    state = snapshot.services[service_id]
    withheld_w = max(0.0, state.demand_w - state.power_w)
    return {n: share * withheld_w for n, share in service_node_shares(site, service_id).items()}


def overloaded_nodes(snapshot: SiteSnapshot, site: Site) -> list[tuple[str, float, float]]:
    """The outlets, PDUs and UPS units above their limits: (node, watts, limit) each."""
    draw_w = node_draws_w(snapshot, site)
    return [
        (node.id, draw_w[node.id], node.limit_w)
        for node in site.nodes
        if node.limit_w is not None and draw_w[node.id] > node.limit_w + OVERLOAD_TOLERANCE_W
    ]
