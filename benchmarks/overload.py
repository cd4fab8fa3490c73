"""Overload benchmark: does the guard shed before a breaker or the UPS would trip?

    python -m benchmarks.overload [--json] [--days-of-quiet D] [--only NAME] [--scenario FILE]

Replays scenario files (`benchmarks/data/overload_*.yaml`, DESIGN.md format) on the simulator's
`SimulatedSite`, with mains on throughout, once per policy:

- `none`: nothing is ever shed — the baseline, measured in the same run;
- `allocator`: every cycle the allocator keeps the sum of each service's forecast upper draw
  within every limit (I2), without the guard;
- `guard`: the same, plus the overload guard on each node's own forecast.

Every simulated step, each node's draw (outlets, PDUs, the UPS output) is checked against its
limit: `overload_s` counts the seconds any node spent above it, `trips` how often a node's trip
curve (UPS or breaker) would have opened. Each pre-emptive shed the guard starts is matched with
the first time that node went over its limit in the `none` run: its lead time is how much earlier
the guard acted; a shed with no overload of its node within `FALSE_SHED_WINDOW_S` is false.
Stepping scenarios must end with 0 overload seconds under the guard; the quiet week must have at
most one false pre-emptive shed per simulated week.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from custom_components.power_allocation.drivers.scenario_file import load_scenario
from custom_components.power_allocation.engine.allocator import Demand, ServiceState, allocate
from custom_components.power_allocation.engine.forecast import (
    ForecastSettings,
    LoadForecaster,
    NodeForecasters,
    node_draw_w,
)
from custom_components.power_allocation.engine.model import Site
from custom_components.power_allocation.engine.overload import (
    TRIP_CURVE_BY_KIND,
    GuardSettings,
    OverloadGuard,
)
from custom_components.power_allocation.engine.scenario import Scenario
from simulator.site import ServiceMode, SimulatedSite

DATA = Path(__file__).parent / "data"
WEEK_S = 7 * 86400.0
CYCLE_S = 10.0  # telemetry cycle: the guard and the forecasters run once per cycle
# A pre-emptive shed counts as justified if its node really went over within this time.
FALSE_SHED_WINDOW_S = 1800.0
POLICIES = ("none", "allocator", "guard")


@dataclass(frozen=True, slots=True)
class ScenarioCase:
    """A scenario file and what it tests."""

    name: str
    path: Path
    stepping: bool  # load steps push a node over; False: a quiet stretch of real load


CASES = (
    ScenarioCase("pdu-staircase", DATA / "overload_pdu_staircase.yaml", stepping=True),
    ScenarioCase("ups-ramp", DATA / "overload_ups_ramp.yaml", stepping=True),
    ScenarioCase("quiet-week", DATA / "overload_quiet_week.yaml", stepping=False),
)


@dataclass(slots=True)
class PolicyRun:
    """One policy on one scenario."""

    policy: str
    simulated_s: float
    overload_s: float = 0.0
    overload_s_by_node: dict[str, float] = field(default_factory=dict)
    trips: int = 0
    overload_onsets_s: dict[str, list[float]] = field(default_factory=dict)
    sheds_started: list[tuple[float, str]] = field(default_factory=list)
    services_shed: int = 0  # times a running service was told to stop


@dataclass(frozen=True, slots=True)
class ShedOutcome:
    """A pre-emptive shed: when, where, and how early it was."""

    at_s: float
    node_id: str
    lead_s: float | None  # None: its node did not go over near then in the `none` run: false


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """All policies on one scenario."""

    name: str
    stepping: bool
    simulated_days: float
    runs: dict[str, PolicyRun]
    guard_sheds: tuple[ShedOutcome, ...]
    false_sheds_per_week: float


def _demand(forecaster: LoadForecaster, fallback_w: float) -> Demand:
    points = forecaster.forecast()
    if not points:
        return Demand(fallback_w, fallback_w)
    # The highest of the lookahead: what the allocator must make room for.
    return Demand(max(0.0, *(p.mean_w for p in points)), max(0.0, *(p.upper_w for p in points)))


def simulate(
    scenario: Scenario, policy: str, *, end_s: float, guard_settings: GuardSettings
) -> PolicyRun:
    """Runs `scenario` to `end_s` under `policy`."""
    site: Site = scenario.site
    simulated = SimulatedSite(scenario)
    horizon = math.ceil(guard_settings.lookahead_s / CYCLE_S)
    settings = ForecastSettings(step_s=CYCLE_S, horizon_steps=horizon)
    nodes = NodeForecasters.for_site(site, settings)
    services = {sid: LoadForecaster(settings) for sid in site.service_by_id}
    guard = OverloadGuard(site, guard_settings)
    kind_by_node = {n.id: n.kind for n in site.nodes}
    limit_by_node = {n.id: n.limit_w for n in site.nodes if n.limit_w is not None}
    heat = dict.fromkeys(limit_by_node, 0.0)
    was_over = dict.fromkeys(limit_by_node, False)
    run = PolicyRun(policy, simulated_s=end_s, overload_s_by_node=dict.fromkeys(limit_by_node, 0.0))
    step_s = scenario.step_s
    next_cycle_s = 0.0
    while simulated.time_s < end_s:
        simulated.advance(step_s)
        snapshot = simulated.snapshot()
        outlet_w = {o: state.power_w for o, state in snapshot.outlets.items()}
        draw = node_draw_w(site, outlet_w, {u: s.output_w for u, s in snapshot.ups.items()})
        over = False
        for node_id, limit_w in limit_by_node.items():
            ratio = draw[node_id] / limit_w
            if ratio > 1.0:
                over = True
                run.overload_s_by_node[node_id] += step_s
                if not was_over[node_id]:
                    run.overload_onsets_s.setdefault(node_id, []).append(snapshot.time_s)
            was_over[node_id] = ratio > 1.0
            trip_s = TRIP_CURVE_BY_KIND[kind_by_node[node_id]].trip_after_s(ratio)
            heat[node_id] = heat[node_id] + step_s / trip_s if math.isfinite(trip_s) else 0.0
            if heat[node_id] >= 1.0:
                run.trips += 1
                heat[node_id] = 0.0
        run.overload_s += step_s if over else 0.0
        if snapshot.time_s < next_cycle_s or policy == "none":
            continue
        next_cycle_s = snapshot.time_s + CYCLE_S
        nodes.observe(snapshot.time_s, draw)
        for sid, state in snapshot.services.items():
            # A stopped or capped service's draw says nothing of its demand: its forecaster
            # keeps what it knew of it running free.
            if state.mode is ServiceMode.RUNNING and state.cap_w is None:
                services[sid].observe(snapshot.time_s, state.power_w)
        demand = {sid: _demand(services[sid], snapshot.services[sid].power_w) for sid in services}
        if policy == "guard":
            decision = guard.decide(snapshot.time_s, draw, nodes.by_node, demand)
            # With no shed under way the guard has nothing to say: what it released comes back.
            allocation = decision.allocation or allocate(site, demand)
            run.sheds_started.extend((snapshot.time_s, n) for n in decision.sheds_started)
        else:
            allocation = allocate(site, demand)
        for sid, decided in allocation.decisions.items():
            mode = snapshot.services[sid].mode
            if decided.state is ServiceState.OFF and mode is ServiceMode.RUNNING:
                simulated.request_shutdown(sid)
                run.services_shed += 1
            elif decided.state is not ServiceState.OFF and mode is ServiceMode.STOPPED:
                simulated.request_start(sid)
            if decided.state is ServiceState.THROTTLED:
                simulated.throttle(sid, decided.cap_w)
            elif decided.state is ServiceState.ON:
                simulated.throttle(sid, None)
            # Off keeps its cap: a host shutting down keeps drawing, and must stay capped.
    return run


def run_case(
    case: ScenarioCase, *, end_s: float | None = None, guard_settings: GuardSettings | None = None
) -> ScenarioResult:
    """Every policy on one scenario; `end_s` cuts it short (default: its history_s)."""
    scenario = load_scenario(case.path)
    end = end_s if end_s is not None else scenario.timeline.history_s
    settings = guard_settings or GuardSettings()
    runs = {p: simulate(scenario, p, end_s=end, guard_settings=settings) for p in POLICIES}
    onsets = runs["none"].overload_onsets_s
    outcomes = []
    for at_s, node_id in runs["guard"].sheds_started:
        near = [t for t in onsets.get(node_id, []) if abs(t - at_s) <= FALSE_SHED_WINDOW_S]
        # A negative lead: the node was already over (without the guard) when it acted.
        outcomes.append(ShedOutcome(at_s, node_id, near[0] - at_s if near else None))
    false_sheds = sum(o.lead_s is None for o in outcomes)
    return ScenarioResult(
        name=case.name,
        stepping=case.stepping,
        simulated_days=end / 86400.0,
        runs=runs,
        guard_sheds=tuple(outcomes),
        false_sheds_per_week=false_sheds * WEEK_S / end,
    )


def format_table(results: Sequence[ScenarioResult]) -> str:
    """The human-readable report."""
    lines = [
        "| scenario | days | policy | overload s | trips | services shed "
        "| pre-emptive sheds (lead s) | false sheds / week |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        for policy, run in result.runs.items():
            sheds = ""
            false_rate = ""
            if policy == "guard":
                sheds = ", ".join(
                    f"{o.node_id}@{o.at_s:.0f} "
                    + ("(false)" if o.lead_s is None else f"({o.lead_s:.0f})")
                    for o in result.guard_sheds
                )
                false_rate = f"{result.false_sheds_per_week:.2f}"
            lines.append(
                f"| {result.name} | {result.simulated_days:.2f} | {policy} | {run.overload_s:.0f} "
                f"| {run.trips} | {run.services_shed} | {sheds or '-'} | {false_rate or '-'} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[ScenarioResult]:
    """Command-line entry point; returns the results it printed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--days-of-quiet", type=float, help="shorten the quiet scenario (default: all of it)"
    )
    parser.add_argument("--only", help="run just this one of the built-in scenarios")
    parser.add_argument(
        "--scenario", type=Path, help="run this scenario file instead (stepping if it has steps)"
    )
    args = parser.parse_args(argv)
    cases: Sequence[ScenarioCase] = CASES
    if args.scenario:
        steps = load_scenario(args.scenario).timeline.load_steps
        cases = (ScenarioCase(args.scenario.stem, args.scenario, stepping=bool(steps)),)
    results = []
    for case in cases:
        if args.only and case.name != args.only:
            continue
        end_s = None if case.stepping or not args.days_of_quiet else args.days_of_quiet * 86400.0
        results.append(run_case(case, end_s=end_s))
    print(
        json.dumps([asdict(r) for r in results], indent=2) if args.json else format_table(results)
    )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
