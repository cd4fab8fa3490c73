"""The plan for the rest of an outage: when each service would be throttled or shut down.

The objective is the expected weighted uptime ratio over the outage-duration distribution, counted
as the simulation report counts it: a service is down from its stop until it runs again after
mains returns. A service of weight w kept on until t is worth w · E[min(t, remaining outage) / D]
(engine/outage.py says why each outage counts by its ratio), less w · E[restart / D; the outage
outlasts t]: the restart it then owes, whether the plan or the final shutdown stopped it. A
restart is the restore delay, the startup of whatever it needs that was stopped too (each starts
only once what it needs runs, one start every restore stagger) and its own startup; after the
final shutdown everything restarts, one stagger after the other, and the last wait longest.

Keeping a service on costs energy that the services still running at the end would otherwise
have had. With a price μ on that energy, a service is worth its draw P while the worth of its next
second, w · W(t) plus the restart a stop then would cost should the outage end then, is at least
μ · P: so each service stops at the time that worth falls to μ · P / w, and a throttle-capable one
is first capped (it then draws less, so it stays on longer). The planner searches μ on a grid; for
each, it walks every UPS's charge forward along the schedule (with the battery model) to the
moment the charge left is what a clean shutdown of everything still on needs, and that is when
the final shutdown starts (I4). The μ with the highest expected score wins.

Critical services, and whatever they depend on, are never stopped before the final shutdown (I4);
a service stops no later than anything it depends on (I1). Energy is planned on the mean draw, the
reserve for the final shutdown on the upper quantile plus a margin. Services already on their way
down are in the walk and the reserve until their draw ends, and no longer in the schedule: a stop
under way still costs charge, and what they depend on can begin to stop only after them.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from .allocator import Demand
from .battery import BatteryModel, shutdown_reserve
from .model import TIERS_MOST_IMPORTANT_FIRST, Priority, Service, Site
from .outage import ConditionalOutage

TIER_WEIGHTS: Mapping[Priority, float] = {
    Priority.CRITICAL: 1000.0,
    Priority.HIGH: 100.0,
    Priority.MEDIUM: 10.0,
    Priority.LOW: 1.0,
}
PRICE_GRID_SIZE = 24
RESERVE_MARGIN_RATIO = 0.15
HORIZON_S = 4 * 3600.0
RIDE_THROUGH_S = 120.0  # how long a blip is ridden through before anything is stopped
RIDE_THROUGH_COST_RATIO = 0.1  # ... unless it costs the last services more of their runtime
RESTORE_DELAY_S = 60.0  # mains must be stable this long before anything restarts (I6)
RESTORE_STAGGER_S = 15.0  # between two starts after mains returns (I6)


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One action the plan would take if the outage goes on."""

    at_s: float  # from now
    service_id: str
    action: str  # "throttle" or "shutdown"
    cap_w: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """The staged schedule and what it predicts."""

    steps: tuple[PlanStep, ...]
    stop_at_s: Mapping[str, float]  # when each running service starts to shut down
    throttle_at_s: Mapping[str, float]  # when each throttle-capable service is capped (inf: never)
    final_shutdown_at_s: float  # when the clean shutdown of everything still on begins
    tier_runtime_s: Mapping[Priority, float]  # until the last service of each tier stops
    expected_score: float
    energy_price: float
    ride_through_s: float  # from now: the blip ride-through granted; nothing stops before


@dataclass(frozen=True, slots=True)
class _Candidate:
    score: float
    price: float
    stop_at_s: npt.NDArray[np.float64]  # follows _Context.on
    throttle_at_s: npt.NDArray[np.float64]
    final_at_s: float


