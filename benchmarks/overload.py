"""Overload benchmark: does what ships keep every node within its limit, and stop nothing idly?

    python -m benchmarks.overload [--json] [--days-of-quiet D] [--only NAME] [--scenario FILE]

Replays scenario files (`benchmarks/data/overload_*.yaml`, DESIGN.md format) on the simulator's
`SimulatedSite`, with mains on throughout, once per policy:

- `none`: nothing is ever stopped or capped — the baseline, measured in the same run;
- `predictive`: the decision path that ships (`make_decider`: the simulation's `predictive`
  policy, the site's `SiteDecider` running `engine.cycle.run_cycle` with the service forecasters,
  the node forecasters, the overload guard and the outage controller carried across cycles, as
  the integration does), every telemetry cycle, its commands carried out on the site.

Every simulated step, each node's draw (outlets, PDUs, the UPS output) is checked against its
limit: `overload_s` counts the seconds any node spent above it, `trips` how often a node's trip
curve (UPS or breaker) would have opened. Every stop and every cap ordered on mains counts in
`mains_stops` — the allocator's and the guard's alike, whatever ordered it; one is false
(`false_mains_stops`) when, replaying the service kept on at its true draw (what it would have
drawn minus what it drew, added to each node above it), no node would have gone above its limit
within `FALSE_STOP_WINDOW_S`. `flaps` counts services stopped again within `FLAP_WINDOW_S` of
being started; `late_give_back_s` is the longest a service stopped on mains stayed down after
every node above it, with its true draw back, had fitted with the give-back margin (true draws,
so a noisy reading resets it: a lower bound on what the forecast saw). Stepping scenarios must end
with 0 overload seconds and 0 trips; the quiet week with no false stop.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from custom_components.power_allocation.drivers.native_stdout import keep_stdout_for_python
from custom_components.power_allocation.drivers.scenario_file import load_scenario
from custom_components.power_allocation.engine.allocator import service_node_shares
from custom_components.power_allocation.engine.controller import (
    Command,
    StartService,
    StopService,
    SwitchOutlets,
    Throttle,
)
from custom_components.power_allocation.engine.forecast import node_draw_w
from custom_components.power_allocation.engine.overload import (
    GIVE_BACK_MARGIN_RATIO,
    TRIP_CURVE_BY_KIND,
)
from custom_components.power_allocation.engine.policies import make_policy
from custom_components.power_allocation.engine.scenario import Scenario
from custom_components.power_allocation.engine.simulate import Policy, observe
from simulator.site import ServiceMode, SimulatedSite, SiteSnapshot

DATA = Path(__file__).parent / "data"
CYCLE_S = 10.0  # telemetry cycle: the decision path runs once per cycle
# A stop counts as needed if, without it, a node would have gone over within this time.
FALSE_STOP_WINDOW_S = 1800.0
# A service stopped again this soon after it was started has flapped (I5).
FLAP_WINDOW_S = 900.0
POLICIES = ("none", "predictive")
_UP = frozenset({ServiceMode.RUNNING, ServiceMode.STARTING})

_Floats = npt.NDArray[np.float64]


def make_decider(scenario: Scenario) -> Policy:
    """The decision path that ships, fresh for one run: the one place to swap it."""
    return make_policy("predictive", scenario)


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


@dataclass(frozen=True, slots=True)
class MainsStop:
    """A stop or a cap ordered on mains, and whether a node needed it."""

    at_s: float
    service_id: str
    kind: str  # "stop" or "cap"
    reason: str
    needed: bool


@dataclass(slots=True)
class PolicyRun:
    """One policy on one scenario."""

    policy: str
    simulated_s: float
    overload_s: float = 0.0
    overload_s_by_node: dict[str, float] = field(default_factory=dict)
    trips: int = 0
    overload_onsets_s: dict[str, list[float]] = field(default_factory=dict)
    mains_stops: list[MainsStop] = field(default_factory=list)
    flaps: int = 0
    late_give_back_s: float = 0.0

    @property
    def false_mains_stops(self) -> int:
        """Stops and caps on mains that no node needed."""
        return sum(not stop.needed for stop in self.mains_stops)


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """All policies on one scenario."""

    name: str
    stepping: bool
    simulated_days: float
    runs: dict[str, PolicyRun]


def carry_out(simulated: SimulatedSite, command: Command) -> None:
    """A command on the simulated site, as the integration's drivers would."""
    match command:
        case StopService(service_id=sid):
            simulated.request_shutdown(sid)
        case SwitchOutlets(outlet_ids=outlets, on=on):
            for outlet in outlets:
                simulated.set_outlet(outlet, on)
        case Throttle(service_id=sid, cap_w=cap_w):
            simulated.throttle(sid, cap_w)
        case StartService(service_id=sid, outlet_ids=outlets):
            for outlet in outlets:
                simulated.set_outlet(outlet, True)
            simulated.request_start(sid)


def needed_within(
    at_s: float,
    times_s: _Floats,
    node_w: Mapping[str, _Floats],
    limits_w: Mapping[str, float],
    shares: Mapping[str, float],
    missing_w: _Floats,
    window_s: float = FALSE_STOP_WINDOW_S,
) -> bool:
    """Whether, with a service's `missing_w` (what it would have drawn, minus what it drew)
    added back through its `shares`, a node would have gone above its limit in
    [at_s, at_s + window_s]."""
    span = (times_s >= at_s) & (times_s <= at_s + window_s)
    return any(
        bool(np.any(node_w[node_id][span] + share * missing_w[span] > limits_w[node_id]))
        for node_id, share in shares.items()
        if node_id in limits_w
    )


