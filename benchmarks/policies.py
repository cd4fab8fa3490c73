"""Every scenario under every policy: the outage benchmark.

    python -m benchmarks.policies --scenarios benchmarks/scenarios [--policies a,b] [--json]
        [--momentary-ratio R] [--sustained-median-s S] [--sustained-sigma G]

Per scenario and as a suite mean: the weighted score, its ratio to the oracle's, the critical
tier's uptime ratio, unclean power losses, dependency-violation seconds, overload seconds and
unnecessary sheds. When `predictive`, the oracle and the baselines all ran, it then prints
`predictive` against the best baseline on each scenario, and each of its targets with what was
measured and whether it is met. `--json` prints every run's full report instead of the tables.
The prior options give `predictive` a site's Plan settings instead of the defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from custom_components.power_allocation.drivers.scenario_file import load_scenario
from custom_components.power_allocation.engine.outage import SITE_PRIOR_KEYS, OutagePrior
from custom_components.power_allocation.engine.policies import POLICY_NAMES, make_policy
from custom_components.power_allocation.engine.simulate import Report, simulate

BASELINES = ("none", "nut", "static_timers", "seed_greedy")
# The targets for `predictive`.
ORACLE_RATIO_TARGET = 0.97
CRITICAL_UPTIME_TOLERANCE_RATIO = 0.01
# Scores are sums of floats: a tie is a tie.
SCORE_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Row:
    """One scenario under one policy, as the table shows it."""

    scenario: str
    policy: str
    weighted_score: float
    oracle_ratio: float | None
    critical_uptime_ratio: float | None
    unclean_power_losses: int
    dependency_violation_s: float
    overload_s: float
    unnecessary_sheds: int


def run_suite(
    folder: Path, policies: Sequence[str], prior: OutagePrior | None = None
) -> dict[str, dict[str, Report]]:
    """Reports by scenario name, then policy; `prior` is `predictive`'s outage prior."""
    results: dict[str, dict[str, Report]] = {}
    for path in sorted(folder.glob("*.yaml")):
        scenario = load_scenario(path)
        results[scenario.name] = {
            policy: simulate(scenario, make_policy(policy, scenario, prior)) for policy in policies
        }
    return results


def rows(results: dict[str, dict[str, Report]]) -> list[Row]:
    """The table's rows, per scenario and policy."""
    table = []
    for scenario, reports in results.items():
        oracle = reports.get("oracle")
        for policy, report in reports.items():
            table.append(
                Row(
                    scenario=scenario,
                    policy=policy,
                    weighted_score=report.weighted_score,
                    oracle_ratio=(
                        report.weighted_score / oracle.weighted_score
                        if oracle is not None and oracle.weighted_score > 0
                        else None
                    ),
                    critical_uptime_ratio=report.tier_uptime_ratio.get("critical"),
                    unclean_power_losses=report.unclean_power_losses,
                    dependency_violation_s=report.dependency_violation_s,
                    overload_s=report.overload_s,
                    unnecessary_sheds=report.unnecessary_sheds,
                )
            )
    return table