@dataclass(frozen=True)
class _Context:
    """What every candidate schedule of one planning call shares; arrays follow `on`."""

    site: Site
    on: tuple[Service, ...]  # running, then stopping
    stopping: npt.NDArray[np.bool_]  # already on its way down: stops at 0 whatever the price
    weight: npt.NDArray[np.float64]  # each running service's own tier weight (0 when stopping)
    value: npt.NDArray[np.float64]  # its weight plus its running dependents'
    untouchable: npt.NDArray[np.bool_]  # critical, or needed by a critical service
    mean_w: npt.NDArray[np.float64]
    floor_w: npt.NDArray[np.float64]  # NaN where it cannot be throttled below its mean
    # What stopping each service at t costs after mains returns, per unit of W(t) (tier weight
    # times seconds): its own restart and the wait of whatever restarts behind it (0 for one
    # already stopping: that is owed whatever the plan).
    owed_ws: npt.NDArray[np.float64]
    queue_ws: float  # the same for the restore's queue after a final shutdown, per unit of W(F)
    # The restart its stop decision weighs: the owed_ws of its dependent closure (stopped with
    # it) per unit of the closure's worth.
    restart_s: npt.NDArray[np.float64]
    shutdown_s: npt.NDArray[np.float64]  # how long it still draws once its stop begins
    dependency_edges: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]  # (user, needed)
    # How much earlier than its own stop what depends on it must be asked: the longest chain of
    # its running dependents' shutdown_s (the controller asks them that early).
    stop_lead_s: npt.NDArray[np.float64]
    demand_w: Mapping[str, Demand]
    outage: ConditionalOutage
    batteries: Mapping[str, BatteryModel]
    soc_ratio: Mapping[str, float]
    reserves: tuple[_Reserve, ...]  # per UPS
    margin_ratio: float


def plan_outage(
    site: Site,
    batteries: Mapping[str, BatteryModel],
    soc_ratio: Mapping[str, float],
    demand_w: Mapping[str, Demand],
    outage: ConditionalOutage,
    *,
    running: frozenset[str] | None = None,
    stopping: Mapping[str, float] | None = None,
    unmanaged_w: Mapping[str, float] | None = None,
    weights: Mapping[Priority, float] = TIER_WEIGHTS,
    reserve_margin_ratio: float = RESERVE_MARGIN_RATIO,
    restore_delay_s: float = RESTORE_DELAY_S,
    restore_stagger_s: float = RESTORE_STAGGER_S,
    ride_through_s: float = RIDE_THROUGH_S,
    ride_through_cost_ratio: float = RIDE_THROUGH_COST_RATIO,
    horizon_s: float = HORIZON_S,
) -> Plan:
    """Plan the rest of the outage for the services in `running` (all by default).

    `batteries` and `soc_ratio` are keyed by UPS id; `demand_w` by service id (the forecast over
    the coming hours); `unmanaged_w` by unmanaged outlet. `stopping` holds the services already
    asked to stop, or waiting for their dependents to be down first, each with how long it still
    draws once its own stop begins: they are not planned, but their draw is walked and reserved.
    """
    context = _context(
        site, batteries, soc_ratio, demand_w, outage, running, stopping or {}, unmanaged_w or {},
        weights, reserve_margin_ratio, restore_delay_s, restore_stagger_s,
    )  # fmt: skip
    movable = ~context.untouchable & (context.value > 0) & (context.mean_w > 0)
    prices: npt.NDArray[np.float64] = np.zeros(1)
    if movable.any():
        # A service stops once its worth per second falls below price * P / value: the grid
        # spans "keep everything" to "stop every service that may be stopped at once".
        top = float(np.max(context.value[movable] / context.mean_w[movable])) * 10.0
        top *= float(outage.worths(np.zeros(1))[0])
        prices = np.concatenate([prices, np.geomspace(1e-4, 1.0, PRICE_GRID_SIZE - 1) * top])
    # Each price's own schedule is computed once; neighbouring prices often give the same
    # schedule, which is then scored once.
    schedules = _schedules(context, prices)
    scored: dict[bytes, _Candidate] = {}

    def best_riding(ride_s: float) -> _Candidate:
        return max((_evaluate(context, *s, ride_s, scored) for s in schedules), key=_by_score)

    best = best_riding(0.0)
    # Ride through a blip without stopping anything for as much of `ride_through_s` as costs the
    # services that run to the end no more than a small share of their runtime. The cost of
    # riding is priced per second and the share applies to the whole ride from the outage's
    # start, so that re-planning every cycle does not grant the share again each time.
    ridden_s = ride_s = max(0.0, ride_through_s - outage.elapsed_s)
    # What a stop needs is asked for its lead earlier: a ride delays the schedule if it delays
    # any of those asks, not only the stops themselves.
    asks_s = (best.stop_at_s - context.stop_lead_s)[~context.stopping]
    first_ask_s = float(np.min(asks_s, initial=math.inf))
    if ride_s > 0 and first_ask_s < ride_s:
        riding = best_riding(ride_s)
        if riding.score >= best.score:
            best = riding  # the restarts a blip would cost pay for the ride
        elif not math.isfinite(best.final_at_s):
            # The schedule stops everything it may in time, and riding would leave too little
            # to: the final shutdown it would bring on is no price for riding out a blip.
            ridden_s = 0.0
        else:
            # What riding costs is what it costs the schedule chosen: the same stops, delayed,
            # bring its final shutdown sooner (the best schedule under the ride may keep the
            # final shutdown where it was only by stopping other services sooner: a cost too).
            delayed = _evaluate(
                context, *next(s for s in schedules if s[0] == best.price), ride_s, scored
            )
            cost_per_s = (best.final_at_s - delayed.final_at_s) / ride_s
            # Paid only as far as it may pay off: by the prior's chance that an outage is over
            # within the ride-through (none, for an outage known to be long).
            share = ride_through_cost_ratio * (1.0 - outage.prior.survival(ride_through_s))
            affordable_s = share * best.final_at_s / cost_per_s if cost_per_s > 0 else math.inf
            ridden_s = min(ride_s, max(0.0, affordable_s - outage.elapsed_s))
            if ridden_s == ride_s:
                best = riding
            elif ridden_s > 0:
                best = best_riding(ridden_s)
    return _plan_from(context, best, ridden_s, horizon_s)


