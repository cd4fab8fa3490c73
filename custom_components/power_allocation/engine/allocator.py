"""Allocation at one instant: which services stay on, which are throttled, which go off.

Feasible means I1 (a running service has all its dependencies running) and I2 (the forecast upper
quantile of every node's total draw is within its limit). Among feasible allocations the
objective is lexicographic: the most running services of the highest tier (throttled counts as
running), then of the next tier, and so on; then the fewest throttled; then the most watts
delivered.

Sites of up to `exact_max_services` services are solved exactly as a sequence of MILPs (HiGHS,
through `scipy.optimize.milp`), each fixing the optimum of the levels before it; consecutive
counting levels share one MILP under lexicographic weights. Larger sites, or a MILP that runs
out of its time budget, get a greedy that keeps I1 and I2 and reports `optimal=False`; it works
on arrays, a whole level of nodes (outlets, PDUs, UPS units) at a time, so that 10,000 services
cost a few milliseconds. When every service fits at its full draw, that allocation is optimal
without any search.

A service on several outlets (dual PSUs) is assumed to share its draw equally between them.

A node's total upper quantile is a quantile of the sum, not the sum of each service's upper
quantile (which assumes every service peaks at the same moment, and stopped services on a normal
day): the sum of the means plus the root-sum-square of each service's spread (upper - mean),
its share through the node counted. That is exact for independent, normally distributed draws
and fair for the loads of a rack, whose errors are mostly their own (one host's job, another's
backup); where services move together (a site-wide ramp) it understates the total's spread, which
is why the overload guard watches each node's own series as well (engine/overload.py). So that the
constraint stays linear (one row per node, exact MILP, vectorised greedy), each node's spread is
fixed per call, over every service that could be on under it (not held off): it can only
overstate the spread of what the allocation keeps on. A capped service counts its cap in place of
its mean and keeps its spread: conservative again, since a cap also bounds its peak.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from itertools import repeat
from typing import Any, NamedTuple, cast

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
MILP_INTEGRALITY_TOLERANCE = 1e-6  # HiGHS's default (mip_feasibility_tolerance)
# Rounds of raising caps (see `_raise_caps`): on a thousand random sites a third round still
# raised something now and then, a fourth never did.
RAISE_ROUNDS = 3

_Ints = npt.NDArray[np.int64]
_Floats = npt.NDArray[np.float64]
_Flags = npt.NDArray[np.bool_]
_Small = npt.NDArray[np.int8]


class ServiceState(StrEnum):
    """What the allocation decided for a service."""

    ON = "on"
    THROTTLED = "throttled"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class Demand:
    """A service's forecast draw: the mean and the upper quantile (its spread: upper - mean)."""

    mean_w: float
    upper_w: float


class Decision(NamedTuple):
    """The outcome for one service; `draw_w` is the mean draw it is allowed (its cap if capped).

    A NamedTuple rather than a frozen dataclass: a large site builds one per service per cycle,
    and a NamedTuple is several times cheaper to construct.
    """

    state: ServiceState
    draw_w: float
    cap_w: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class Allocation:
    """The decision for every service and the forecast upper quantile of every node's total draw
    (`node_loads_w`'s rule, unmanaged draw included)."""

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
        """Total mean draw allowed to services."""
        return sum(d.draw_w for d in self.decisions.values())


class HoldConflictError(ValueError):
    """Holds that contradict each other through a dependency."""

    def __init__(self, message: str, services: frozenset[str]) -> None:
        super().__init__(message)
        self.services = services  # what would have to be both on and off


