"""Allocation at one instant: which services stay on, which are throttled, which go off.

Feasible means I1 (a running service has all its dependencies running) and I2 (the upper-quantile
draw under every node is within its limit). Among feasible allocations the objective is
lexicographic: the most running services of the highest tier (throttled counts as running), then
of the next tier, and so on; then the fewest throttled; then the most watts delivered.

Sites of up to `exact_max_services` services are solved exactly as a sequence of MILPs (HiGHS,
through `scipy.optimize.milp`), one per level of the objective, each fixing the optimum of the
previous level. Larger sites, or a MILP that runs out of its time budget, get a linear-time
greedy that keeps I1 and I2 and reports `optimal=False`. When every service fits at its full
draw, that allocation is optimal without any search.

A service on several outlets (dual PSUs) is assumed to share its draw equally between them.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from itertools import repeat
from typing import NamedTuple, cast

import numpy as np
import numpy.typing as npt
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from .model import TIERS_MOST_IMPORTANT_FIRST, Priority, Site

# Draws are compared with this slack so float rounding never turns a fit into an overload.
TOLERANCE_W = 1e-6
# A running service is modelled as drawing at least this much, so that a draw of 0 always means
# off (a service forecast at 0 W still has to be told apart from a shed one).
MIN_RUNNING_W = 1e-3
EXACT_MAX_SERVICES = 250
EXACT_TIME_BUDGET_S = 2.0


class ServiceState(StrEnum):
    """What the allocation decided for a service."""

    ON = "on"
    THROTTLED = "throttled"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class Demand:
    """A service's forecast draw: the mean and the upper quantile (limits are checked on it)."""

    mean_w: float
    upper_w: float


class Decision(NamedTuple):
    """The outcome for one service; `draw_w` is the upper-quantile draw it is allowed.

    A NamedTuple rather than a frozen dataclass: a large site builds one per service per cycle,
    and a NamedTuple is several times cheaper to construct.
    """

    state: ServiceState
    draw_w: float
    cap_w: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class Allocation:
    """The decision for every service and the resulting upper-quantile load of every node."""

    decisions: dict[str, Decision]
    node_load_w: dict[str, float]
    optimal: bool
    method: str  # "all_fit", "milp" or "greedy"
    within_limits: bool  # False only when holds or unmanaged load alone exceed a limit

    def running_by_tier(self, site: Site) -> dict[Priority, int]:
        """Running (on or throttled) services per tier."""
        counts = dict.fromkeys(TIERS_MOST_IMPORTANT_FIRST, 0)
        for service in site.services:
            if self.decisions[service.id].state is not ServiceState.OFF:
                counts[service.priority] += 1
        return counts

    @property
    def delivered_w(self) -> float:
        """Total upper-quantile draw allowed to services."""
        return sum(d.draw_w for d in self.decisions.values())


class HoldConflictError(ValueError):
    """Holds that contradict each other through a dependency."""


@dataclass(frozen=True, slots=True)
class _Index:
    """A site compiled to integer indices, built once per site and reused every cycle."""

    service_ids: tuple[str, ...]
    rank: tuple[int, ...]
    throttle_min_w: npt.NDArray[np.float64]  # NaN where a service cannot be throttled
    depends_on: tuple[tuple[int, ...], ...]
    dependents: tuple[tuple[int, ...], ...]
    # Most important first; among equals, dependencies before dependents.
    readmit_order: tuple[int, ...]
    # The most important tier that shedding a service takes down with it (its dependents').
    lost_rank: tuple[int, ...]
    node_ids: tuple[str, ...]
    node_limit_w: tuple[float, ...]
    node_of: dict[str, int]
    # Each service's (node, share) pairs; shares of one node are summed.
    feeds: tuple[tuple[tuple[int, float], ...], ...]
    # Each node's (service, share) pairs, and the same services as an array.
    fed: tuple[tuple[tuple[int, float], ...], ...]
    fed_members: tuple[tuple[int, ...], ...]
    # The UPS nodes feeding each service (UPS units come first among the nodes).
    ups_of: tuple[tuple[int, ...], ...]
    ups_count: int
    unmanaged_nodes: dict[str, tuple[int, ...]]
    # The same incidence as flat arrays, for vectorised loads.
    feed_service: npt.NDArray[np.int64]
    feed_node: npt.NDArray[np.int64]
    feed_share: npt.NDArray[np.float64]