def _context(
    site: Site,
    batteries: Mapping[str, BatteryModel],
    soc_ratio: Mapping[str, float],
    demand_w: Mapping[str, Demand],
    outage: ConditionalOutage,
    running: frozenset[str] | None,
    stopping: Mapping[str, float],
    unmanaged_w: Mapping[str, float],
    weights: Mapping[Priority, float],
    margin_ratio: float,
    restore_delay_s: float,
    restore_stagger_s: float,
) -> _Context:
    planned = tuple(
        s for s in site.services if (running is None or s.id in running) and s.id not in stopping
    )
    on = planned + tuple(s for s in site.services if s.id in stopping)
    position = {s.id: i for i, s in enumerate(on)}
    is_stopping = np.arange(len(on)) >= len(planned)
    graph = site.graph
    weight = np.array([weights[s.priority] for s in on], dtype=np.float64)
    weight[is_stopping] = 0.0
    # Stopping a service stops what depends on it, so it is worth its dependents too; and what a
    # critical service needs is as untouchable as the critical service itself.
    value = np.zeros(len(on))
    untouchable = np.zeros(len(on), dtype=bool)
    restarts = site_restarts(site, weights, restore_delay_s, restore_stagger_s)
    owed_ws = np.array([restarts.owed_ws[s.id] for s in on], dtype=np.float64)
    owed_ws[is_stopping] = 0.0
    # A stop stops the dependent closure with it: its restart is that of the closure, per unit
    # of the closure's worth (the rate at which W's fall is traded against a restart).
    restart_s = np.zeros(len(on))
    for i, service in enumerate(planned):
        users = [position[u] for u in graph.dependent_closure_of(service.id) if u in position]
        value[i] = weight[users].sum()
        if value[i] > 0:
            restart_s[i] = owed_ws[users].sum() / value[i]
        untouchable[i] = any(
            on[u].priority is Priority.CRITICAL and not is_stopping[u] for u in users
        )
    mean_w = np.array([demand_w[s.id].mean_w for s in on], dtype=np.float64)
    floor_w = np.array(
        [math.nan if s.throttle_min_w is None else s.throttle_min_w for s in on], dtype=np.float64
    )
    floor_w[~(floor_w < mean_w)] = math.nan
    edges = [(position[s.id], position[d]) for s in on for d in s.depends_on if d in position]
    edge_users = np.array([u for u, _ in edges], dtype=np.int64)
    edge_needed = np.array([d for _, d in edges], dtype=np.int64)
    shutdown_s = np.array([stopping.get(s.id, s.shutdown_s) for s in on], dtype=np.float64)
    stop_lead_s = np.zeros(len(on))
    _propagate(np.maximum, stop_lead_s, edge_needed, edge_users, shutdown_s)
    return _Context(
        site=site,
        on=on,
        stopping=is_stopping,
        weight=weight,
        value=value,
        untouchable=untouchable,
        mean_w=mean_w,
        floor_w=floor_w,
        owed_ws=owed_ws,
        queue_ws=restarts.queue_ws,
        restart_s=restart_s,
        shutdown_s=shutdown_s,
        dependency_edges=(edge_users, edge_needed),
        stop_lead_s=stop_lead_s,
        demand_w=demand_w,
        outage=outage,
        batteries=batteries,
        soc_ratio=soc_ratio,
        reserves=_reserves(
            site, on, shutdown_s, demand_w, batteries, _unmanaged_per_ups(site, unmanaged_w)
        ),
        margin_ratio=margin_ratio,
    )