@dataclass(slots=True)
class _Trace:
    """Every step's time, limited node draw and each service's missing draw."""

    times_s: list[float] = field(default_factory=list)
    node_w: dict[str, list[float]] = field(default_factory=dict)
    missing_w: dict[str, list[float]] = field(default_factory=dict)

    def add(self, snapshot: SiteSnapshot, draw_w: Mapping[str, float]) -> None:
        self.times_s.append(snapshot.time_s)
        for node_id, values in self.node_w.items():
            values.append(draw_w[node_id])
        for sid, values in self.missing_w.items():
            state = snapshot.services[sid]
            values.append(max(0.0, state.demand_w - state.power_w))


def simulate(scenario: Scenario, policy: str, *, end_s: float) -> PolicyRun:
    """Runs `scenario` to `end_s` under `policy`."""
    site = scenario.site
    simulated = SimulatedSite(scenario)
    decider = make_decider(scenario) if policy != "none" else None
    kind_by_node = {n.id: n.kind for n in site.nodes}
    limit_by_node = {n.id: n.limit_w for n in site.nodes if n.limit_w is not None}
    shares_by_service = {sid: service_node_shares(site, sid) for sid in site.service_by_id}
    keep = 1.0 - GIVE_BACK_MARGIN_RATIO
    heat = dict.fromkeys(limit_by_node, 0.0)
    was_over = dict.fromkeys(limit_by_node, False)
    run = PolicyRun(policy, simulated_s=end_s, overload_s_by_node=dict.fromkeys(limit_by_node, 0.0))
    trace = _Trace(
        node_w={n: [] for n in limit_by_node}, missing_w={s: [] for s in site.service_by_id}
    )
    ordered: list[tuple[float, str, str, str]] = []
    started_at_s: dict[str, float] = {}
    down: set[str] = set()  # stopped on mains and not yet running again
    fits_since_s: dict[str, float] = {}
    step_s = scenario.step_s
    next_cycle_s = 0.0
    while simulated.time_s < end_s:
        simulated.advance(step_s)
        snapshot = simulated.snapshot()
        outlet_w = {o: state.power_w for o, state in snapshot.outlets.items()}
        draw = node_draw_w(site, outlet_w, {u: s.output_w for u, s in snapshot.ups.items()})
        trace.add(snapshot, draw)
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
        for sid in list(down):
            state = snapshot.services[sid]
            if state.mode in _UP and state.cap_w is None:
                down.discard(sid)
                fits_since_s.pop(sid, None)
                continue
            back_w = state.demand_w - state.power_w
            if all(
                draw[n] + share * back_w <= keep * limit_by_node[n]
                for n, share in shares_by_service[sid].items()
                if n in limit_by_node
            ):
                since_s = fits_since_s.setdefault(sid, snapshot.time_s)
                run.late_give_back_s = max(run.late_give_back_s, snapshot.time_s - since_s)
            else:
                fits_since_s.pop(sid, None)
        if decider is None or snapshot.time_s < next_cycle_s:
            continue
        next_cycle_s = snapshot.time_s + CYCLE_S
        for command in decider.decide(observe(snapshot, scenario)):
            carry_out(simulated, command)
            if isinstance(command, StartService):
                started_at_s[command.service_id] = snapshot.time_s
            elif snapshot.mains_on and (
                isinstance(command, StopService)
                or (isinstance(command, Throttle) and command.cap_w is not None)
            ):
                sid = command.service_id
                kind = "stop" if isinstance(command, StopService) else "cap"
                ordered.append((snapshot.time_s, sid, kind, command.reason))
                down.add(sid)
                if kind == "stop" and snapshot.time_s - started_at_s.get(sid, -math.inf) < (
                    FLAP_WINDOW_S
                ):
                    run.flaps += 1
    times_s = np.asarray(trace.times_s)
    node_w = {n: np.asarray(v) for n, v in trace.node_w.items()}
    run.mains_stops = [
        MainsStop(
            at_s,
            sid,
            kind,
            reason,
            needed_within(
                at_s,
                times_s,
                node_w,
                limit_by_node,
                shares_by_service[sid],
                np.asarray(trace.missing_w[sid]),
            ),
        )
        for at_s, sid, kind, reason in ordered
    ]
    return run


def run_case(case: ScenarioCase, *, end_s: float | None = None) -> ScenarioResult:
    """Every policy on one scenario; `end_s` cuts it short (default: its history_s)."""
    scenario = load_scenario(case.path)
    end = end_s if end_s is not None else scenario.timeline.history_s
    runs = {p: simulate(scenario, p, end_s=end) for p in POLICIES}
    return ScenarioResult(
        name=case.name, stepping=case.stepping, simulated_days=end / 86400.0, runs=runs
    )


def format_table(results: Sequence[ScenarioResult]) -> str:
    """The human-readable report."""
    lines = [
        "| scenario | days | policy | overload s | trips | mains stops | false mains stops "
        "| flaps | late give-back s | stops (s: service, needed) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        for policy, run in result.runs.items():
            stops = ", ".join(
                f"{s.at_s:.0f}: {s.service_id} {s.kind}{'' if s.needed else ' (false)'}"
                for s in run.mains_stops
            )
            lines.append(
                f"| {result.name} | {result.simulated_days:.2f} | {policy} | {run.overload_s:.0f} "
                f"| {run.trips} | {len(run.mains_stops)} | {run.false_mains_stops} | {run.flaps} "
                f"| {run.late_give_back_s:.0f} | {stops or '-'} |"
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
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **asdict(r),
                        "false_mains_stops": {
                            p: run.false_mains_stops for p, run in r.runs.items()
                        },
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    else:
        print(format_table(results))
    return results


if __name__ == "__main__":
    keep_stdout_for_python()
    main(sys.argv[1:])