@dataclass(frozen=True, slots=True)
class _Index:
    """A site compiled to integer indices and arrays, built once per site and reused every cycle."""

    service_ids: tuple[str, ...]
    position: dict[str, int]
    rank: _Small
    throttle_min_w: _Floats  # NaN where a service cannot be throttled
    depends_on: tuple[tuple[int, ...], ...]
    # Every dependency edge as (dependency, dependent) arrays, and the same edges grouped by the
    # dependent's depth in the DAG, shallowest first: a closure is one vectorised step per level,
    # and dependency chains are a handful deep.
    edge_dependency: _Ints
    edge_dependent: _Ints
    edge_levels: tuple[tuple[_Ints, _Ints], ...]
    # Most important first; among equals, dependencies before dependents.
    readmit_order: _Ints
    # The most important tier that shedding a service takes down with it (its dependents').
    lost_rank: _Small
    node_ids: tuple[str, ...]
    node_limit_w: _Floats
    node_of: dict[str, int]
    # The service-node incidence, one entry per (service, node), grouped by service: service
    # feed_service[e] draws feed_share[e] of its draw through node feed_node[e].
    feed_service: _Ints
    feed_node: _Ints
    feed_share: _Floats
    feed_start: _Ints  # each service's first entry
    feeds: tuple[tuple[tuple[int, float], ...], ...]  # the same, per service, for scalar code
    # The entries through outlets, through PDUs, through UPS units: overloads are relieved in this
    # order, the most specific first, since relief on an outlet also relieves its PDU and UPS.
    entries_by_level: tuple[_Ints, ...]
    # Every entry, by node and then in readmit order: the order in which caps are raised.
    raise_entries: _Ints
    unmanaged_nodes: dict[str, tuple[int, ...]]
    # Every service id and every node id, keyed to None: a result's dicts are copies of these,
    # filled in, which is several times faster than building them (no resizing, no rehashing).
    by_service: dict[str, Any]
    by_node: dict[str, Any]


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
    for service in site.services:
        share = 1.0 / len(service.outlets)
        per_node: dict[int, float] = {}
        for outlet in service.outlets:
            for node in site.nodes_above_outlet(outlet):
                per_node[node_of[node]] = per_node.get(node_of[node], 0.0) + share
        feeds.append(tuple(per_node.items()))
    n = len(service_ids)
    feed_service = np.repeat(np.arange(n), [len(pairs) for pairs in feeds])
    feed_node = np.array([node for pairs in feeds for node, _ in pairs], dtype=np.int64)
    feed_share = np.array([share for pairs in feeds for _, share in pairs], dtype=np.float64)

    depends_on = tuple(tuple(position[d] for d in s.depends_on) for s in site.services)
    rank = [s.priority.rank for s in site.services]
    startup_order = [position[sid] for sid in site.graph.startup_order()]
    depth = [0] * n
    lost_rank = list(rank)
    for i in startup_order:
        depth[i] = max((depth[d] + 1 for d in depends_on[i]), default=0)
    for i in reversed(startup_order):
        for d in depends_on[i]:
            lost_rank[d] = max(lost_rank[d], lost_rank[i])
    edge_dependent = np.repeat(np.arange(n), [len(deps) for deps in depends_on])
    edge_dependency = np.array([d for deps in depends_on for d in deps], dtype=np.int64)
    by_depth = np.argsort(np.asarray(depth, dtype=np.int64)[edge_dependent], kind="stable")
    edge_dependent, edge_dependency = edge_dependent[by_depth], edge_dependency[by_depth]
    level_cuts = np.flatnonzero(np.diff(np.asarray(depth)[edge_dependent]) > 0) + 1
    readmit_order = np.array(sorted(startup_order, key=lambda i: -rank[i]), dtype=np.int64)
    readmit_place = np.empty(n, dtype=np.int64)
    readmit_place[readmit_order] = np.arange(n)
    node_kind = np.array([node.kind for node in site.nodes])[feed_node]
    return _Index(
        service_ids=service_ids,
        position=position,
        rank=np.asarray(rank, dtype=np.int8),
        throttle_min_w=np.array(
            [math.nan if s.throttle_min_w is None else s.throttle_min_w for s in site.services],
            dtype=np.float64,
        ),
        depends_on=depends_on,
        edge_dependency=edge_dependency,
        edge_dependent=edge_dependent,
        edge_levels=tuple(
            zip(
                np.split(edge_dependency, level_cuts),
                np.split(edge_dependent, level_cuts),
                strict=True,
            )
        ),
        readmit_order=readmit_order,
        lost_rank=np.asarray(lost_rank, dtype=np.int8),
        node_ids=node_ids,
        node_limit_w=np.array(
            [math.inf if node.limit_w is None else node.limit_w for node in site.nodes],
            dtype=np.float64,
        ),
        node_of=node_of,
        feed_service=feed_service,
        feed_node=feed_node,
        feed_share=feed_share,
        feed_start=np.searchsorted(feed_service, np.arange(n)),
        feeds=tuple(feeds),
        entries_by_level=tuple(
            np.flatnonzero(node_kind == kind) for kind in ("outlet", "pdu", "ups")
        ),
        raise_entries=np.lexsort((readmit_place[feed_service], feed_node)),
        unmanaged_nodes={
            outlet: tuple(node_of[n] for n in site.nodes_above_outlet(outlet))
            for outlet in site.unmanaged_outlets
        },
        by_service=dict.fromkeys(service_ids),
        by_node=dict.fromkeys(node_ids),
    )