_INDEX_CACHE: weakref.WeakKeyDictionary[Site, _Index] = weakref.WeakKeyDictionary()


def _index(site: Site) -> _Index:
    cached = _INDEX_CACHE.get(site)
    if cached is None:
        cached = _build_index(site)
        _INDEX_CACHE[site] = cached
    return cached


def _build_index(site: Site) -> _Index:
    service_ids = tuple(s.id for s in site.services)
    position = {sid: i for i, sid in enumerate(service_ids)}
    node_ids = tuple(n.id for n in site.nodes)
    node_of = {nid: i for i, nid in enumerate(node_ids)}
    feeds: list[tuple[tuple[int, float], ...]] = []
    fed: list[list[tuple[int, float]]] = [[] for _ in node_ids]
    for i, service in enumerate(site.services):
        share = 1.0 / len(service.outlets)
        per_node: dict[int, float] = {}
        for outlet in service.outlets:
            for node in site.nodes_above_outlet(outlet):
                per_node[node_of[node]] = per_node.get(node_of[node], 0.0) + share
        feeds.append(tuple(per_node.items()))
        for node_index, node_share in per_node.items():
            fed[node_index].append((i, node_share))
    graph = site.graph
    rank = [s.priority.rank for s in site.services]
    startup_order = [position[sid] for sid in graph.startup_order()]
    dependents = [tuple(position[d] for d in graph.dependents(sid)) for sid in service_ids]
    lost_rank = list(rank)
    for i in reversed(startup_order):
        for d in dependents[i]:
            lost_rank[i] = max(lost_rank[i], lost_rank[d])
    flat = [(i, n, s) for i, pairs in enumerate(feeds) for n, s in pairs]
    return _Index(
        service_ids=service_ids,
        rank=tuple(rank),
        throttle_min_w=np.array(
            [math.nan if s.throttle_min_w is None else s.throttle_min_w for s in site.services]
        ),
        depends_on=tuple(tuple(position[d] for d in s.depends_on) for s in site.services),
        dependents=tuple(dependents),
        readmit_order=tuple(sorted(startup_order, key=lambda i: -rank[i])),
        lost_rank=tuple(lost_rank),
        node_ids=node_ids,
        node_limit_w=tuple(math.inf if n.limit_w is None else n.limit_w for n in site.nodes),
        node_of=node_of,
        feeds=tuple(feeds),
        fed=tuple(tuple(pairs) for pairs in fed),
        fed_members=tuple(tuple(i for i, _ in pairs) for pairs in fed),
        ups_of=tuple(tuple(n for n, _ in pairs if n < len(site.ups)) for pairs in feeds),
        ups_count=len(site.ups),
        unmanaged_nodes={
            outlet: tuple(node_of[n] for n in site.nodes_above_outlet(outlet))
            for outlet in site.unmanaged_outlets
        },
        feed_service=np.fromiter((f[0] for f in flat), dtype=np.int64, count=len(flat)),
        feed_node=np.fromiter((f[1] for f in flat), dtype=np.int64, count=len(flat)),
        feed_share=np.fromiter((f[2] for f in flat), dtype=np.float64, count=len(flat)),
    )


@dataclass(slots=True)
class _Problem:
    """One allocation's numbers, by service and node index."""

    index: _Index
    upper_w: list[float]
    floor_w: list[float]  # the least a running service can draw
    capacity_w: list[float]  # node limit minus unmanaged draw
    unmanaged_w: list[float]  # per node
    forced_on: set[int]
    forced_off: set[int]