@dataclass(frozen=True, slots=True)
class SiteRestarts:
    """How long each service of a site stays down after mains returns, if it was stopped.

    The controller's restore (I6): after `restore_delay_s`, one start every `restore_stagger_s`,
    highest priority first among the services whose dependencies run, each running `startup_s`
    after its start (to within a controller cycle).
    """

    # From mains returning until it runs again, when it alone was stopped.
    own_s: Mapping[str, float]
    # Its restart behind the longest chain of its dependencies, when they were all stopped: a
    # start waits until what it needs runs (its startup) and for the next stagger.
    chain_s: Mapping[str, float]
    # When everything was stopped (a final shutdown): behind that chain and in the queue.
    full_s: Mapping[str, float]
    # The expected-score cost of stopping each service at t, per unit of W(t): its tier weight
    # times own_s, plus, for every service whose longest chain runs through it, that service's
    # weight times the wait it adds. A dependency stops no earlier than what needs it (I1), so
    # the services of a chain stopped by the time mains returns are the chain's first ones, and
    # each adds its wait exactly then.
    owed_ws: Mapping[str, float]
    # Weight times the queue's own wait after a final shutdown (full_s less chain_s), summed.
    queue_ws: float


def site_restarts(
    site: Site,
    weights: Mapping[Priority, float] = TIER_WEIGHTS,
    restore_delay_s: float = RESTORE_DELAY_S,
    restore_stagger_s: float = RESTORE_STAGGER_S,
) -> SiteRestarts:
    """Every service's restart, alone, behind its chain and after a final shutdown.

    Where a service's dependencies branch, only its longest chain is counted for a partial
    restart: a lower bound, exact for chains and trees, and exact again after a final shutdown.
    """
    graph = site.graph
    by_id = site.service_by_id
    order = graph.startup_order()
    wait_s = {sid: max(by_id[sid].startup_s, restore_stagger_s) for sid in order}
    chain_s: dict[str, float] = {}
    longest_via: dict[str, str] = {}
    for sid in order:
        chain_s[sid] = 0.0
        for dep in graph.dependencies(sid):
            if wait_s[dep] + chain_s[dep] > chain_s[sid]:
                chain_s[sid] = wait_s[dep] + chain_s[dep]
                longest_via[sid] = dep
    weight = {sid: weights[by_id[sid].priority] for sid in order}
    waiting_w = dict.fromkeys(order, 0.0)  # weight of what restarts behind it on its chain
    for sid in reversed(order):
        via = longest_via.get(sid)
        if via is not None:
            waiting_w[via] += weight[sid] + waiting_w[sid]
    started_s = _restore_starts_s(site, restore_stagger_s)
    own_s = {sid: restore_delay_s + by_id[sid].startup_s for sid in order}
    return SiteRestarts(
        own_s=own_s,
        chain_s={sid: own_s[sid] + chain_s[sid] for sid in order},
        full_s={sid: own_s[sid] + started_s[sid] for sid in order},
        owed_ws={sid: weight[sid] * own_s[sid] + wait_s[sid] * waiting_w[sid] for sid in order},
        queue_ws=sum(weight[sid] * (started_s[sid] - chain_s[sid]) for sid in order),
    )