@dataclass(slots=True)
class _Problem:
    """One allocation's numbers, by service and node index."""

    index: _Index
    full_w: _Floats  # what a running, uncapped service counts: its mean
    deviation_w: _Floats  # each service's spread, upper - mean
    floor_w: _Floats  # the least a running service can draw
    capacity_w: _Floats  # node limit minus unmanaged draw and the node's spread
    unmanaged_w: _Floats  # per node
    forced_on: _Flags
    forced_off: _Flags  # by the holds, or unfit
    unfit: _Flags  # too wide for a node even alone (or needs such a service): off, not held


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
    draw = np.where(problem.forced_off, 0.0, problem.full_w)
    if _fits(problem, draw):
        return _result(problem, draw, optimal=True, method="all_fit")
    greedy = _greedy(problem)
    if len(draw) <= exact_max_services:
        exact = _exact(problem, greedy, time_budget_s)
        if exact is not None:
            return _result(problem, exact, optimal=True, method="milp")
    return _result(problem, greedy, optimal=False, method="greedy")


def node_loads_w(
    site: Site,
    demand_w: Mapping[str, Demand],
    running: frozenset[str],
    unmanaged_w: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """The forecast upper quantile of every node's total draw with `running` on, limits aside:
    the sum of the means plus the root-sum-square of the spreads (see the module docstring)."""
    index = _index(site)
    on = np.array([sid in running for sid in index.service_ids], dtype=np.bool_)
    mean = np.array([demand_w[sid].mean_w for sid in index.service_ids], dtype=np.float64)
    upper = np.array([demand_w[sid].upper_w for sid in index.service_ids], dtype=np.float64)
    loads = _node_loads(index, np.where(on, mean, 0.0)) + _spread(index, upper - mean, on)
    for outlet, watts in (unmanaged_w or {}).items():
        loads[list(index.unmanaged_nodes[outlet])] += watts
    return dict(zip(index.node_ids, (float(w) for w in loads), strict=True))


def service_node_shares(site: Site, service_id: str) -> dict[str, float]:
    """The share of a service's draw that each node above it carries (1 through a UPS that
    feeds both of a dual-fed service's PDUs)."""
    index = _index(site)
    return {index.node_ids[n]: share for n, share in index.feeds[index.position[service_id]]}


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
        demands = list(map(demand_w.__getitem__, index.service_ids))
    except KeyError as missing:
        raise ValueError(f"no demand forecast for service {missing.args[0]!r}") from None
    upper = np.array([d.upper_w for d in demands], dtype=np.float64)
    mean = np.array([d.mean_w for d in demands], dtype=np.float64)
    for name, values in (("upper_w", upper), ("mean_w", mean)):
        bad = ~(np.isfinite(values) & (values >= 0))
        if bad.any():
            first = int(np.argmax(bad))
            _watts(f"service {index.service_ids[first]!r}: {name}", float(values[first]))
    full = np.maximum(mean, MIN_RUNNING_W)
    deviation = np.maximum(upper - full, 0.0)
    minimum = index.throttle_min_w
    floor = np.where(np.isnan(minimum), full, np.fmin(minimum, full))
    capacity = index.node_limit_w.copy()
    unmanaged = np.zeros(len(capacity))
    for node_id, limit in limits_w.items():
        if node_id not in index.node_of:
            raise ValueError(f"limit given for unknown node {node_id!r}")
        # An infinite limit lifts the node's own (the overload guard binds only the nodes it
        # sheds on).
        capacity[index.node_of[node_id]] = (
            limit if limit == math.inf else _watts(f"limit of {node_id!r}", limit)
        )
    for outlet, watts in unmanaged_w.items():
        if outlet not in index.unmanaged_nodes:
            raise ValueError(f"{outlet!r} is not an unmanaged outlet of this site")
        unmanaged[list(index.unmanaged_nodes[outlet])] += _watts(
            f"unmanaged outlet {outlet!r}", watts
        )
    forced_on, forced_off = _forced_by_holds(index, held_on, held_off)
    clash = _both(index, forced_on, forced_off)
    if clash:
        raise HoldConflictError(
            f"holds conflict: {', '.join(sorted(clash))} would have to be both on (a held-on "
            "service needs it) and off (it is held off or needs a held-off service)",
            clash,
        )
    room = capacity - unmanaged
    # A service whose own forecast, at its floor with its spread, is over a node's room runs in
    # no allocation: it is off, with what needs it, and its spread is no part of its nodes'.
    alone_w = (floor + deviation)[index.feed_service] * index.feed_share
    too_wide = np.zeros(len(full), dtype=np.bool_)
    too_wide[index.feed_service[alone_w > room[index.feed_node] + TOLERANCE_W]] = True
    unfit = _dependent_closure(index, np.flatnonzero(too_wide & ~forced_on))
    unfit &= ~(forced_on | forced_off)
    could_run = ~(forced_off | unfit)
    # The spread takes room down to nothing, never below: with all of it off a node is within
    # its limit whatever its services' spreads (below nothing, only unmanaged draw or holds).
    spread = np.minimum(_spread(index, deviation, could_run), np.maximum(room, 0.0))
    return _Problem(
        index, full, deviation, floor, room - spread, unmanaged, forced_on, ~could_run, unfit
    )


def hold_conflicts(site: Site, held_on: frozenset[str], held_off: frozenset[str]) -> frozenset[str]:
    """What these holds would force both on and off (empty where they agree): `allocate` refuses
    such holds with `HoldConflictError`."""
    index = _index(site)
    return _both(index, *_forced_by_holds(index, held_on, held_off))


def _forced_by_holds(
    index: _Index, held_on: frozenset[str], held_off: frozenset[str]
) -> tuple[_Flags, _Flags]:
    """What the holds force on (held on, and what that needs) and off (held off, and what needs
    that) (I8)."""
    position = index.position
    for sid in held_on | held_off:
        if sid not in position:
            raise ValueError(f"hold on unknown service {sid!r}")
    forced_on = _dependency_closure(index, [position[s] for s in held_on])
    forced_off = _dependent_closure(index, [position[s] for s in held_off])
    return forced_on, forced_off


def _both(index: _Index, forced_on: _Flags, forced_off: _Flags) -> frozenset[str]:
    clash = np.flatnonzero(forced_on & forced_off)
    return frozenset(index.service_ids[i] for i in cast(list[int], clash.tolist()))


def _watts(what: str, value: float) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite, non-negative number of watts, got {value!r}")
    return float(value)


def _dependent_closure(index: _Index, start: Sequence[int] | _Ints) -> _Flags:
    """`start` and everything that transitively depends on it."""
    reached = np.zeros(len(index.service_ids), dtype=np.bool_)
    if len(start):
        reached[np.asarray(start, dtype=np.int64)] = True
        for dependency, dependent in index.edge_levels:
            reached[dependent[reached[dependency]]] = True
    return reached


def _dependency_closure(index: _Index, start: Sequence[int]) -> _Flags:
    """`start` and everything it transitively depends on."""
    reached = np.zeros(len(index.service_ids), dtype=np.bool_)
    if start:
        reached[np.asarray(start, dtype=np.int64)] = True
        for dependency, dependent in reversed(index.edge_levels):
            reached[dependency[reached[dependent]]] = True
    return reached


def _spread(index: _Index, deviation_w: _Floats, on: _Flags) -> _Floats:
    """Per node, the root-sum-square of the spreads of the `on` services under it."""
    weights = np.where(on, deviation_w, 0.0)[index.feed_service] * index.feed_share
    squares = np.bincount(index.feed_node, weights=weights**2, minlength=len(index.node_ids))
    return cast(_Floats, np.sqrt(squares))


def _node_loads(index: _Index, draw: _Floats) -> _Floats:
    weights = draw[index.feed_service] * index.feed_share
    return cast(
        _Floats, np.bincount(index.feed_node, weights=weights, minlength=len(index.node_ids))
    )


def _fits(problem: _Problem, draw: _Floats) -> bool:
    return bool(np.all(_node_loads(problem.index, draw) <= problem.capacity_w + TOLERANCE_W))


def _greedy(problem: _Problem) -> _Floats:
    """Throttle, then shed, the least important load on each overloaded node; then win back.

    Shedding a service sheds its running dependents with it (I1); forced services are never
    shed or started (held-on ones may be throttled: they keep running).
    """
    full, floor = problem.full_w, problem.floor_w
    rank, lost_rank = problem.index.rank, problem.index.lost_rank
    draw = np.where(problem.forced_off, 0.0, full)
    movable = ~(problem.forced_on | problem.forced_off)
    # Throttle the least important first, the biggest reduction first among equals. Every
    # candidate still draws its full draw until throttled, so the order is fixed up front.
    place = _places(draw > floor, rank, floor - draw)
    _relieve(problem, draw, floor, ~problem.forced_off, place, with_dependents=False)
    # Shed what takes the least important tier down with it first, the biggest draw first.
    place = _places((draw > 0) & movable, lost_rank * len(TIERS_MOST_IMPORTANT_FIRST) + rank, -draw)
    _relieve(problem, draw, np.zeros(len(draw)), movable, place, with_dependents=True)
    _win_back(problem, draw, movable)
    _raise_caps(problem, draw)
    return draw


def _relieve(
    problem: _Problem,
    draw: _Floats,
    target_w: _Floats,
    allowed: _Flags,
    place: _Ints,
    *,
    with_dependents: bool,
) -> None:
    """Bring services down to `target_w`, in `place` order, until no node is overloaded.

    Node levels go one at a time, the most specific first (outlets, PDUs, UPS units), since
    relief on an outlet also relieves its PDU and UPS. A whole level goes at once: on each of its
    overloaded nodes, the first services whose own freed watts cover the excess. That can only
    free too much, never too little (a service also frees its other nodes, and its dependents
    shed with it free more); the win back returns what turns out to fit again.
    """
    index = problem.index
    loads = _node_loads(index, draw)
    for entries in index.entries_by_level:
        service = index.feed_service[entries]
        while True:
            excess = loads - problem.capacity_w
            candidates = (draw > target_w) & allowed
            picked = (excess[index.feed_node[entries]] > TOLERANCE_W) & candidates[service]
            if not picked.any():
                break
            freed = (draw - target_w)[service[picked]] * index.feed_share[entries[picked]]
            chosen = _relievers(index, entries[picked], freed, place, excess)
            moved = _dependent_closure(index, chosen) if with_dependents else chosen
            draw[moved] = target_w[moved]
            loads = _node_loads(index, draw)


def _places(among: _Flags, ranks: _Small, watts: _Floats) -> _Ints:
    """Each service's place among `among` sorted by `ranks`, then `watts`, then index."""
    members = np.flatnonzero(among)
    count = len(members)
    values = watts[members]
    by_value = np.argsort(values)
    ordered = values[by_value]
    # Equal watts share one dense rank: then one sort of unique integer keys does it all, several
    # times faster than a stable float sort (throttle floors are round numbers: ties are common).
    dense = np.empty(count, dtype=np.int64)
    dense[by_value] = np.cumsum(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    key = (ranks[members].astype(np.int64) * (count + 1) + dense) * count + np.arange(count)
    place = np.zeros(len(among), dtype=np.int64)
    place[members[np.argsort(key)]] = np.arange(count)
    return place


def _sum_before(node: _Ints, amount: _Floats) -> _Floats:
    """For entries sorted by node: the sum of `amount` over the earlier entries of the same node."""
    before = np.concatenate(([0.0], np.cumsum(amount)[:-1]))
    start = np.flatnonzero(np.diff(node, prepend=-1))
    base: _Floats = np.repeat(before[start], np.diff(start, append=len(node)))
    return before - base


def _relievers(
    index: _Index, entries: _Ints, relief: _Floats, place: _Ints, excess: _Floats
) -> _Ints:
    """For every node of `entries`: its services, in `place` order, until their relief covers
    the node's excess (each entry's `relief` is what its service frees on that node)."""
    node = index.feed_node[entries]
    service = index.feed_service[entries]
    order = np.argsort(node * len(place) + place[service])
    node, service = node[order], service[order]
    before = _sum_before(node, relief[order])
    chosen: _Ints = service[before < excess[node] - TOLERANCE_W]
    return chosen


def _win_back(problem: _Problem, draw: _Floats, movable: _Flags) -> None:
    """Readmit what now fits at its floor, most important first, dependencies before dependents.

    One service at a time, each with the off services it needs: only what this allocation shed
    is a candidate, a small part of a large site.
    """
    index = problem.index
    order = index.readmit_order
    candidates: list[int] = order[(draw[order] == 0) & movable[order]].tolist()
    if not candidates:
        return
    off = set(cast(list[int], np.flatnonzero(draw == 0).tolist()))
    may_start = set(candidates)
    floor = dict(
        zip(candidates, cast(list[float], problem.floor_w[candidates].tolist()), strict=True)
    )
    room = cast(list[float], (problem.capacity_w - _node_loads(index, draw)).tolist())
    started: list[int] = []
    for i in candidates:
        if i not in off:  # started as a dependency of an earlier one
            continue
        # Room only shrinks: once a node is full, this spares most candidates their closure.
        if any(floor[i] * share > room[node] + TOLERANCE_W for node, share in index.feeds[i]):
            continue
        needed = _off_dependency_closure(index, off, i)
        if not may_start.issuperset(needed):
            continue
        extra_by_node: dict[int, float] = {}
        for k in needed:
            for node, share in index.feeds[k]:
                extra_by_node[node] = extra_by_node.get(node, 0.0) + floor[k] * share
        if all(watts <= room[node] + TOLERANCE_W for node, watts in extra_by_node.items()):
            for node, watts in extra_by_node.items():
                room[node] -= watts
            off.difference_update(needed)
            started.extend(needed)
    draw[started] = problem.floor_w[started]


def _off_dependency_closure(index: _Index, off: set[int], start: int) -> list[int]:
    """`start` and every off service it transitively needs."""
    seen = {start}
    stack = [start]
    while stack:
        for d in index.depends_on[stack.pop()]:
            if d in off and d not in seen:
                seen.add(d)
                stack.append(d)
    return list(seen)


def _raise_caps(problem: _Problem, draw: _Floats) -> None:
    """Raise every capped service as far as its nodes allow, most important first.

    Each round hands every node's room out to the capped services that still have room on all
    their nodes, in that order, and raises each by the least any of its nodes grants it. A
    service held back by one node leaves room it was granted on another unused: the next round
    hands that on.
    """
    index = problem.index
    upper = problem.full_w
    room = problem.capacity_w - _node_loads(index, draw)
    for _ in range(RAISE_ROUNDS):
        capped = (draw > 0) & (draw < upper)
        entries = index.raise_entries[capped[index.feed_service[index.raise_entries]]]
        full = room[index.feed_node[entries]] <= TOLERANCE_W
        blocked = np.bincount(index.feed_service[entries], weights=full, minlength=len(draw))
        entries = entries[blocked[index.feed_service[entries]] == 0]
        if not entries.size:
            return
        node, service = index.feed_node[entries], index.feed_service[entries]
        share = index.feed_share[entries]
        wanted = (upper - draw)[service] * share
        granted = np.clip(room[node] - _sum_before(node, wanted), 0.0, wanted) / share
        least_granted = np.full(len(draw), np.inf)
        np.minimum.at(least_granted, service, granted)
        raise_w = np.where(least_granted < np.inf, least_granted, 0.0)
        draw[:] = np.where(raise_w >= upper - draw, upper, draw + raise_w)
        room = problem.capacity_w - _node_loads(index, draw)


def _exact(problem: _Problem, incumbent: _Floats, time_budget_s: float) -> _Floats | None:
    """The lexicographic optimum by a sequence of MILPs; None when the budget runs out.

    Variables per service i: running r_i, throttled t_i (binary) and the watts x_i it is capped
    below its full draw (its mean; the node's spread is already out of its capacity). Its draw is
    upper_i * r_i - x_i with 0 ≤ x_i ≤ (upper_i - floor_i) t_i.
    """
    index = problem.index
    n = len(problem.full_w)
    upper = problem.full_w
    span = upper - problem.floor_w
    r, t, x = np.arange(n), np.arange(n, 2 * n), np.arange(2 * n, 3 * n)
    ones = np.ones(n)
    edges = len(index.edge_dependent)
    # I2 rows: one per node with a finite limit and something on it.
    entries = np.flatnonzero(np.isfinite(problem.capacity_w)[index.feed_node])
    limited_nodes, node_row = np.unique(index.feed_node[entries], return_inverse=True)
    feed_service, feed_share = index.feed_service[entries], index.feed_share[entries]
    edge_rows = 2 * n + np.arange(edges)
    node_rows = 2 * n + edges + node_row
    # Every term of every row, as (rows, columns, coefficients); each row is ≤ its bound.
    terms = [
        (r, t, ones),  # throttled only if running: t_i - r_i ≤ 0
        (r, r, -ones),
        (n + r, x, ones),  # capped only if throttled: x_i - span_i t_i ≤ 0
        (n + r, t, -span),
        (edge_rows, r[index.edge_dependent], np.ones(edges)),  # I1: r_i - r_d ≤ 0
        (edge_rows, r[index.edge_dependency], -np.ones(edges)),
        (node_rows, r[feed_service], upper[feed_service] * feed_share),  # I2: on each node,
        (node_rows, x[feed_service], -feed_share),  # Σ share_i (upper_i r_i - x_i) ≤ capacity
    ]
    rows, cols, vals = (np.concatenate(column) for column in zip(*terms, strict=True))
    row_count = 2 * n + edges + len(limited_nodes)
    rhs = np.concatenate([np.zeros(2 * n + edges), problem.capacity_w[limited_nodes]])
    base = coo_matrix((vals, (rows, cols)), shape=(row_count, 3 * n)).tocsr()
    constraints = [LinearConstraint(base, -np.inf, rhs)]

    low = np.zeros(3 * n)
    high = np.concatenate([ones, (span > TOLERANCE_W).astype(float), span])
    low[r[problem.forced_on]] = 1.0
    off = np.flatnonzero(problem.forced_off)
    high[r[off]] = high[t[off]] = high[x[off]] = 0.0
    bounds = Bounds(low, high)
    integrality = np.concatenate([np.ones(2 * n), np.zeros(n)])
    incumbent_running = incumbent > 0

    # The integer levels, most important first: running per tier, then throttled.
    levels = [
        np.concatenate([-(index.rank == tier).astype(float), np.zeros(2 * n)])
        for tier in (3, 2, 1, 0)
        if np.any(index.rank == tier)
    ]
    tier_levels = len(levels)
    levels.append(np.concatenate([np.zeros(n), ones, np.zeros(n)]))
    options = {"time_limit": time_budget_s, "mip_rel_gap": 0.0}
    # While the greedy meets every level solved so far, a tier it runs in full needs no search.
    incumbent_optimal = True
    level = 0
    while level < len(levels):
        if level < tier_levels and incumbent_optimal:
            incumbent_value = float(levels[level][:n] @ incumbent_running)
            if incumbent_value <= -float(np.count_nonzero((levels[level] < 0) & (high > 0))):
                constraints.append(LinearConstraint(levels[level], -np.inf, incumbent_value + 0.5))
                level += 1
                continue
        group, cost = _level_group(levels[level:], high)
        result = milp(
            cost, constraints=constraints, integrality=integrality, bounds=bounds, options=options
        )
        if result.status != 0 or result.x is None:
            return None
        # Fix each level's optimum before optimising the next ones: one row per level makes a
        # tighter relaxation for the next MILP than the weighted sum would.
        for solved in range(level, level + group):
            optimum = round(float(levels[solved] @ result.x))
            constraints.append(LinearConstraint(levels[solved], -np.inf, optimum + 0.5))
            if solved < tier_levels and optimum != levels[solved][:n] @ incumbent_running:
                incumbent_optimal = False
        level += group
    watts = np.concatenate([-upper, np.zeros(n), ones])
    result = milp(
        watts, constraints=constraints, integrality=integrality, bounds=bounds, options=options
    )
    if result.status != 0 or result.x is None:
        return None
    solution = result.x
    running = solution[r] > 0.5
    throttled = solution[t] > 0.5
    cap_below = np.where(throttled, np.clip(solution[x], 0.0, span), 0.0)
    draw: _Floats = np.where(running, upper - cap_below, 0.0)
    return draw if _fits(problem, draw) else None


def _level_group(levels: Sequence[_Floats], high: _Floats) -> tuple[int, _Floats]:
    """How many of the integer `levels` one MILP can solve together, and its cost.

    Weighted so that one unit of a level outweighs every later level of the group, the sum is
    lexicographic. Its weights stay small enough that HiGHS's integrality tolerance (1e-6 on
    each variable) moves it by less than half of its smallest unit: then the optimum is exact.
    """
    cost = levels[0]
    magnitude = float(np.count_nonzero((cost != 0) & (high > 0)))
    group = 1
    for following in levels[1:]:
        units = float(np.count_nonzero((following != 0) & (high > 0)))
        if (magnitude * (units + 1) + units) * MILP_INTEGRALITY_TOLERANCE >= 0.25:
            break
        cost = cost * (units + 1) + following
        magnitude = magnitude * (units + 1) + units
        group += 1
    return group, cost


_FITS = "fits within every limit"
_HELD_ON = "held on (or needed by a held-on service)"
_HELD_OFF = "held off (or needs a held-off service)"
_STATE_BY_CODE = np.array([ServiceState.ON, ServiceState.THROTTLED, ServiceState.OFF], dtype=object)
_decision = partial(tuple.__new__, Decision)


def _result(problem: _Problem, draw: _Floats, *, optimal: bool, method: str) -> Allocation:
    """The allocation with a decision and its reason for every service, built column by column."""
    index = problem.index
    n = len(draw)
    loads = _node_loads(index, draw)
    slack = problem.capacity_w - loads
    off = draw <= 0
    throttled = ~off & (draw < problem.full_w - TOLERANCE_W)
    reasons = [_FITS] * n
    _put(reasons, problem.forced_on & ~off & ~throttled, repeat(_HELD_ON))
    held_off = problem.forced_off & ~problem.unfit
    _put(reasons, held_off, repeat(_HELD_OFF))
    shed = off & ~held_off
    if shed.any():
        off_dependencies = np.bincount(
            index.edge_dependent, weights=off[index.edge_dependency], minlength=n
        )
        cascaded = shed & (off_dependencies > 0)
        shed &= ~cascaded
        ids = index.service_ids
        _put(
            reasons,
            cascaded,
            (
                f"off because {', '.join(ids[d] for d in index.depends_on[i] if off[d])} is off"
                for i in cast(list[int], np.flatnonzero(cascaded).tolist())
            ),
        )
    caps: list[float | None] = [None] * n
    if shed.any() or throttled.any():
        tightest = _tightest_nodes(index, slack)
        node_ids = index.node_ids
        _put(
            reasons,
            shed,
            (
                f"shed: {node_ids[node]} has {left} W left, it needs {needs} W"
                for node, left, needs in zip(
                    cast(list[int], tightest[shed].tolist()),
                    _whole_watts(np.maximum(0.0, slack[tightest[shed]])),
                    # What is too wide for a node even alone needs its spread as well.
                    _whole_watts(
                        (problem.floor_w + np.where(problem.unfit, problem.deviation_w, 0.0))[shed]
                    ),
                    strict=True,
                )
            ),
        )
        capped_w = draw[throttled]
        _put(caps, throttled, cast(list[float], capped_w.tolist()))
        _put(
            reasons,
            throttled,
            (
                f"capped to {cap} W of {upper} W to keep {node_ids[node]} within its limit"
                for cap, upper, node in zip(
                    _whole_watts(capped_w),
                    _whole_watts(problem.full_w[throttled]),
                    cast(list[int], tightest[throttled].tolist()),
                    strict=True,
                )
            ),
        )
    states = cast(list[ServiceState], _STATE_BY_CODE[np.where(off, 2, throttled)].tolist())
    draws = cast(list[float], draw.tolist())
    decisions = index.by_service.copy()
    decisions.update(
        zip(
            index.service_ids,
            map(_decision, zip(states, draws, caps, reasons, strict=True)),
            strict=True,
        )
    )
    node_load_w = index.by_node.copy()
    spread = _spread(index, problem.deviation_w, ~off)
    totals = cast(list[float], (loads + problem.unmanaged_w + spread).tolist())
    node_load_w.update(zip(index.node_ids, totals, strict=True))
    within = bool(np.all(slack >= -TOLERANCE_W))
    return Allocation(decisions, node_load_w, optimal, method, within)


def _put(column: list[Any], where: _Flags, values: Iterable[Any]) -> None:
    """Set `column` at the services `where` is true for, in order, to `values`."""
    for i, value in zip(cast(list[int], np.flatnonzero(where).tolist()), values, strict=False):
        column[i] = value


def _tightest_nodes(index: _Index, slack: _Floats) -> _Ints:
    """For every service, the node feeding it with the least room left: the one that limits it."""
    entry_slack = slack[index.feed_node]
    least = np.minimum.reduceat(entry_slack, index.feed_start)
    tight = np.flatnonzero(entry_slack == least[index.feed_service])
    first = tight[np.diff(index.feed_service[tight], prepend=-1) > 0]
    nodes: _Ints = index.feed_node[first]
    return nodes


def _whole_watts(watts: _Floats) -> list[int]:
    """Watts rounded for a reason (as `f"{w:.0f}"` would, half to even), as Python ints."""
    return cast(list[int], np.rint(watts).astype(np.int64).tolist())
