"""How long one allocation takes on large random sites, against a topological sort of the same DAG.

    python -m benchmarks.allocator [--json] [--sizes 100,1000,10000,100000] [--repeats N]

Sites: one UPS, one PDU per 20 services (the last one fewer, for a count that is no multiple of
20), about two dependencies per service. Services come in application stacks of up to 25 (each
depends on services of lower layers in its stack, the bottom layer on one of a few site-wide core
services) — the shape of a real rack, where dependency chains are a handful deep. Limits are set
so that the UPS and about half the PDUs are overloaded: the allocator has to throttle and shed,
not just confirm that everything fits.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import statistics
import time
from collections.abc import Callable
from graphlib import TopologicalSorter

from benchmarks.rows import print_rows
from custom_components.power_allocation.drivers.native_stdout import keep_stdout_for_python
from custom_components.power_allocation.engine.allocator import Allocation, Demand, allocate
from custom_components.power_allocation.engine.model import Pdu, Priority, Service, Site, Ups

SERVICES_PER_PDU = 20
STACK_SIZE = 25
CORE_SERVICES = 4
TIER_WEIGHTS = (
    (Priority.CRITICAL, 0.1),
    (Priority.HIGH, 0.2),
    (Priority.MEDIUM, 0.3),
    (Priority.LOW, 0.4),
)


def random_site(n: int, seed: int = 1) -> tuple[Site, dict[str, Demand]]:
    """A random site of `n` services and the forecasts to allocate for."""
    rng = random.Random(seed)
    pdu_count = max(1, math.ceil(n / SERVICES_PER_PDU))
    outlets_per_pdu = SERVICES_PER_PDU + 6
    # Primary feeds take outlets 1..20 of their PDU, second PSUs the spare outlets above.
    next_outlet = [1] * pdu_count
    next_spare = [SERVICES_PER_PDU + 1] * pdu_count
    services: list[Service] = []
    demand: dict[str, Demand] = {}
    pdu_demand_w = [0.0] * pdu_count
    tiers = [t for t, _ in TIER_WEIGHTS]
    weights = [w for _, w in TIER_WEIGHTS]
    for i in range(n):
        home = i // SERVICES_PER_PDU
        outlets = [f"pdu{home}/{next_outlet[home]}"]
        next_outlet[home] += 1
        feeds = [home]
        spare = (home + 1) % pdu_count
        if spare != home and rng.random() < 0.1 and next_spare[spare] <= outlets_per_pdu:
            outlets.append(f"pdu{spare}/{next_spare[spare]}")
            next_spare[spare] += 1
            feeds.append(spare)
        if i < CORE_SERVICES:
            depends_on: list[int] = []
        else:
            stack_start = max(CORE_SERVICES, i - (i - CORE_SERVICES) % STACK_SIZE)
            lower = list(range(stack_start, i))
            if lower:
                depends_on = rng.sample(lower, min(2, len(lower)))
            else:
                depends_on = [rng.randrange(CORE_SERVICES), rng.randrange(CORE_SERVICES)]
            depends_on = sorted(set(depends_on))
        upper_w = rng.uniform(20, 400)
        throttleable = rng.random() < 0.3
        services.append(
            Service(
                id=f"s{i}",
                priority=Priority.CRITICAL if i < CORE_SERVICES else rng.choices(tiers, weights)[0],
                outlets=tuple(outlets),
                depends_on=tuple(f"s{d}" for d in depends_on),
                throttle_min_w=round(upper_w * 0.4, 1) if throttleable else None,
            )
        )
        demand[f"s{i}"] = Demand(mean_w=upper_w * 0.7, upper_w=upper_w)
        for p in feeds:
            pdu_demand_w[p] += demand[f"s{i}"].mean_w / len(feeds)
    pdus = tuple(
        Pdu.numbered(
            f"pdu{p}", "ups1", round(pdu_demand_w[p] * rng.uniform(0.75, 1.25)), outlets_per_pdu
        )
        for p in range(pdu_count)
    )
    # Limits around each node's mean draw (I2 checks a node's total, not the sum of each
    # service's upper quantile): many nodes have something to shed.
    total_w = sum(d.mean_w for d in demand.values())
    ups = (Ups("ups1", rated_w=round(total_w * 0.8), capacity_wh=total_w, runtime_full_load_s=300),)
    return Site(ups=ups, pdus=pdus, services=tuple(services)), demand


def median_ms(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of `run` in milliseconds, after one warm-up call.

    Like `timeit`, with the cyclic garbage collector paused while timing: a collection costs time
    in proportion to everything alive in the process (here, sites of 100,000 services), not to
    the code being measured.
    """
    run()
    samples = []
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run()
            samples.append((time.perf_counter() - start) * 1000.0)
        finally:
            gc.enable()
    return statistics.median(samples)


def measure(n: int, repeats: int) -> dict[str, float | int | str | bool]:
    """One row of the table."""
    site, demand = random_site(n)
    depends_on = {s.id: s.depends_on for s in site.services}
    allocation: Allocation = allocate(site, demand)  # also builds the per-site index once
    allocate_ms = median_ms(lambda: allocate(site, demand), repeats)
    toposort_ms = median_ms(lambda: list(TopologicalSorter(depends_on).static_order()), repeats)
    states = [d.state.value for d in allocation.decisions.values()]
    return {
        "services": n,
        "dependencies": sum(len(d) for d in depends_on.values()),
        "method": allocation.method,
        "optimal": allocation.optimal,
        "on": states.count("on"),
        "throttled": states.count("throttled"),
        "off": states.count("off"),
        "allocate_ms": round(allocate_ms, 3),
        "toposort_ms": round(toposort_ms, 3),
        "ratio": round(allocate_ms / toposort_ms, 2),
    }


def main(argv: list[str] | None = None) -> list[dict[str, float | int | str | bool]]:
    """Print the table (or JSON) and return its rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    rows = [measure(int(size), args.repeats) for size in args.sizes.split(",")]
    print_rows(
        rows,
        as_json=args.json,
        footer="targets: 10,000 services <= 50 ms and <= 10x the topological sort; "
        "100,000 services <= 1,000 ms (median of one allocation, one core)",
    )
    return rows


if __name__ == "__main__":
    keep_stdout_for_python()
    main()
