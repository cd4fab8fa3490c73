"""How long one re-plan of an outage takes, against a topological sort of the same site.

    python -m benchmarks.planner [--json] [--sizes 40,200,1000] [--repeats N]

Sites are the allocator benchmark's (`benchmarks.allocator.random_site`: application stacks on a
few core services, mixed tiers, a third throttle-capable), with a battery that carries them for
about 17 minutes with everything on and every service given a shutdown budget. The plan is made
a minute into an outage, at 90 % charge, over a 4-hour horizon, for every service running: what
the controller does every cycle on battery.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import replace
from graphlib import TopologicalSorter

from benchmarks.allocator import median_ms, random_site
from benchmarks.rows import print_rows
from custom_components.power_allocation.drivers.native_stdout import keep_stdout_for_python
from custom_components.power_allocation.engine.allocator import Demand
from custom_components.power_allocation.engine.battery import BatteryModel
from custom_components.power_allocation.engine.model import Site
from custom_components.power_allocation.engine.outage import OutagePrior
from custom_components.power_allocation.engine.planner import plan_outage

ELAPSED_S = 60.0
SOC_RATIO = 0.9
HORIZON_S = 4 * 3600.0
TARGET_MS = 50.0


def planning_site(n: int, seed: int = 1) -> tuple[Site, dict[str, Demand]]:
    """The allocator benchmark's site of `n` services, with shutdown and startup budgets."""
    site, demand = random_site(n, seed)
    rng = random.Random(seed)
    services = tuple(
        replace(
            s,
            shutdown_s=float(rng.choice((10, 30, 60, 90, 120))),
            startup_s=float(rng.choice((30, 60, 120, 180))),
            idle_w=5.0,
        )
        for s in site.services
    )
    total_w = sum(d.upper_w for d in demand.values())
    # Rated well above the load, the battery carries the whole site for about 17 minutes.
    ups = tuple(
        replace(u, rated_w=round(total_w * 1.5), runtime_full_load_s=360.0) for u in site.ups
    )
    return replace(site, ups=ups, services=services), demand


def measure(n: int, repeats: int) -> dict[str, float | int]:
    """One row of the table."""
    site, demand = planning_site(n)
    batteries = {u.id: BatteryModel.from_ups(u) for u in site.ups}
    soc = {u.id: SOC_RATIO for u in site.ups}
    outage = OutagePrior().given(ELAPSED_S)

    def plan() -> object:
        return plan_outage(site, batteries, soc, demand, outage, horizon_s=HORIZON_S)

    result = plan_outage(site, batteries, soc, demand, outage, horizon_s=HORIZON_S)
    plan_ms = median_ms(plan, repeats)
    depends_on = {s.id: s.depends_on for s in site.services}
    toposort_ms = median_ms(lambda: list(TopologicalSorter(depends_on).static_order()), repeats)
    return {
        "services": n,
        "steps": len(result.steps),
        "final_shutdown_min": round(result.final_shutdown_at_s / 60.0, 1),
        "plan_ms": round(plan_ms, 2),
        "toposort_ms": round(toposort_ms, 3),
        "ratio": round(plan_ms / toposort_ms, 1),
    }


def main(argv: list[str] | None = None) -> list[dict[str, float | int]]:
    """Print the table (or JSON) and return its rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--sizes", default="40,200,1000")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    rows = [measure(int(size), args.repeats) for size in args.sizes.split(",")]
    print_rows(
        rows,
        as_json=args.json,
        footer=f"target: 200 services over a 4-hour horizon <= {TARGET_MS:.0f} ms "
        "(median, one core)",
    )
    return rows


if __name__ == "__main__":
    keep_stdout_for_python()
    main()
