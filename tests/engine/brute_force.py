"""An independent brute-force optimum over every on / throttled / off assignment (small sites)."""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.optimize import linprog

from custom_components.power_allocation.engine.allocator import Allocation, Demand, ServiceState
from custom_components.power_allocation.engine.model import TIERS_MOST_IMPORTANT_FIRST, Site

Objective = tuple[tuple[int, ...], int, float]


def _incidence(site: Site) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(services x nodes) share matrix, node limits, node ids."""
    node_ids = [n.id for n in site.nodes]
    column = {nid: j for j, nid in enumerate(node_ids)}
    shares = np.zeros((len(site.services), len(node_ids)))
    for i, service in enumerate(site.services):
        for outlet in service.outlets:
            for node in site.nodes_above_outlet(outlet):
                shares[i, column[node]] += 1.0 / len(service.outlets)
    limits = np.array([math.inf if n.limit_w is None else n.limit_w for n in site.nodes])
    return shares, limits, node_ids


def brute_force_objective(
    site: Site, demand_w: dict[str, Demand], unmanaged_w: dict[str, float]
) -> Objective:
    """The best (running per tier, most important first; -throttled; watts) over all assignments."""
    shares, limits, node_ids = _incidence(site)
    for outlet, watts in unmanaged_w.items():
        for node in site.nodes_above_outlet(outlet):
            limits[node_ids.index(node)] -= watts
    n = len(site.services)
    # A running service counts its mean (or its cap); each node keeps room for the
    # root-sum-square of the spreads of every service under it, down to no room at all.
    upper = np.array([demand_w[s.id].mean_w for s in site.services])
    deviation = np.array([demand_w[s.id].upper_w - demand_w[s.id].mean_w for s in site.services])
    floor = np.array(
        [
            min(s.throttle_min_w, upper[i]) if s.throttle_min_w is not None else upper[i]
            for i, s in enumerate(site.services)
        ]
    )
    # A service whose own floor and spread are over a node's room can never run, nor what needs
    # it; the spread is over the others.
    unfit = set(
        site.graph.dependent_closure(
            s.id
            for i, s in enumerate(site.services)
            if np.any((floor[i] + deviation[i]) * shares[i] > limits + 1e-6)
        )
    )
    could_run = np.array([s.id not in unfit for s in site.services])
    spread = np.sqrt((((deviation * could_run)[:, None] * shares) ** 2).sum(axis=0))
    limits = limits - np.minimum(spread, np.maximum(limits, 0.0))
    masks = np.array(list(itertools.product([False, True], repeat=n)), dtype=bool)
    valid = np.all(masks <= could_run, axis=1)
    position = {s.id: i for i, s in enumerate(site.services)}
    for i, service in enumerate(site.services):
        for dep in service.depends_on:
            valid &= ~masks[:, i] | masks[:, position[dep]]
    valid &= np.all((masks * floor) @ shares <= limits + 1e-6, axis=1)
    tiers = [
        np.array([s.priority == tier for s in site.services]) for tier in TIERS_MOST_IMPORTANT_FIRST
    ]
    counts = np.stack([(masks & tier).sum(axis=1) for tier in tiers], axis=1)
    best_counts = max(tuple(int(c) for c in counts[k]) for k in np.flatnonzero(valid))
    best: tuple[int, float] | None = None
    for k in np.flatnonzero(valid & np.all(counts == best_counts, axis=1)):
        running = masks[k]
        throttleable = np.flatnonzero(running & (floor < upper))
        # Every subset of the throttleable services, each capped to its floor: which fit?
        subsets = np.array(
            list(itertools.product([False, True], repeat=len(throttleable))), dtype=bool
        ).reshape(2 ** len(throttleable), len(throttleable))
        draws = np.tile(np.where(running, upper, 0.0), (len(subsets), 1))
        draws[:, throttleable] = np.where(subsets, floor[throttleable], upper[throttleable])
        fits = np.all(draws @ shares <= limits + 1e-6, axis=1)
        sizes = subsets.sum(axis=1)
        size = int(sizes[fits].min())
        if best is not None and -size < best[0]:
            continue
        for chosen in subsets[fits & (sizes == size)]:
            watts = _best_watts(running, list(throttleable[chosen]), upper, floor, shares, limits)
            if watts is not None and (best is None or (-size, watts) > best):
                best = (-size, watts)
    assert best is not None
    return best_counts, best[0], best[1]


def _best_watts(running, chosen, upper, floor, shares, limits) -> float | None:
    """Max watts with `chosen` capped within [floor, upper] and the rest of `running` at upper."""
    fixed = np.where(running, upper, 0.0)
    fixed[chosen] = 0.0
    room = limits - fixed @ shares
    if not chosen:
        return float(fixed.sum()) if np.all(room >= -1e-6) else None
    finite = np.isfinite(room)
    result = linprog(
        -np.ones(len(chosen)),
        A_ub=shares[chosen][:, finite].T,
        b_ub=room[finite],
        bounds=list(zip(floor[chosen], upper[chosen], strict=True)),
        method="highs",
    )
    if result.status != 0:
        return None
    return float(fixed.sum() - result.fun)


def allocation_objective(site: Site, allocation: Allocation) -> Objective:
    """The same objective read off an allocation."""
    by_tier = allocation.running_by_tier(site)
    throttled = sum(d.state is ServiceState.THROTTLED for d in allocation.decisions.values())
    return (
        tuple(by_tier[t] for t in TIERS_MOST_IMPORTANT_FIRST),
        -throttled,
        allocation.delivered_w,
    )