def allocate(
    site: Site,
    demand_w: Mapping[str, Demand],
    *,
    unmanaged_w: Mapping[str, float] | None = None,
    limits_w: Mapping[str, float] | None = None,
    held_on: frozenset[str] = frozenset(),
    held_off: frozenset[str] = frozenset(),
    exact_max_services: int = EXACT_MAX_SERVICES,
    time_budget_s: float = EXACT_TIME_BUDGET_S,
) -> Allocation:
    """Allocate power for one instant.

    `demand_w` gives every service's forecast; `unmanaged_w` the draw of unmanaged outlets;
    `limits_w` overrides node limits (e.g. a derated breaker). Held services keep their state
    (I8): held on pulls its dependencies on, held off pulls its dependents off.
    """
    problem = _problem(site, demand_w, unmanaged_w or {}, limits_w or {}, held_on, held_off)
    n = len(problem.upper_w)
    draw = [0.0 if i in problem.forced_off else problem.upper_w[i] for i in range(n)]
    if _fits(problem, draw):
        return _result(problem, draw, optimal=True, method="all_fit")
    greedy = _greedy(problem)
    if n <= exact_max_services:
        exact = _exact(problem, greedy, time_budget_s)
        if exact is not None:
            return _result(problem, exact, optimal=True, method="milp")
    return _result(problem, greedy, optimal=False, method="greedy")


def _problem(
    site: Site,
    demand_w: Mapping[str, Demand],
    unmanaged_w: Mapping[str, float],
    limits_w: Mapping[str, float],
    held_on: frozenset[str],
    held_off: frozenset[str],
) -> _Problem:
    index = _index(site)
    try:
        demands = [demand_w[sid] for sid in index.service_ids]
    except KeyError as missing:
        raise ValueError(f"no demand forecast for service {missing.args[0]!r}") from None
    upper = np.array([d.upper_w for d in demands], dtype=np.float64)
    mean = np.array([d.mean_w for d in demands], dtype=np.float64)
    for name, values in (("upper_w", upper), ("mean_w", mean)):
        bad = ~(np.isfinite(values) & (values >= 0))
        if bad.any():
            first = int(np.argmax(bad))
            _watts(f"service {index.service_ids[first]!r}: {name}", float(values[first]))
    upper = np.maximum(upper, MIN_RUNNING_W)
    minimum = index.throttle_min_w
    floor = np.where(np.isnan(minimum), upper, np.fmin(minimum, upper))
    capacity = list(index.node_limit_w)
    unmanaged = [0.0] * len(capacity)
    for node_id, limit in limits_w.items():
        if node_id not in index.node_of:
            raise ValueError(f"limit given for unknown node {node_id!r}")
        capacity[index.node_of[node_id]] = _watts(f"limit of {node_id!r}", limit)
    for outlet, watts in unmanaged_w.items():
        if outlet not in index.unmanaged_nodes:
            raise ValueError(f"{outlet!r} is not an unmanaged outlet of this site")
        for node in index.unmanaged_nodes[outlet]:
            unmanaged[node] += _watts(f"unmanaged outlet {outlet!r}", watts)
    capacity = [limit - base for limit, base in zip(capacity, unmanaged, strict=True)]
    for sid in held_on | held_off:
        if sid not in site.service_by_id:
            raise ValueError(f"hold on unknown service {sid!r}")
    position = {sid: i for i, sid in enumerate(index.service_ids)}
    forced_on = {position[s] for s in site.graph.dependency_closure(held_on)}
    forced_off = {position[s] for s in site.graph.dependent_closure(held_off)}
    clash = forced_on & forced_off
    if clash:
        names = ", ".join(sorted(index.service_ids[i] for i in clash))
        raise HoldConflictError(
            f"holds conflict: {names} would have to be both on (a held-on service needs it) "
            "and off (it is held off or needs a held-off service)"
        )
    return _Problem(
        index,
        cast(list[float], upper.tolist()),
        cast(list[float], floor.tolist()),
        capacity,
        unmanaged,
        forced_on,
        forced_off,
    )


def _watts(what: str, value: float) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite, non-negative number of watts, got {value!r}")
    return float(value)


def _node_loads(problem: _Problem, draw: Sequence[float]) -> npt.NDArray[np.float64]:
    index = problem.index
    weights = np.asarray(draw, dtype=np.float64)[index.feed_service] * index.feed_share
    loads = np.bincount(index.feed_node, weights=weights, minlength=len(index.node_ids))
    return loads.astype(np.float64, copy=False)


