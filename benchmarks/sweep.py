"""Random sites and outages: where a policy loses power uncleanly, breaks a dependency or
overloads a node, and whether a second policy (by default the oracle) avoids it.

    python -m benchmarks.sweep run --from A --to B --out DIR [--workers N] [--policies a,b]
                                   [--force] [--harsh]
    python -m benchmarks.sweep case FILE [--policies a,b] [--decisions] [--window-s 60]
    python -m benchmarks.sweep gen SEED [--harsh]
    python -m benchmarks.sweep summary DIR

`run` simulates seeds A..B-1 under each policy (default `predictive,oracle`) and appends one line
per seed to DIR/results.jsonl: the site's shape, each policy's figures (those of the policy
benchmark's table) and wall times, or the error a seed raised. Seeds already in results.jsonl are
skipped unless --force (a later line for a seed replaces an earlier one). Where the first policy
has unclean losses, dependency-violation seconds or overload seconds, or the seed raised, the
seed's scenario is saved as DIR/seed-N.json for `case`.

`case` runs one scenario file under each policy and prints its figures, each service's, and the
decision-log lines around each unclean loss, dependency violation and overload (--decisions: every
decision from the first outage on). `gen` prints one seed's scenario; `summary` counts DIR's seeds.

Scenarios are in the scenario-file format and load as a file in benchmarks/scenarios would (their
traces are `../data/...`), so a seed-N.json (JSON is YAML) copied there as seed-N.yaml joins the
policy benchmark. The integration under test is the one imported: run from the checkout to test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import random
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from benchmarks.policies import ORACLE_RATIO_TARGET, SCORE_TOLERANCE, Row, markdown, rows
from custom_components.power_allocation.drivers.bounded_yaml import load_bounded_yaml
from custom_components.power_allocation.drivers.native_stdout import keep_stdout_for_python
from custom_components.power_allocation.drivers.scenario_file import scenario_from_mapping
from custom_components.power_allocation.engine.controller import Command
from custom_components.power_allocation.engine.model import Site
from custom_components.power_allocation.engine.plant import ServiceMode, SiteSnapshot
from custom_components.power_allocation.engine.policies import POLICY_NAMES, make_policy
from custom_components.power_allocation.engine.scenario import Scenario
from custom_components.power_allocation.engine.simulate import (
    CYCLE_S,
    Observation,
    Policy,
    Report,
    overloaded_nodes,
    simulate,
)

SCENARIOS = Path(__file__).parent / "scenarios"
TRACE = "../data/uci_household_power_1min.csv"  # relative to SCENARIOS
TRACE_COLUMN = "active_power_w"
TRACE_SPAN_S = 14 * 86400  # the UCI slice: 14 days at one minute
DEFAULT_POLICIES = ("predictive", "oracle")
PRIORITIES = ("critical", "high", "medium", "low")
RANK = {"critical": 3, "high": 2, "medium": 1, "low": 0}
MAX_DEPENDENCY_DEPTH = 4
# Sizing a node's limit from its peak: demand sampled this often over the whole run.
PEAK_SAMPLE_S = 60.0
# A limit of 1 MW stands for none while the peaks are measured.
UNSIZED_W = 1e6
# A mains-never-returns outage is sized as if it lasted this long.
NEVER_RETURNS_SIZED_S = 12 * 3600
# The run goes on this long after mains returns (simulate's tail is shorter): sized for it too.
AFTER_OUTAGE_SIZED_S = 3600
# The figures the target wants at zero, as the summary labels them.
SAFETY_FIGURES = (
    ("unclean_power_losses", "unclean losses"),
    ("dependency_violation_s", "dependency-violation s"),
    ("overload_s", "overload s"),
)
# In `case`: how many spans of a violation or an overload are listed, and shown with decisions.
SPANS_LISTED = 12
# A span goes on over one cycle seen clean (the policy's cycles are CYCLE_S apart).
SPAN_GAP_S = 2 * CYCLE_S
SPANS_SHOWN = 6
HARSH_HELP = "small packs, long stops, a second outage soon after, faults"
UNCLEAN = "unclean loss"
DEPENDENCY = "dependency violation"
OVERLOAD = "overload"


# --- the generator ------------------------------------------------------------------------------


def gen(seed: int, *, harsh: bool = False) -> dict[str, Any]:
    """A random but plausible site and outage as a scenario mapping, the same for the same seed.

    UPS ratings and PDU limits are sized last, from each node's peak demand in the built scenario.
    `harsh`: packs that carry everything for 3 to 25 minutes, often part-charged, stops of up to
    5 minutes, a second outage soon after the first, and faults during the outage.
    """
    rng = random.Random(seed)
    ups = _ups_units(rng, harsh)
    pdus = _pdus(rng, ups)
    used = dict.fromkeys((p["id"] for p in pdus), 0)
    services = _services(rng, ups, pdus, used, harsh)
    if harsh:
        _shrink_packs(rng, ups, services)
    for pdu in pdus:
        pdu["outlets"] = used[pdu["id"]] + rng.randint(0, 3) or 1
    step_s = rng.choice((5, 10))
    config: dict[str, Any] = {
        "name": f"sweep-{seed}",
        "seed": seed,
        "step_s": step_s,
        "ups": ups,
        "pdus": pdus,
        "services": services,
        "timeline": _timeline(rng, services, harsh),
    }
    if harsh:
        config["timeline"]["events"] += _faults(rng, config)
    _size_limits(config, rng)
    return config


def load(config: Mapping[str, Any]) -> Scenario:
    """The scenario of a mapping, loaded as a file in benchmarks/scenarios would be."""
    return scenario_from_mapping(config, SCENARIOS, str(config.get("name", "scenario")))


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _ups_units(rng: random.Random, harsh: bool) -> list[dict[str, Any]]:
    units = []
    for i in range(1 if rng.random() < 0.7 else 2):
        unit: dict[str, Any] = {
            "id": f"ups{i + 1}",
            "capacity_wh": round(_log_uniform(rng, 150, 2000)),
            "rated_w": UNSIZED_W,
            "runtime_full_load_s": 600,  # sized with rated_w
            "peukert_k": round(rng.uniform(1.2, 1.6), 2),
            "efficiency": round(rng.uniform(0.85, 0.92), 3),
            "soc_start_pct": 100,
        }
        if rng.random() < (0.3 if harsh else 0.15):
            unit["soc_start_pct"] = round(rng.uniform(20, 60) if harsh else rng.uniform(8, 50), 1)
        units.append(unit)
    return units


def _shrink_packs(
    rng: random.Random, ups: Sequence[dict[str, Any]], services: Sequence[Mapping[str, Any]]
) -> None:
    """Packs whose energy carries the mean load for 3 to 25 minutes, in their proportions."""
    mean_w = sum(_mean_w(s["load"]) for s in services)
    wanted_wh = mean_w * _log_uniform(rng, 3.0, 25.0) / 60.0
    total_wh = sum(u["capacity_wh"] for u in ups)
    for unit in ups:
        unit["capacity_wh"] = max(20, round(unit["capacity_wh"] * wanted_wh / total_wh))


def _pdus(rng: random.Random, ups: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One PDU per UPS at least, three at most; the outlet counts are set once services are."""
    pdus = []
    for j in range(rng.randint(len(ups), 3)):
        owner = ups[j]["id"] if j < len(ups) else rng.choice(ups)["id"]
        pdus.append({"id": f"pdu-{'abc'[j]}", "ups": owner, "limit_w": UNSIZED_W, "outlets": 0})
    return pdus