def _restore_starts_s(site: Site, stagger_s: float) -> dict[str, float]:
    """When each service is started after the restore delay, everything having been stopped."""
    graph = site.graph
    by_id = site.service_by_id
    position = {sid: i for i, sid in enumerate(by_id)}
    missing = {sid: len(graph.dependencies(sid)) for sid in by_id}
    runs_s = dict.fromkeys(by_id, 0.0)  # once known: when all it needs runs
    waiting = [(0.0, position[sid], sid) for sid, count in missing.items() if count == 0]
    ready: list[tuple[int, int, str]] = []
    started_s: dict[str, float] = {}
    slot_s = 0.0
    while waiting or ready:
        while waiting and waiting[0][0] <= slot_s:
            _, at, sid = heapq.heappop(waiting)
            heapq.heappush(ready, (-by_id[sid].priority.rank, at, sid))
        if not ready:
            slot_s = waiting[0][0]
            continue
        sid = heapq.heappop(ready)[2]
        started_s[sid] = slot_s
        for user in graph.dependents(sid):
            runs_s[user] = max(runs_s[user], slot_s + by_id[sid].startup_s)
            missing[user] -= 1
            if missing[user] == 0:
                heapq.heappush(waiting, (runs_s[user], position[user], user))
        slot_s += stagger_s
    return started_s