def _fits(problem: _Problem, draw: Sequence[float]) -> bool:
    capacity = np.asarray(problem.capacity_w)
    return bool(np.all(_node_loads(problem, draw) <= capacity + TOLERANCE_W))


def _greedy(problem: _Problem) -> list[float]:
    """Throttle, then shed, the least important load on each overloaded node; then win back.

    Shedding a service sheds its running dependents with it (I1); forced services never move.
    Overloaded nodes are handled from the most specific (outlets) to the least (UPS units), since
    relief on an outlet also relieves its PDU and UPS.
    """
    index = problem.index
    upper, floor, capacity = problem.upper_w, problem.floor_w, problem.capacity_w
    n = len(upper)
    draw = [0.0 if i in problem.forced_off else upper[i] for i in range(n)]
    loads = _node_loads(problem, draw)
    load = cast(list[float], loads.tolist())
    overloaded = np.flatnonzero(loads > np.asarray(capacity) + TOLERANCE_W)[::-1]
    over = cast(list[int], overloaded.tolist())
    pinned = problem.forced_on | problem.forced_off
    movable = [i not in pinned for i in range(n)] if pinned else [True] * n

    def set_draw(i: int, watts: float) -> None:
        delta = watts - draw[i]
        draw[i] = watts
        for node, share in index.feeds[i]:
            load[node] += delta * share

    def position_by(*columns: npt.NDArray[np.float64]) -> list[int]:
        """Each service's place when all are sorted by `columns` (first is primary)."""
        order = np.lexsort(columns[::-1])
        place = np.empty(n, dtype=np.int64)
        place[order] = np.arange(n)
        places: list[int] = place.tolist()
        return places

    rank = np.asarray(index.rank, dtype=np.float64)
    # Throttle the least important first, the biggest reduction first among equals. Every
    # candidate still draws its upper quantile until throttled, so the order is fixed up front.
    place = position_by(rank, np.asarray(floor) - np.asarray(draw))
    for node in over:
        if load[node] <= capacity[node] + TOLERANCE_W:
            continue
        members = [i for i in index.fed_members[node] if draw[i] > floor[i]]
        for i in sorted(members, key=place.__getitem__):
            set_draw(i, floor[i])
            if load[node] <= capacity[node] + TOLERANCE_W:
                break
    # Shed what takes the least important tier down with it first, the biggest draw first.
    place = position_by(np.asarray(index.lost_rank, dtype=np.float64), rank, -np.asarray(draw))
    for node in over:
        if load[node] <= capacity[node] + TOLERANCE_W:
            continue
        members = [i for i in index.fed_members[node] if draw[i] > 0 and movable[i]]
        for i in sorted(members, key=place.__getitem__):
            if draw[i] == 0:  # already shed as a dependent of an earlier one
                continue
            stack = [i]
            while stack:
                k = stack.pop()
                if draw[k] > 0:
                    set_draw(k, 0.0)
                    stack.extend(index.dependents[k])
            if load[node] <= capacity[node] + TOLERANCE_W:
                break

    # Win back: readmit what now fits, most important tier first, dependencies before dependents.
    for i in [i for i in index.readmit_order if draw[i] == 0 and movable[i]]:
        if draw[i] > 0:  # readmitted as a dependency of an earlier one
            continue
        needed = _off_dependency_closure(index, draw, i)
        if any(not movable[k] for k in needed):
            continue
        extra_by_node: dict[int, float] = {}
        for k in needed:
            for node, share in index.feeds[k]:
                extra_by_node[node] = extra_by_node.get(node, 0.0) + floor[k] * share
        if all(
            load[node] + watts <= capacity[node] + TOLERANCE_W
            for node, watts in extra_by_node.items()
        ):
            for k in needed:
                set_draw(k, floor[k])
    # Raise every capped service as far as its nodes allow, most important first. A service under
    # a UPS with no room left cannot be raised: on a large site that skips most of them at once.
    full_ups = {u for u in range(index.ups_count) if load[u] >= capacity[u] - TOLERANCE_W}
    for i in [i for i in index.readmit_order if 0 < draw[i] < upper[i]]:
        if full_ups and not full_ups.isdisjoint(index.ups_of[i]):
            continue
        room = min((capacity[node] - load[node]) / share for node, share in index.feeds[i])
        if room > TOLERANCE_W:
            set_draw(i, min(upper[i], draw[i] + room))
            full_ups.update(u for u in index.ups_of[i] if load[u] >= capacity[u] - TOLERANCE_W)
    return draw