def _take_outlet(used: dict[str, int], pdu_id: str) -> str:
    used[pdu_id] += 1
    return f"{pdu_id}/{used[pdu_id]}"


def _services(
    rng: random.Random,
    ups: Sequence[Mapping[str, Any]],
    pdus: Sequence[Mapping[str, Any]],
    used: dict[str, int],
    harsh: bool,
) -> list[dict[str, Any]]:
    """4 to 16 services, their mean loads summing to a fraction of the packs' energy per hour."""
    count = rng.randint(4, 16)
    tiers = [rng.choice(PRIORITIES) for _ in range(count)]
    # Mostly more important first (dependencies, on earlier services, point up the tiers), with
    # enough jitter that some services depend on a less important one.
    tiers.sort(key=lambda t: -(RANK[t] + rng.uniform(-1.2, 1.2)))
    energy_wh = sum(u["capacity_wh"] for u in ups)
    site_mean_w = min(1500.0, max(40.0, energy_wh * _log_uniform(rng, 0.2, 2.0)))
    weights = [rng.lognormvariate(0.0, 0.7) for _ in range(count)]
    services: list[dict[str, Any]] = []
    depth: dict[str, int] = {}
    for i, tier in enumerate(tiers):
        sid = f"s{i:02d}-{tier[:4]}"
        mean_w = max(5.0, site_mean_w * weights[i] / sum(weights))
        if len(pdus) >= 2 and rng.random() < 0.25:
            a, b = rng.sample(list(pdus), 2)
            outlets = [_take_outlet(used, a["id"]), _take_outlet(used, b["id"])]
        else:
            outlets = [_take_outlet(used, rng.choice(pdus)["id"])]
        deps: list[str] = []
        eligible = [s["id"] for s in services if depth[s["id"]] < MAX_DEPENDENCY_DEPTH]
        if eligible and rng.random() < 0.65:
            deps = rng.sample(eligible, min(len(eligible), rng.choice((1, 1, 1, 2, 2, 3))))
        depth[sid] = 1 + max((depth[d] for d in deps), default=0)
        load_model = _load_model(rng, mean_w)
        service: dict[str, Any] = {
            "id": sid,
            "priority": tier,
            "outlets": outlets,
            "shutdown_s": rng.randint(20, 300) if harsh else rng.randint(5, 180),
            "startup_s": rng.randint(10, 180),
            "idle_w": round(mean_w * rng.uniform(0.0, 0.12), 1),
            "load": load_model,
        }
        if deps:
            service["depends_on"] = deps
        if rng.random() < 0.3:
            service["throttle"] = {"min_w": round(mean_w * rng.uniform(0.3, 0.8), 1)}
        services.append(service)
    return services