def suite_means(table: Sequence[Row], policies: Sequence[str]) -> list[Row]:
    """One row per policy: the mean of each column over the scenarios."""
    means = []
    for policy in policies:
        mine = [r for r in table if r.policy == policy]
        if not mine:
            continue
        means.append(
            Row(
                scenario="suite mean",
                policy=policy,
                weighted_score=_mean([r.weighted_score for r in mine]) or 0.0,
                oracle_ratio=_mean([r.oracle_ratio for r in mine]),
                critical_uptime_ratio=_mean([r.critical_uptime_ratio for r in mine]),
                unclean_power_losses=sum(r.unclean_power_losses for r in mine),
                dependency_violation_s=sum(r.dependency_violation_s for r in mine),
                overload_s=sum(r.overload_s for r in mine),
                unnecessary_sheds=sum(r.unnecessary_sheds for r in mine),
            )
        )
    return means


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def markdown(table: Sequence[Row]) -> str:
    """The table in Markdown (suite rows sum the counts and seconds, average the ratios)."""
    lines = [
        "| scenario | policy | weighted score | / oracle | critical uptime | unclean losses "
        "| dependency violation s | overload s | unnecessary sheds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r.scenario} | {r.policy} | {r.weighted_score:.4f} | {_ratio(r.oracle_ratio)} "
        f"| {_ratio(r.critical_uptime_ratio)} | {r.unclean_power_losses} "
        f"| {r.dependency_violation_s:.0f} | {r.overload_s:.0f} | {r.unnecessary_sheds} |"
        for r in table
    ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Target:
    """One of `predictive`'s targets, as measured."""

    name: str
    measured: str
    met: bool


def against_best_baseline(table: Sequence[Row]) -> str:
    """Per scenario: `predictive` against the best-scoring baseline; both policies' sheds."""
    lines = [
        "| scenario | predictive | best baseline | its score | predictive - best "
        "| predictive unnecessary sheds | static_timers unnecessary sheds |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for scenario, by_policy in _by_scenario(table).items():
        mine, best_score, best = _best_baseline(by_policy)
        lines.append(
            f"| {scenario} | {mine.weighted_score:.4f} | {', '.join(best)} | {best_score:.4f} "
            f"| {mine.weighted_score - best_score:+.4f} | {mine.unnecessary_sheds} "
            f"| {by_policy['static_timers'].unnecessary_sheds} |"
        )
    return "\n".join(lines)


def targets(table: Sequence[Row]) -> list[Target]:
    """`predictive`'s targets, each with what was measured."""
    scenarios = _by_scenario(table)
    mine = [by["predictive"] for by in scenarios.values()]
    oracle = [by["oracle"] for by in scenarios.values()]
    score = _mean([r.weighted_score for r in mine]) or 0.0
    oracle_score = _mean([r.weighted_score for r in oracle]) or 0.0
    ratio = score / oracle_score if oracle_score > 0 else 1.0
    mean_of_ratios = _mean([r.oracle_ratio for r in mine])
    below = [
        f"{name} {row.weighted_score - best:+.4f}"
        for name, by in scenarios.items()
        for row, best, _ in [_best_baseline(by)]
        if row.weighted_score < best - SCORE_TOLERANCE
    ]
    critical = _mean([r.critical_uptime_ratio for r in mine])
    oracle_critical = _mean([r.critical_uptime_ratio for r in oracle])
    unclean = sum(r.unclean_power_losses for r in mine)
    violation_s = sum(r.dependency_violation_s for r in mine)
    overload_s = sum(r.overload_s for r in mine)
    sheds = sum(r.unnecessary_sheds for r in mine)
    static_sheds = sum(by["static_timers"].unnecessary_sheds for by in scenarios.values())
    return [
        Target(
            f"suite mean at least {ORACLE_RATIO_TARGET} x the oracle's",
            f"{score:.4f} = {ratio:.4f} x {oracle_score:.4f} (mean of the ratios "
            f"{_ratio(mean_of_ratios)})",
            min(ratio, mean_of_ratios or ratio) >= ORACLE_RATIO_TARGET,
        ),
        Target(
            "at least the best baseline on every scenario",
            f"{len(scenarios) - len(below)} of {len(scenarios)}"
            + (f"; below on {', '.join(below)}" if below else ""),
            not below,
        ),
        Target(
            f"critical uptime within {CRITICAL_UPTIME_TOLERANCE_RATIO:.0%} of the oracle's",
            f"{_ratio(critical)} against {_ratio(oracle_critical)}",
            critical is None
            or oracle_critical is None
            or critical >= (1.0 - CRITICAL_UPTIME_TOLERANCE_RATIO) * oracle_critical,
        ),
        Target(
            "0 unclean power losses, 0 dependency-violation s, 0 overload s",
            f"{unclean}, {violation_s:.0f} s, {overload_s:.0f} s",
            unclean == 0 and violation_s == 0 and overload_s == 0,
        ),
        Target(
            "no more unnecessary sheds than static_timers",
            f"{sheds} against {static_sheds}",
            sheds <= static_sheds,
        ),
    ]


def targets_markdown(measured: Sequence[Target]) -> str:
    """The targets as a Markdown table."""
    lines = ["| target for predictive | measured | met |", "| --- | --- | --- |"]
    lines += [f"| {t.name} | {t.measured} | {'yes' if t.met else 'no'} |" for t in measured]
    return "\n".join(lines)


def _by_scenario(table: Sequence[Row]) -> dict[str, dict[str, Row]]:
    scenarios: dict[str, dict[str, Row]] = {}
    for row in table:
        scenarios.setdefault(row.scenario, {})[row.policy] = row
    return scenarios


def _best_baseline(by_policy: Mapping[str, Row]) -> tuple[Row, float, list[str]]:
    """`predictive`'s row, the best baseline score, and the baselines that reach it."""
    best_score = max(by_policy[b].weighted_score for b in BASELINES)
    best = [b for b in BASELINES if by_policy[b].weighted_score >= best_score - SCORE_TOLERANCE]
    return by_policy["predictive"], best_score, best


def main(argv: Sequence[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.policies", description=__doc__)
    parser.add_argument("--scenarios", type=Path, required=True, help="folder of scenario files")
    parser.add_argument("--policies", default=",".join(POLICY_NAMES), help="comma-separated")
    parser.add_argument("--json", action="store_true", help="print every report as JSON")
    # A site's Plan settings: what `predictive` would do where outages are shorter or longer.
    for key in SITE_PRIOR_KEYS:
        parser.add_argument(
            "--" + key.replace("_", "-"),
            type=float,
            dest=key,
            help=f"predictive's outage prior: {key} (default {getattr(OutagePrior(), key):g})",
        )
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(POLICY_NAMES))
    if unknown:
        parser.error(f"unknown policies {', '.join(unknown)} (known: {', '.join(POLICY_NAMES)})")
    if not args.scenarios.is_dir():
        parser.error(f"{args.scenarios} is not a folder")
    chosen = {key: getattr(args, key) for key in SITE_PRIOR_KEYS if getattr(args, key) is not None}
    try:
        prior = OutagePrior(**chosen)
    except ValueError as error:
        parser.error(str(error))
    results = run_suite(args.scenarios, policies, prior)
    if args.json:
        json.dump(
            {s: {p: r.to_dict() for p, r in by.items()} for s, by in results.items()},
            sys.stdout,
            indent=1,
        )
        print()
        return 0
    table = rows(results)
    print(markdown(table + suite_means(table, policies)))
    if {"predictive", "oracle", *BASELINES} <= set(policies):
        print()
        print(against_best_baseline(table))
        print()
        print(targets_markdown(targets(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