def _off_dependency_closure(index: _Index, draw: Sequence[float], start: int) -> list[int]:
    """`start` and every off service it transitively needs, dependencies first."""
    seen = {start}
    order: list[int] = []
    stack = [(start, False)]
    while stack:
        i, expanded = stack.pop()
        if expanded:
            order.append(i)
            continue
        stack.append((i, True))
        for d in index.depends_on[i]:
            if d not in seen and draw[d] == 0:
                seen.add(d)
                stack.append((d, False))
    return order


def _exact(
    problem: _Problem, incumbent: Sequence[float], time_budget_s: float
) -> list[float] | None:
    """The lexicographic optimum by a sequence of MILPs; None when the budget runs out.

    Variables per service i: running r_i, throttled t_i (binary) and the watts x_i it is capped
    below its upper draw. Its draw is upper_i * r_i - x_i with 0 ≤ x_i ≤ (upper_i - floor_i) t_i.
    """
    index = problem.index
    n = len(problem.upper_w)
    upper = np.asarray(problem.upper_w)
    span = upper - np.asarray(problem.floor_w)
    r, t, x = np.arange(n), np.arange(n, 2 * n), np.arange(2 * n, 3 * n)

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    upper_rhs: list[float] = []

    def add_row(entries: Sequence[tuple[int, float]], rhs: float) -> None:
        row = len(upper_rhs)
        for col, val in entries:
            rows.append(row)
            cols.append(col)
            vals.append(val)
        upper_rhs.append(rhs)

    for i in range(n):
        add_row([(t[i], 1.0), (r[i], -1.0)], 0.0)  # throttled only if running
        add_row([(x[i], 1.0), (t[i], -span[i])], 0.0)  # capped only if throttled
        for d in index.depends_on[i]:
            add_row([(r[i], 1.0), (r[d], -1.0)], 0.0)  # I1
    for node, pairs in enumerate(index.fed):
        if pairs and math.isfinite(problem.capacity_w[node]):
            entries = [(r[i], upper[i] * s) for i, s in pairs] + [(x[i], -s) for i, s in pairs]
            add_row(entries, problem.capacity_w[node])  # I2
    base = coo_matrix((vals, (rows, cols)), shape=(len(upper_rhs), 3 * n)).tocsr()
    constraints = [LinearConstraint(base, -np.inf, np.asarray(upper_rhs))]

    low = np.zeros(3 * n)
    high = np.concatenate([np.ones(n), (span > TOLERANCE_W).astype(float), span])
    for i in problem.forced_on:
        low[r[i]] = 1.0
    for i in problem.forced_off:
        high[r[i]] = high[t[i]] = high[x[i]] = 0.0
    bounds = Bounds(low, high)
    integrality = np.concatenate([np.ones(2 * n), np.zeros(n)])
    rank = np.asarray(index.rank)
    incumbent_running = np.asarray(incumbent) > 0

    objectives: list[tuple[npt.NDArray[np.float64], str]] = []
    for tier in (3, 2, 1, 0):
        members = rank == tier
        if members.any():
            objectives.append((np.concatenate([-members.astype(float), np.zeros(2 * n)]), "tier"))
    objectives.append((np.concatenate([np.zeros(n), np.ones(n), np.zeros(n)]), "throttled"))
    objectives.append((np.concatenate([-upper, np.zeros(n), np.ones(n)]), "watts"))

    solution: npt.NDArray[np.float64] | None = None
    # While the greedy meets every level solved so far, a tier it runs in full needs no search.
    incumbent_optimal = True
    for cost, level in objectives:
        incumbent_value = float(cost[:n] @ incumbent_running) if level == "tier" else math.nan
        if level == "tier" and incumbent_optimal:
            free = (cost[:n] < 0) & (high[:n] > 0)
            if incumbent_value <= -float(free.sum()):
                constraints.append(LinearConstraint(cost, -np.inf, incumbent_value + 0.5))
                continue
        result = milp(
            cost,
            constraints=constraints,
            integrality=integrality,
            bounds=bounds,
            options={"time_limit": time_budget_s, "mip_rel_gap": 0.0},
        )
        if result.status != 0 or result.x is None:
            return None
        solution = result.x
        if level == "tier" and round(float(result.fun)) != round(incumbent_value):
            incumbent_optimal = False
        # Fix this level's optimum before optimising the next one.
        slack = 0.5 if level != "watts" else TOLERANCE_W
        constraints.append(LinearConstraint(cost, -np.inf, float(result.fun) + slack))
    if solution is None:
        return None
    running = solution[r] > 0.5
    throttled = solution[t] > 0.5
    cap_below = np.where(throttled, np.clip(solution[x], 0.0, span), 0.0)
    draw = cast(list[float], np.where(running, upper - cap_below, 0.0).tolist())
    return draw if _fits(problem, draw) else None