def clean_shutdown_soc(
    site: Site,
    batteries: Mapping[str, BatteryModel],
    demand_w: Mapping[str, Demand],
    running: frozenset[str],
    unmanaged_w: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Per UPS, the charge a clean shutdown of `running` needs, by the plan's own reserve rule.

    Without the plan's margin (the caller adds its own), and 0 for a UPS that feeds none of it.
    """
    on = tuple(s for s in site.services if s.id in running)
    base_w = _unmanaged_per_ups(site, unmanaged_w or {})
    shutdown_s = np.array([s.shutdown_s for s in on], dtype=np.float64)
    reserves = _reserves(site, on, shutdown_s, demand_w, batteries, base_w)
    everything = np.ones(len(on), dtype=bool)
    return {
        ups.id: reserve.soc_ratio(everything & (reserve.share > 0))
        for ups, reserve in zip(site.ups, reserves, strict=True)
    }


def _ups_shares(site: Site, on: tuple[Service, ...]) -> tuple[npt.NDArray[np.float64], ...]:
    """For every UPS, the share of each running service's draw it carries."""
    column = {u.id: j for j, u in enumerate(site.ups)}
    shares = np.zeros((len(site.ups), len(on)))
    for i, service in enumerate(on):
        for outlet in service.outlets:
            shares[column[site.nodes_above_outlet(outlet)[2]], i] += 1.0 / len(service.outlets)
    return tuple(shares)


def _unmanaged_per_ups(site: Site, unmanaged_w: Mapping[str, float]) -> dict[str, float]:
    totals = {u.id: 0.0 for u in site.ups}
    for outlet, watts in unmanaged_w.items():
        totals[site.nodes_above_outlet(outlet)[2]] += watts
    return totals


def _by_score(candidate: _Candidate) -> float:
    return candidate.score


def _schedules(
    context: _Context, prices: npt.NDArray[np.float64]
) -> list[tuple[float, npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """When each service would stop, and be capped, at each energy price on its own.

    All prices at once: each restart group's envelope is searched once for every price.
    """
    outage = context.outage
    with np.errstate(divide="ignore", invalid="ignore"):
        full_ratio = np.where(
            context.value > 0, np.outer(prices, context.mean_w / context.value), np.inf
        )
        floor_ratio = np.where(
            context.value > 0, np.outer(prices, context.floor_w / context.value), np.inf
        )
    throttleable = ~np.isnan(context.floor_w)
    stop_ratio = np.where(throttleable, floor_ratio, full_ratio)
    stop = outage.times_when_worth_falls_to(stop_ratio, context.restart_s)
    # A cap is undone without a restart, so it is priced on the time alone.
    throttle = np.where(throttleable, outage.times_when_worth_falls_to(full_ratio, 0.0), math.inf)
    stop[:, context.untouchable] = math.inf
    throttle[:, context.untouchable] = math.inf
    # A stop under way is set in `_evaluate`, after the ride-through would delay it.
    throttle[:, context.stopping] = math.inf
    return [(float(p), stop[k], throttle[k]) for k, p in enumerate(prices)]


def _evaluate(
    context: _Context,
    price: float,
    own_stop: npt.NDArray[np.float64],
    own_throttle: npt.NDArray[np.float64],
    ride_s: float,
    scored: dict[bytes, _Candidate],
) -> _Candidate:
    """The schedule the energy price `price` implies, and its expected score.

    `scored` holds the candidates already scored, by schedule: a schedule met again is not
    scored again.
    """
    outage = context.outage
    stop = np.where(context.stopping, 0.0, np.maximum(own_stop, ride_s))
    throttle = np.maximum(own_throttle, ride_s)
    # I1: nothing runs longer than what it depends on.
    users, needed = context.dependency_edges
    _propagate(np.minimum, stop, users, needed)
    throttle = np.minimum(throttle, stop)
    # The ride is in the key: it delays the asks, so the same stops can end later under it.
    key = stop.tobytes() + throttle.tobytes() + np.float64(ride_s).tobytes()
    known = scored.get(key)
    if known is not None:
        return known
    draw_ends = _draw_ends_s(context, stop, ride_s)
    final = min(
        (
            _final_shutdown_s(context, u, draw_ends, stop, throttle)
            for u in range(len(context.site.ups))
        ),
        default=math.inf,
    )
    np.minimum(stop, final, out=stop)
    throttle = np.minimum(throttle, stop)
    # The share of the outage served, less the restart each stop owes should the outage outlast
    # it: the plan's stops and the final shutdown's alike, so that schedules whose final
    # shutdowns come at different times compare fairly.
    owed = (
        context.owed_ws @ outage.worths(stop)
        + context.queue_ws * outage.worths(np.array([final]))[0]
    )
    score = float(context.weight @ outage.expected_shares(stop)) - float(owed)
    candidate = _Candidate(score, price, stop, throttle, final)
    scored[key] = candidate
    return candidate


def _propagate(
    combine: np.ufunc,
    values: npt.NDArray[np.float64],
    into: npt.NDArray[np.int64],
    source: npt.NDArray[np.int64],
    add: npt.NDArray[np.float64] | None = None,
) -> None:
    """values[into] = combine(values[into], values[source] (+ add[source])) along every edge,
    to a fixed point: one pass per level of the deepest chain."""
    while len(into):
        before = values[into].copy()
        incoming = values[source] if add is None else values[source] + add[source]
        combine.at(values, into, incoming)
        if np.array_equal(before, values[into]):
            return


def _draw_ends_s(
    context: _Context, stop: npt.NDArray[np.float64], ride_s: float
) -> npt.NDArray[np.float64]:
    """When each service stops drawing if the controller follows the schedule.

    It is asked `stop_lead_s` before its planned stop (never while a blip is ridden through; one
    already stopping has been asked), and no later than anything it depends on is; it begins to
    stop only once everything depending on it has (I1), and draws for its `shutdown_s` more. A
    stop planned sooner than its dependents can be stopped ends later than planned, and that draw
    must be in the walk.
    """
    users, needed = context.dependency_edges
    asked = np.maximum(stop - context.stop_lead_s, ride_s)
    asked = np.where(np.isinf(stop), math.inf, asked)
    asked[context.stopping] = 0.0
    _propagate(np.minimum, asked, users, needed)
    begins = asked.copy()
    _propagate(np.maximum, begins, needed, users, context.shutdown_s)
    return begins + context.shutdown_s


def _final_shutdown_s(
    context: _Context,
    ups_index: int,
    draw_ends: npt.NDArray[np.float64],
    stop: npt.NDArray[np.float64],
    throttle: npt.NDArray[np.float64],
) -> float:
    """When this UPS's charge left falls to what a clean shutdown of what is on then needs.

    What is on then depends on when then is: starting from the services that run to the end, each
    round takes the reserve of what is on at the time found and finds an earlier (or the same)
    time, until the set no longer changes — the latest time that is safe for what is on at it.
    """
    ups = context.site.ups[ups_index]
    reserve = context.reserves[ups_index]
    members = reserve.share > 0
    if not members.any() and reserve.base_w <= 0:
        return math.inf
    # Piecewise-constant load: each service draws its mean, its floor once throttled, 0 once off.
    share = reserve.share
    full_w = context.mean_w * share
    capped_w = np.where(np.isnan(context.floor_w), full_w, np.fmin(context.floor_w * share, full_w))
    throttled = members & (throttle < stop)
    times = np.concatenate([throttle[throttled], draw_ends[members]])
    deltas = np.concatenate(
        [(capped_w - full_w)[throttled], -np.where(throttled, capped_w, full_w)[members]]
    )
    order = np.argsort(times, kind="stable")
    starts = np.concatenate([[0.0], times[order]])
    with np.errstate(invalid="ignore"):
        spans = np.nan_to_num(np.diff(np.append(starts, math.inf)), nan=0.0)
    start_w = reserve.base_w + float(full_w[members].sum())
    loads = np.maximum(start_w + np.concatenate([[0.0], np.cumsum(deltas[order])]), 0.0)
    full_runtime = context.batteries[ups.id].full_runtimes_s(loads)
    with np.errstate(invalid="ignore"):
        used = np.where(spans > 0, spans / full_runtime, 0.0)
    soc_before = context.soc_ratio[ups.id] - np.concatenate([[0.0], np.cumsum(used)[:-1]])
    still_on = members & np.isinf(stop)
    final = math.inf
    for _ in range(len(starts) + 1):
        needed = reserve.soc_ratio(still_on) * (1.0 + context.margin_ratio)
        with np.errstate(invalid="ignore", over="ignore"):
            reach = (soc_before - needed) * full_runtime
        hits = np.flatnonzero(reach <= spans)
        final = math.inf if len(hits) == 0 else float(starts[hits[0]] + max(reach[hits[0]], 0.0))
        on_then = members & (draw_ends > final)
        if np.array_equal(on_then, still_on):
            break
        still_on = on_then
    return final


@dataclass(frozen=True)
class _Reserve:
    """A fast, safe bound on the charge a clean shutdown of any set of one UPS's services needs.

    `finish_s` is when each service's shutdown ends when everything stops together (from the
    exact schedule in `battery.shutdown_reserve`); a subset finishes no later. Each draws its
    upper quantile until then, and the energy is charged at the deliverable energy of the
    heaviest load (the start), where Peukert makes a watt-second cost the most charge.
    """

    model: BatteryModel
    share: npt.NDArray[np.float64]  # of each running service's draw this UPS carries
    upper_w: npt.NDArray[np.float64]  # upper-quantile draw on this UPS
    finish_s: npt.NDArray[np.float64]
    base_w: float

    def soc_ratio(self, on: npt.NDArray[np.bool_]) -> float:
        if not on.any():
            return 0.0
        duration_s = float(self.finish_s[on].max())
        energy_ws = self.base_w * duration_s + float(self.upper_w[on] @ self.finish_s[on])
        start_w = self.base_w + float(self.upper_w[on].sum())
        deliverable_ws = start_w * self.model.full_runtime_s(start_w)
        return energy_ws / deliverable_ws if deliverable_ws > 0 else math.inf


def _reserves(
    site: Site,
    on: tuple[Service, ...],
    shutdown_s: npt.NDArray[np.float64],
    demand_w: Mapping[str, Demand],
    batteries: Mapping[str, BatteryModel],
    base_w: Mapping[str, float],
) -> tuple[_Reserve, ...]:
    shares = _ups_shares(site, on)
    upper = np.array([demand_w[s.id].upper_w for s in on], dtype=np.float64)
    reserves = []
    for ups, share in zip(site.ups, shares, strict=True):
        # Every running service is in the schedule, drawing nothing where this UPS does not feed
        # it: what this UPS feeds stops only after its dependents on other UPS units have (I1).
        schedule = shutdown_reserve(
            batteries[ups.id],
            site.graph,
            draw_w={s.id: float(upper[i] * share[i]) for i, s in enumerate(on)},
            shutdown_s={s.id: float(shutdown_s[i]) for i, s in enumerate(on)},
            base_load_w=base_w[ups.id],
        )
        finish = np.zeros(len(on))
        for i, s in enumerate(on):
            if share[i] > 0:
                finish[i] = schedule.finish_s[s.id]
        reserves.append(_Reserve(batteries[ups.id], share, upper * share, finish, base_w[ups.id]))
    return tuple(reserves)


def _plan_from(context: _Context, best: _Candidate, ridden_s: float, horizon_s: float) -> Plan:
    outage = context.outage
    planned = ~context.stopping
    services = [s for s, p in zip(context.on, planned, strict=True) if p]
    ids = [s.id for s in services]
    stop_at = dict(zip(ids, cast(list[float], best.stop_at_s[planned].tolist()), strict=True))
    throttle_at = dict(
        zip(ids, cast(list[float], best.throttle_at_s[planned].tolist()), strict=True)
    )
    steps: list[PlanStep] = []
    for service in services:
        sid = service.id
        stop_s, throttle_s = stop_at[sid], throttle_at[sid]
        if throttle_s < stop_s and throttle_s <= horizon_s:
            steps.append(
                PlanStep(
                    throttle_s,
                    sid,
                    "throttle",
                    service.throttle_min_w,
                    f"capped to {service.throttle_min_w:.0f} W: by then the outage goes on with "
                    f"{outage.survival(throttle_s):.0%} probability, and the energy saved "
                    "keeps more important services up longer",
                )
            )
        if stop_s <= horizon_s:
            if stop_s >= best.final_at_s:
                reason = "final shutdown: the battery holds just enough to stop everything cleanly"
            elif any(stop_at.get(dep, math.inf) <= stop_s for dep in service.depends_on):
                reason = "shut down before a service it depends on stops"
            else:
                reason = (
                    f"shut down: by then the outage goes on with {outage.survival(stop_s):.0%} "
                    "probability, and its energy is worth more to the services that run to the end"
                )
            steps.append(PlanStep(stop_s, sid, "shutdown", None, reason))
    steps.sort(key=lambda step: (step.at_s, step.service_id))
    tier_runtime = dict.fromkeys(TIERS_MOST_IMPORTANT_FIRST, 0.0)
    for service in services:
        tier_runtime[service.priority] = max(tier_runtime[service.priority], stop_at[service.id])
    return Plan(
        steps=tuple(steps),
        stop_at_s=stop_at,
        throttle_at_s=throttle_at,
        final_shutdown_at_s=best.final_at_s,
        tier_runtime_s=tier_runtime,
        expected_score=best.score,
        energy_price=best.price,
        ride_through_s=ridden_s,
    )