def _load_model(rng: random.Random, mean_w: float) -> dict[str, Any]:
    """Constant, periodic, or a slice of the household trace, averaging `mean_w`."""
    kind = rng.random()
    if kind < 0.35:
        return {"constant_w": round(mean_w, 1)}
    if kind < 0.75:
        base_w = mean_w * rng.uniform(0.4, 0.95)
        return {
            "base_w": round(base_w, 1),
            "peak_w": round(2 * mean_w - base_w, 1),
            "period_s": rng.choice((1800, 3600, 7200, 21600, 86400)),
            "noise_ratio": round(rng.uniform(0.0, 0.15), 3),
        }
    return {
        "trace": TRACE,
        "column": TRACE_COLUMN,
        "mean_w": round(mean_w, 1),
        "offset_s": 60 * rng.randrange(TRACE_SPAN_S // 60),
    }


def _timeline(
    rng: random.Random, services: Sequence[Mapping[str, Any]], harsh: bool
) -> dict[str, Any]:
    """One outage after 2-4 h of history (enough for the 5-min service forecasters), sometimes
    never ending, sometimes followed by a flicker (harsh: more often, 2 to 20 minutes after);
    sometimes a load step early in it."""
    history_s = 600 * rng.randint(12, 24)
    events: list[dict[str, Any]] = []
    duration_s: float | None = None
    if rng.random() >= 0.12:
        duration_s = round(_log_uniform(rng, 300 if harsh else 30, 10800))
        if rng.random() < (0.5 if harsh else 0.3):
            after_s = _log_uniform(rng, 120, 1200) if harsh else _log_uniform(rng, 120, 3600)
            events.append(
                {
                    "at_s": history_s + duration_s + round(after_s),
                    "kind": "mains_flicker",
                    "duration_s": round(_log_uniform(rng, 30, 3600)),
                }
            )
    if rng.random() < 0.15:
        victim = rng.choice(services)
        events.append(
            {
                "at_s": history_s + rng.randint(0, 900),
                "kind": "load_step",
                "service": victim["id"],
                "extra_w": round(_mean_w(victim["load"]) * rng.uniform(0.5, 2.0), 1),
                "duration_s": rng.randint(300, 1800),
            }
        )
    return {
        "history_s": history_s,
        "outage_at_s": history_s,
        "outage_duration_s": duration_s,
        "events": events,
    }


def _faults(rng: random.Random, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One to three faults in the outage's first half hour: a telemetry gap, a service whose
    commands are lost, a stuck outlet, a UPS runtime reading that jumps."""
    start_s = config["timeline"]["outage_at_s"]
    faults: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 3)):
        at_s = start_s + rng.randint(0, 1800)
        kind = rng.choice(("telemetry_gap", "command_fails", "outlet_stuck", "ups_runtime_jump"))
        fault: dict[str, Any] = {"at_s": at_s, "kind": kind}
        if kind == "telemetry_gap":
            fault["duration_s"] = rng.randint(10, 120)
        elif kind == "command_fails":
            fault["service"] = rng.choice(config["services"])["id"]
            fault["duration_s"] = rng.randint(30, 600)
        elif kind == "outlet_stuck":
            fault["outlet"] = rng.choice(rng.choice(config["services"])["outlets"])
            fault["duration_s"] = rng.randint(60, 1200)
        else:
            fault["ups"] = rng.choice(config["ups"])["id"]
            fault["factor"] = round(_log_uniform(rng, 0.2, 3.0), 2)
            fault["duration_s"] = rng.randint(60, 600)
        faults.append(fault)
    return faults


def _mean_w(load_model: Mapping[str, Any]) -> float:
    if "constant_w" in load_model:
        return float(load_model["constant_w"])
    if "mean_w" in load_model:
        return float(load_model["mean_w"])
    return (float(load_model["base_w"]) + float(load_model["peak_w"])) / 2.0


def _size_limits(config: dict[str, Any], rng: random.Random) -> None:
    """UPS ratings and PDU limits from each node's peak: mostly with headroom, sometimes near
    the peak, now and then below it (something must be shed at times)."""
    peak_pdu_w, peak_ups_w = _peaks_w(config)
    for unit in config["ups"]:
        peak_w = max(peak_ups_w[unit["id"]], 50.0)
        if rng.random() < 0.1:
            rated_w = peak_w * rng.uniform(1.0, 1.1)
        else:
            rated_w = max(
                peak_w / rng.uniform(0.45, 0.9),
                min(3000.0, unit["capacity_wh"] * rng.uniform(0.8, 2.5)),
            )
        rated_w = round(rated_w, -1) + 10
        unit["rated_w"] = rated_w
        # A published full-load runtime is a fraction of what the pack's energy gives (Peukert).
        energy_s = unit["capacity_wh"] * unit["efficiency"] * 3600 / rated_w
        unit["runtime_full_load_s"] = max(60, round(energy_s * rng.uniform(0.3, 0.8)))
    for pdu in config["pdus"]:
        peak_w = peak_pdu_w[pdu["id"]]
        if peak_w <= 0:
            pdu["limit_w"] = 1000
            continue
        draw = rng.random()
        if draw < 0.08:
            ratio = rng.uniform(0.85, 1.0)
        elif draw < 0.38:
            ratio = rng.uniform(1.02, 1.25)
        else:
            ratio = rng.uniform(1.5, 4.0)
        pdu["limit_w"] = round(peak_w * ratio, 1)


def _peaks_w(config: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """Each PDU's and each UPS's peak demand over the run, load steps included."""
    scenario = load(config)
    site = scenario.site
    timeline = config["timeline"]
    flickers_s = sum(e["duration_s"] for e in timeline["events"] if e["kind"] == "mains_flicker")
    outage_s = timeline["outage_duration_s"] or NEVER_RETURNS_SIZED_S
    end_s = timeline["history_s"] + outage_s + AFTER_OUTAGE_SIZED_S + flickers_s
    peak_pdu_w = dict.fromkeys((p["id"] for p in config["pdus"]), 0.0)
    peak_ups_w = dict.fromkeys((u["id"] for u in config["ups"]), 0.0)
    t_s = 0.0
    while t_s <= end_s:
        pdu_w = dict.fromkeys(peak_pdu_w, 0.0)
        for service in site.services:
            share_w = scenario.demand_w(service.id, t_s) / len(service.outlets)
            for outlet_id in service.outlets:
                pdu_w[site.outlet_by_id[outlet_id].pdu] += share_w
        ups_w = dict.fromkeys(peak_ups_w, 0.0)
        for pdu in config["pdus"]:
            peak_pdu_w[pdu["id"]] = max(peak_pdu_w[pdu["id"]], pdu_w[pdu["id"]])
            ups_w[pdu["ups"]] += pdu_w[pdu["id"]]
        for ups_id, watts in ups_w.items():
            peak_ups_w[ups_id] = max(peak_ups_w[ups_id], watts)
        t_s += PEAK_SAMPLE_S
    return peak_pdu_w, peak_ups_w


# --- running ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeedRun:
    """One seed's line for results.jsonl, and its scenario when it is kept."""

    record: dict[str, Any]
    scenario: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Recorded:
    """One seed as results.jsonl holds it."""

    seed: int
    rows: Mapping[str, Row]  # by policy, in the order they ran; empty when the seed raised
    error: str | None
    wall_s: float


def run_policies(
    scenario: Scenario, policies: Sequence[str]
) -> tuple[dict[str, Report], dict[str, float]]:
    """Each policy's report, and the wall seconds its run took."""
    reports: dict[str, Report] = {}
    wall_s: dict[str, float] = {}
    for name in policies:
        started = time.perf_counter()
        reports[name] = simulate(scenario, make_policy(name, scenario))
        wall_s[name] = round(time.perf_counter() - started, 2)
    return reports, wall_s


def unsafe(row: Row) -> bool:
    """Whether a run missed the target of no unclean loss, no violation, no overload during an
    outage and no trip on mains. (A random site may start over a limit on mains: the seconds
    until the guard has shed are the mains overload, which the policy table reports, not a
    safety miss.)"""
    return (
        row.unclean_power_losses > 0
        or row.dependency_violation_s > 0
        or row.overload_s - row.mains_overload_s > 0
        or row.mains_trips > 0
    )


def run_seed(seed: int, policies: Sequence[str], harsh: bool = False) -> SeedRun:
    """Generate and run one seed; an exception is recorded, not raised (a crash is a finding)."""
    started = time.perf_counter()
    record: dict[str, Any] = {"seed": seed}
    config: dict[str, Any] | None = None
    keep = True  # a seed that raised is kept too, for `case` to show how
    try:
        config = gen(seed, harsh=harsh)
        record["shape"] = _shape(config)
        scenario = load(config)
        reports, wall_s = run_policies(scenario, policies)
        table = rows({scenario.name: reports})
        record["figures"] = {r.policy: _figures(r) for r in table}
        record["policy_wall_s"] = wall_s
        keep = unsafe(table[0])
    except Exception as error:
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc()
    record["wall_s"] = round(time.perf_counter() - started, 2)
    return SeedRun(record, config if keep else None)


def _shape(config: Mapping[str, Any]) -> dict[str, Any]:
    timeline = config["timeline"]
    return {
        "services": len(config["services"]),
        "ups": len(config["ups"]),
        "pdus": len(config["pdus"]),
        "outage_s": timeline["outage_duration_s"],
        "events": [e["kind"] for e in timeline["events"]],
        "step_s": config["step_s"],
    }


def _figures(row: Row) -> dict[str, Any]:
    """A row without the scenario and policy it is filed under."""
    figures = dataclasses.asdict(row)
    del figures["scenario"], figures["policy"]
    return figures


def read_results(path: Path) -> dict[int, Recorded]:
    """The seeds in a results.jsonl, a later line for a seed replacing an earlier one."""
    recorded: dict[int, Recorded] = {}
    if not path.exists():
        return recorded
    for text in path.read_text(encoding="utf-8").splitlines():
        if not text.strip():
            continue
        record = json.loads(text)
        seed = record["seed"]
        recorded[seed] = Recorded(
            seed=seed,
            rows={
                policy: Row(scenario=f"sweep-{seed}", policy=policy, **figures)
                for policy, figures in record.get("figures", {}).items()
            },
            error=record.get("error"),
            wall_s=record["wall_s"],
        )
    return recorded


def sweep(
    seeds: Sequence[int],
    policies: Sequence[str],
    out: Path,
    workers: int = 1,
    *,
    harsh: bool = False,
) -> None:
    """Run `seeds`, appending each to out/results.jsonl as it finishes (an interrupted sweep
    keeps what it ran) and saving the scenarios kept."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.jsonl").open("a", encoding="utf-8") as results:
        for run in _finished(seeds, policies, workers, harsh):
            _save(run, out, results)


def _finished(
    seeds: Sequence[int], policies: Sequence[str], workers: int, harsh: bool
) -> Iterator[SeedRun]:
    """Each seed's run as it finishes: in seed order with one worker, as they come with more."""
    run = partial(run_seed, policies=policies, harsh=harsh)
    if workers == 1:
        yield from map(run, seeds)
        return
    with multiprocessing.Pool(workers) as pool:
        yield from pool.imap_unordered(run, seeds)


def _save(run: SeedRun, out: Path, results: TextIO) -> None:
    if run.scenario is not None:
        path = out / f"seed-{run.record['seed']}.json"
        path.write_text(json.dumps(run.scenario, indent=1) + "\n", encoding="utf-8")
    results.write(json.dumps(run.record) + "\n")
    results.flush()
    print(_progress(run), flush=True)


def _progress(run: SeedRun) -> str:
    record = run.record
    head = f"seed {record['seed']}:"
    if "error" in record:
        return f"{head} ERROR {record['error']}"
    parts = [
        f"{policy} {f['weighted_score']:.4f} u{f['unclean_power_losses']} "
        f"d{f['dependency_violation_s']:.0f} o{f['overload_s']:.0f}"
        for policy, f in record["figures"].items()
    ]
    kept = " kept" if run.scenario is not None else ""
    return f"{head} {' | '.join(parts)} | {record['wall_s']:.1f} s{kept}"


# --- summary ------------------------------------------------------------------------------------


def summary(recorded: Sequence[Recorded]) -> list[str]:
    """What the seeds show: under each policy, the seeds with each figure above zero, and those
    of the first policy's the second avoids; the first's score against the second's."""
    ran = [r for r in recorded if r.rows]
    errors = sorted(r.seed for r in recorded if r.error is not None)
    lines = [f"{len(recorded)} seeds, {len(errors)} errors {errors}"]
    if not ran:
        return lines
    policies = list(ran[0].rows)
    checks: list[tuple[str, Callable[[Row], bool]]] = [
        (label, partial(_above_zero, figure)) for figure, label in SAFETY_FIGURES
    ]
    checks.append(("any of the three", unsafe))
    for label, check in checks:
        seeds = {p: sorted(r.seed for r in ran if check(r.rows[p])) for p in policies}
        counts = "; ".join(f"{p} {len(s)} {s}" for p, s in seeds.items())
        if len(policies) >= 2:
            first, second = policies[:2]
            avoided = [s for s in seeds[first] if s not in seeds[second]]
            counts += f"; {second} avoids {len(avoided)} of {first}'s {avoided}"
        lines.append(f"{label}: {counts}")
    if len(policies) >= 2:
        lines += _score_ratios(ran, policies[0], policies[1])
    walls = [r.wall_s for r in recorded]
    lines.append(f"wall per seed: mean {statistics.fmean(walls):.2f} s, max {max(walls):.2f} s")
    return lines


def _above_zero(figure: str, row: Row) -> bool:
    value: float = getattr(row, figure)
    return value > 0


def _score_ratios(ran: Sequence[Recorded], first: str, second: str) -> list[str]:
    ratios = [
        r.rows[first].weighted_score / r.rows[second].weighted_score
        for r in ran
        if r.rows[second].weighted_score > 0
    ]
    if not ratios:
        return []
    below = sum(1 for x in ratios if x < ORACLE_RATIO_TARGET)
    above = sum(1 for x in ratios if x > 1 + SCORE_TOLERANCE)
    return [
        f"score ratio {first}/{second} over {len(ratios)} seeds: mean "
        f"{statistics.fmean(ratios):.4f}, median {statistics.median(ratios):.4f}, min "
        f"{min(ratios):.4f}; below {ORACLE_RATIO_TARGET}: {below}, above 1: {above}"
    ]


# --- one case -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Moment:
    """Something the report counts against a policy, as one of its cycles saw it."""

    at_s: float
    kind: str  # UNCLEAN, DEPENDENCY or OVERLOAD
    what: tuple[str, ...]
    services: frozenset[str] = frozenset()  # the services that lost power


class Watched:
    """A policy, unchanged, that notes from the first outage on when what the report counts
    happens. The report has only totals; the truth every observation carries says when.

    Seen at the policy's cycles (every CYCLE_S), not at every step the report measures: a
    violation or an overload that begins and ends between two cycles is not seen, and a service
    seen stopping then unpowered may have stopped just in time (`case` checks against the report).
    """

    def __init__(self, policy: Policy, scenario: Scenario) -> None:
        self.name = policy.name
        self._policy = policy
        self._site = scenario.site
        self._from_s = scenario.timeline.outages_s[0][0]
        self._modes: dict[str, ServiceMode] = {}
        self.moments: list[Moment] = []

    def decide(self, observation: Observation) -> Sequence[Command]:
        """The policy's commands, after noting what the truth shows."""
        truth = observation.truth
        if truth.time_s >= self._from_s:
            self.moments += _moments(truth, self._site, self._modes)
        self._modes = {sid: s.mode for sid, s in truth.services.items()}
        return self._policy.decide(observation)


def _moments(
    truth: SiteSnapshot, site: Site, modes_before: Mapping[str, ServiceMode]
) -> list[Moment]:
    moments = []
    lost = {
        sid: mode
        for sid, mode in modes_before.items()
        if mode not in (ServiceMode.STOPPED, ServiceMode.UNPOWERED)
        and truth.services[sid].mode is ServiceMode.UNPOWERED
    }
    if lost:
        packs = tuple(
            f"{u} {s.soc_pct:.1f} % {'up' if s.alive else 'dead'}" for u, s in truth.ups.items()
        )
        what = tuple(f"{sid} (was {mode})" for sid, mode in lost.items()) + packs
        moments.append(Moment(truth.time_s, UNCLEAN, what, frozenset(lost)))
    running = {sid: s.mode is ServiceMode.RUNNING for sid, s in truth.services.items()}
    broken = tuple(
        f"{s.id} needs "
        + ", ".join(f"{d} ({truth.services[d].mode})" for d in s.depends_on if not running[d])
        for s in site.services
        if running[s.id] and not all(running[d] for d in s.depends_on)
    )
    if broken:
        moments.append(Moment(truth.time_s, DEPENDENCY, broken))
    overloaded = tuple(
        f"{node} {watts:.0f}/{limit_w:.0f} W"
        for node, watts, limit_w in overloaded_nodes(truth, site)
    )
    if overloaded:
        moments.append(Moment(truth.time_s, OVERLOAD, overloaded))
    return moments


def case(
    scenario: Scenario, policies: Sequence[str], window_s: float, all_decisions: bool
) -> list[str]:
    """The figures of each policy's run, and what its decisions were around each failure."""
    reports: dict[str, Report] = {}
    watched: dict[str, Watched] = {}
    for name in policies:
        watched[name] = Watched(make_policy(name, scenario), scenario)
        reports[name] = simulate(scenario, watched[name])
    timeline = scenario.timeline
    lines = [
        f"{scenario.name}: {len(scenario.site.services)} services, step {scenario.step_s:g} s, "
        f"outages {[(start, end) for start, end in timeline.outages_s]}",
        "",
        markdown(rows({scenario.name: reports})),
    ]
    for name, report in reports.items():
        lines += ["", f"== {name}"]
        lines += [
            f"   {sid:14s} up {r.uptime_s:7.0f}/{r.demand_s:.0f} s  interruptions "
            f"{r.interruptions}  clean {r.clean_shutdown}  unclean {r.unclean_power_loss}"
            for sid, r in report.services.items()
        ]
        moments = watched[name].moments
        lines += _unclean_losses(report, moments, window_s)
        for kind, seconds in (
            (DEPENDENCY, report.dependency_violation_s),
            (OVERLOAD, report.overload_s),
        ):
            lines += _spans(kind, seconds, [m for m in moments if m.kind == kind], report, window_s)
        if all_decisions:
            lines.append("\n-- every decision from the first outage on")
            from_s = timeline.outages_s[0][0]
            lines += [_decision(d) for d in report.decisions if d["at_s"] >= from_s]
    return lines


def _decision(entry: Mapping[str, Any], indent: str = "   ") -> str:
    setting = entry.get("cap_w", entry.get("on", ""))
    lost = " LOST" if entry.get("lost") else ""
    return (
        f"{indent}{entry['at_s']:8.0f} {entry['service']:14s} {entry['action']:14s} "
        f"{setting} {entry['reason']}{lost}"
    )


def _unclean_losses(report: Report, moments: Sequence[Moment], window_s: float) -> list[str]:
    """Each loss the cycles saw, with the decisions around it and the lost services' own in the
    ten windows before (a loss often follows a shed or a start that came too late)."""
    seen = [m for m in moments if m.kind == UNCLEAN and m.services & _lost(report)]
    lines = []
    for moment in seen:
        lines.append(f"\n-- {UNCLEAN} at {moment.at_s:.0f} s: {', '.join(moment.what)}")
        lines += [
            _decision(d)
            for d in report.decisions
            if abs(d["at_s"] - moment.at_s) <= window_s
            or (d["service"] in moment.services and 0 <= moment.at_s - d["at_s"] <= 10 * window_s)
        ]
    counted = sum(r.unclean_power_loss for r in report.services.values())
    noted = sum(len(m.services & _lost(report)) for m in seen)
    if noted != counted:
        lines.append(
            f"\n-- the report counts {counted} unclean losses, the cycles saw {noted}: "
            "a service down and up again between two cycles, or one that stopped just in time"
        )
    return lines


def _lost(report: Report) -> frozenset[str]:
    return frozenset(sid for sid, r in report.services.items() if r.unclean_power_loss > 0)


def _spans(
    kind: str, seconds: float, moments: Sequence[Moment], report: Report, window_s: float
) -> list[str]:
    """Consecutive cycles in violation (or overload) as spans, the first few with what was
    wrong and the decisions around."""
    if seconds > 0 and not moments:
        return [f"\n-- {kind}: {seconds:.0f} s in the report, all between two cycles"]
    spans: list[list[Moment]] = []
    for moment in moments:
        if spans and moment.at_s - spans[-1][-1].at_s <= SPAN_GAP_S:
            spans[-1].append(moment)
        else:
            spans.append([moment])
    if not spans:
        return []
    listed = ", ".join(f"{s[0].at_s:.0f}-{s[-1].at_s:.0f}" for s in spans[:SPANS_LISTED])
    lines = [f"\n-- {kind}: {seconds:.0f} s in the report, {len(spans)} spans seen: {listed}"]
    for span in spans[:SPANS_SHOWN]:
        start_s, end_s = span[0].at_s, span[-1].at_s
        lines.append(f"   at {start_s:.0f}: {'; '.join(span[0].what)}")
        lines += [
            _decision(d, indent="      ")
            for d in report.decisions
            if start_s - window_s <= d["at_s"] <= end_s + window_s
        ]
    return lines


# --- the command line ---------------------------------------------------------------------------


def _policies(parser: argparse.ArgumentParser, text: str) -> list[str]:
    policies = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(POLICY_NAMES))
    if unknown or not policies:
        parser.error(f"unknown policies {', '.join(unknown)} (known: {', '.join(POLICY_NAMES)})")
    return policies


def _cmd_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    policies = _policies(parser, args.policies)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    results = args.out / "results.jsonl"
    recorded = read_results(results)
    others = {tuple(r.rows) for r in recorded.values() if r.rows} - {tuple(policies)}
    if others:
        parser.error(f"{results} holds runs of other policies {sorted(others)}: use another --out")
    done = set() if args.force else set(recorded)
    seeds = [s for s in range(args.start, args.stop) if s not in done]
    print(f"{len(seeds)} seeds to run ({len(done)} already in {results})", flush=True)
    started = time.perf_counter()
    sweep(seeds, policies, args.out, args.workers, harsh=args.harsh)
    if seeds:
        elapsed_s = time.perf_counter() - started
        print(f"{len(seeds)} seeds in {elapsed_s:.0f} s ({elapsed_s / len(seeds):.2f} s a seed)")
    print("\n".join(summary(list(read_results(results).values()))))
    return 0


def _cmd_case(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    policies = _policies(parser, args.policies)
    if not args.file.is_file():
        parser.error(f"{args.file} is not a file")
    scenario = load(load_bounded_yaml(args.file.read_text(encoding="utf-8")))
    print("\n".join(case(scenario, policies, args.window_s, args.decisions)))
    return 0


def _cmd_gen(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    print(json.dumps(gen(args.seed, harsh=args.harsh), indent=1))
    return 0


def _cmd_summary(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    results = args.dir / "results.jsonl"
    if not results.is_file():
        parser.error(f"{results} not found")
    print("\n".join(summary(list(read_results(results).values()))))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run seeds into a folder")
    run.add_argument("--from", dest="start", type=int, required=True, help="first seed")
    run.add_argument("--to", dest="stop", type=int, required=True, help="last seed + 1")
    run.add_argument("--out", type=Path, required=True, help="folder for results.jsonl")
    run.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    run.add_argument("--policies", default=",".join(DEFAULT_POLICIES), help="comma-separated")
    run.add_argument("--force", action="store_true", help="rerun seeds already recorded")
    run.add_argument("--harsh", action="store_true", help=HARSH_HELP)
    one = commands.add_parser("case", help="one scenario file, with the decisions around failures")
    one.add_argument("file", type=Path)
    one.add_argument("--policies", default=",".join(DEFAULT_POLICIES), help="comma-separated")
    one.add_argument("--window-s", type=float, default=60.0, help="decisions this close")
    one.add_argument("--decisions", action="store_true", help="every decision in the outages")
    seed = commands.add_parser("gen", help="print one seed's scenario")
    seed.add_argument("seed", type=int)
    seed.add_argument("--harsh", action="store_true", help=HARSH_HELP)
    counts = commands.add_parser("summary", help="count a folder's seeds")
    counts.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    command = {"run": _cmd_run, "case": _cmd_case, "gen": _cmd_gen, "summary": _cmd_summary}
    return command[args.command](args, parser)


if __name__ == "__main__":
    keep_stdout_for_python()
    sys.exit(main())