def _result(problem: _Problem, draw: Sequence[float], *, optimal: bool, method: str) -> Allocation:
    index = problem.index
    loads = _node_loads(problem, draw)
    slack = cast(list[float], (np.asarray(problem.capacity_w) - loads).tolist())
    # Most services simply run: build their decisions in bulk, then look for a reason only for
    # the others (tuple.__new__ through map skips a Python-level constructor call per service).
    running_in_full = np.asarray(draw) >= np.asarray(problem.upper_w) - TOLERANCE_W
    running_in_full[list(problem.forced_on)] = False
    n = len(draw)
    decisions = dict(
        zip(
            index.service_ids,
            map(
                partial(tuple.__new__, Decision),
                zip(
                    repeat(ServiceState.ON, n), draw, repeat(None, n), repeat(_FITS, n), strict=True
                ),
            ),
            strict=True,
        )
    )
    for i in cast(list[int], np.flatnonzero(~running_in_full).tolist()):
        decisions[index.service_ids[i]] = _decide(problem, i, draw, slack)
    within = min(slack, default=0.0) >= -TOLERANCE_W
    totals = cast(list[float], (loads + np.asarray(problem.unmanaged_w)).tolist())
    node_load_w = dict(zip(index.node_ids, totals, strict=True))
    return Allocation(decisions, node_load_w, optimal, method, within)


_FITS = "fits within every limit"
_HELD_ON = "held on (or needed by a held-on service)"
_HELD_OFF = "held off (or needs a held-off service)"


def _decide(problem: _Problem, i: int, draw: Sequence[float], slack: Sequence[float]) -> Decision:
    index = problem.index
    watts = draw[i]
    if watts <= 0:
        if i in problem.forced_off:
            return Decision(ServiceState.OFF, 0.0, None, _HELD_OFF)
        off_deps = [index.service_ids[d] for d in index.depends_on[i] if draw[d] <= 0]
        if off_deps:
            return Decision(
                ServiceState.OFF, 0.0, None, f"off because {', '.join(off_deps)} is off"
            )
        node = _tightest_node(index, i, slack)
        return Decision(
            ServiceState.OFF,
            0.0,
            None,
            f"shed: {index.node_ids[node]} has {max(0.0, slack[node]):.0f} W left, "
            f"it needs {problem.floor_w[i]:.0f} W",
        )
    if watts < problem.upper_w[i] - TOLERANCE_W:
        node = _tightest_node(index, i, slack)
        return Decision(
            ServiceState.THROTTLED,
            watts,
            watts,
            f"capped to {watts:.0f} W of {problem.upper_w[i]:.0f} W to keep "
            f"{index.node_ids[node]} within its limit",
        )
    if i in problem.forced_on:
        return Decision(ServiceState.ON, watts, None, _HELD_ON)
    return Decision(ServiceState.ON, watts, None, _FITS)


def _tightest_node(index: _Index, i: int, slack: Sequence[float]) -> int:
    """The node feeding service i with the least room left: the one that limits it."""
    best_node, best_slack = -1, math.inf
    for node, _ in index.feeds[i]:
        if slack[node] < best_slack:
            best_node, best_slack = node, slack[node]
    return best_node
