"""The allocator: feasible always (I1, I2), optimal against brute force on small sites."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custom_components.power_allocation.engine import allocator
from custom_components.power_allocation.engine.allocator import (
    Allocation,
    Demand,
    HoldConflictError,
    ServiceState,
    allocate,
    hold_conflicts,
)
from custom_components.power_allocation.engine.model import Pdu, Priority, Service, Site, Ups

from .brute_force import allocation_objective, brute_force_objective
from .sites import RandomCase, random_cases

SLOW = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_feasible(
    site: Site, allocation: Allocation, unmanaged_w: dict[str, float], demand_w: dict[str, Demand]
) -> None:
    """I1 and I2, recomputed independently of the allocator: every node's total upper quantile
    (its running services' mean or cap, plus the root-sum-square of their spreads) fits."""
    decisions = allocation.decisions
    for service in site.services:
        if decisions[service.id].state is not ServiceState.OFF:
            for dep in service.depends_on:
                assert decisions[dep].state is not ServiceState.OFF, (service.id, dep)
    load = {node.id: 0.0 for node in site.nodes}
    squares = {node.id: 0.0 for node in site.nodes}
    for service in site.services:
        if decisions[service.id].state is ServiceState.OFF:
            continue
        demand = demand_w[service.id]
        share_by_node: dict[str, float] = {}
        for outlet in service.outlets:
            for node in site.nodes_above_outlet(outlet):
                share_by_node[node] = share_by_node.get(node, 0.0) + 1.0 / len(service.outlets)
        for node, share in share_by_node.items():
            load[node] += decisions[service.id].draw_w * share
            squares[node] += ((demand.upper_w - demand.mean_w) * share) ** 2
    for outlet, watts in unmanaged_w.items():
        for node in site.nodes_above_outlet(outlet):
            load[node] += watts
    for node_id, square in squares.items():
        load[node_id] += math.sqrt(square)
    for node in site.nodes:
        if node.limit_w is not None:
            assert load[node.id] <= node.limit_w + 1e-6, (node.id, load[node.id], node.limit_w)
        assert math.isclose(load[node.id], allocation.node_load_w[node.id], abs_tol=1e-6)


def assert_reasons_hold(site: Site, allocation: Allocation) -> None:
    """Every decision says why, and what it says is true of the allocation."""
    decisions = allocation.decisions
    for service in site.services:
        decision = decisions[service.id]
        off_dependencies = [d for d in service.depends_on if decisions[d].state is ServiceState.OFF]
        if decision.state is ServiceState.ON:
            assert decision.cap_w is None
            assert decision.reason in (
                "fits within every limit",
                "held on (or needed by a held-on service)",
            )
        elif decision.state is ServiceState.THROTTLED:
            assert decision.cap_w == decision.draw_w
            assert decision.reason.startswith(f"capped to {decision.draw_w:.0f} W of ")
        else:
            assert decision.draw_w == 0
            assert decision.cap_w is None
            if decision.reason.startswith("off because "):
                named = decision.reason.removeprefix("off because ").removesuffix(" is off")
                assert named.split(", ") == off_dependencies
            elif decision.reason.startswith("shed: "):
                assert not off_dependencies
            else:
                assert decision.reason == "held off (or needs a held-off service)"


@SLOW
@given(random_cases())
def test_exact_allocation_is_feasible_and_matches_brute_force(case: RandomCase) -> None:
    allocation = allocate(case.site, case.demand_w, unmanaged_w=case.unmanaged_w)
    assert allocation.optimal
    assert allocation.within_limits
    assert_feasible(case.site, allocation, case.unmanaged_w, case.demand_w)
    assert_reasons_hold(case.site, allocation)
    counts, throttled, watts = allocation_objective(case.site, allocation)
    best_counts, best_throttled, best_watts = brute_force_objective(
        case.site, case.demand_w, case.unmanaged_w
    )
    assert (counts, throttled) == (best_counts, best_throttled)
    assert watts == pytest.approx(best_watts, rel=1e-6, abs=1e-4)


@settings(max_examples=150, deadline=None)
@given(random_cases(max_services=40))
def test_greedy_allocation_is_always_feasible(case: RandomCase) -> None:
    allocation = allocate(
        case.site, case.demand_w, unmanaged_w=case.unmanaged_w, exact_max_services=0
    )
    assert allocation.within_limits
    assert_feasible(case.site, allocation, case.unmanaged_w, case.demand_w)
    exact = allocate(case.site, case.demand_w, unmanaged_w=case.unmanaged_w)
    assert (
        allocation_objective(case.site, allocation)[:2]
        <= allocation_objective(case.site, exact)[:2]
    )


@settings(max_examples=80, deadline=None)
@given(random_cases(max_services=20), st.data())
def test_holds_are_kept_and_dependencies_follow_them(case: RandomCase, data: st.DataObject) -> None:
    ids = [s.id for s in case.site.services]
    held_off = frozenset(data.draw(st.lists(st.sampled_from(ids), max_size=2)))
    graph = case.site.graph
    off = graph.dependent_closure(held_off)
    wanted_on = data.draw(st.lists(st.sampled_from(ids), max_size=2))
    held_on = frozenset(s for s in wanted_on if not graph.dependency_closure([s]) & off)
    for exact_max in (0, 250):
        allocation = allocate(
            case.site,
            case.demand_w,
            unmanaged_w=case.unmanaged_w,
            held_on=held_on,
            held_off=held_off,
            exact_max_services=exact_max,
        )
        for sid in off:
            assert allocation.decisions[sid].state is ServiceState.OFF
        for sid in graph.dependency_closure(held_on):
            assert allocation.decisions[sid].state is not ServiceState.OFF
        assert_reasons_hold(case.site, allocation)
        if allocation.within_limits:
            assert_feasible(case.site, allocation, case.unmanaged_w, case.demand_w)


@settings(max_examples=60, deadline=None)
@given(random_cases(max_services=150), st.data())
def test_greedy_on_larger_sites_keeps_limits_holds_and_reasons(
    case: RandomCase, data: st.DataObject
) -> None:
    """Derated limits shed much of the site; held-off services stay off, the rest fits."""
    site = case.site
    ids = [s.id for s in site.services]
    held_off = frozenset(data.draw(st.lists(st.sampled_from(ids), max_size=3)))
    unmanaged_on = dict.fromkeys((n.id for n in site.nodes), 0.0)
    for outlet, watts in case.unmanaged_w.items():
        for node_id in site.nodes_above_outlet(outlet):
            unmanaged_on[node_id] += watts
    limited = [n for n in site.nodes if n.kind != "outlet"]
    limits_w = {
        node.id: max(unmanaged_on[node.id], (node.limit_w or 0.0) * data.draw(st.floats(0.05, 1)))
        for node in data.draw(st.lists(st.sampled_from(limited), max_size=3))
    }
    allocation = allocate(
        site,
        case.demand_w,
        unmanaged_w=case.unmanaged_w,
        limits_w=limits_w,
        held_off=held_off,
        exact_max_services=0,
    )
    assert allocation.method in ("all_fit", "greedy")
    assert allocation.within_limits
    derated = Site(
        ups=tuple(replace(u, rated_w=limits_w.get(u.id, u.rated_w)) for u in site.ups),
        pdus=tuple(replace(p, limit_w=limits_w.get(p.id, p.limit_w)) for p in site.pdus),
        services=site.services,
    )
    assert_feasible(derated, allocation, case.unmanaged_w, case.demand_w)
    for sid in site.graph.dependent_closure(held_off):
        assert allocation.decisions[sid].reason.startswith("held off")
    assert_reasons_hold(site, allocation)


@settings(max_examples=100, deadline=None)
@given(random_cases(max_services=60), st.data())
def test_vectorised_closures_match_the_dependency_graph(
    case: RandomCase, data: st.DataObject
) -> None:
    site = case.site
    start = data.draw(st.lists(st.sampled_from([s.id for s in site.services]), max_size=4))
    index = allocator._index(site)
    positions = [index.position[sid] for sid in start]
    dependents = allocator._dependent_closure(index, positions)
    dependencies = allocator._dependency_closure(index, positions)
    assert {index.service_ids[i] for i in np.flatnonzero(dependents)} == (
        site.graph.dependent_closure(start)
    )
    assert {index.service_ids[i] for i in np.flatnonzero(dependencies)} == (
        site.graph.dependency_closure(start)
    )


def rack() -> Site:
    return Site(
        ups=(Ups("ups1", rated_w=1000, capacity_wh=864, runtime_full_load_s=360),),
        pdus=(Pdu.numbered("a", "ups1", 600, 8), Pdu.numbered("b", "ups1", 600, 8)),
        services=(
            Service("net", Priority.CRITICAL, ("a/1",)),
            Service("db", Priority.CRITICAL, ("a/2", "b/2"), ("net",), throttle_min_w=150),
            Service("web", Priority.HIGH, ("a/3",), ("db",)),
            Service("batch", Priority.LOW, ("b/3",), ("db",), throttle_min_w=100),
            Service("media", Priority.MEDIUM, ("b/4",)),
        ),
    )


DEMAND = {
    "net": Demand(30, 40),
    "db": Demand(250, 300),
    "web": Demand(200, 250),
    "batch": Demand(300, 400),
    "media": Demand(150, 200),
}


def test_everything_fits_needs_no_search() -> None:
    allocation = allocate(
        rack(), {k: Demand(v.mean_w / 4, v.upper_w / 4) for k, v in DEMAND.items()}
    )
    assert allocation.method == "all_fit"
    assert allocation.optimal
    assert {d.state for d in allocation.decisions.values()} == {ServiceState.ON}


def test_lowest_tier_is_throttled_before_anything_is_shed() -> None:
    allocation = allocate(rack(), DEMAND)
    assert allocation.method == "milp"
    batch = allocation.decisions["batch"]
    assert batch.state is ServiceState.THROTTLED
    # PDU b carries half of db, media and batch: their means and the root-sum-square of their
    # spreads (db's halved) fill it.
    spread_w = math.hypot(25, 100, 50)
    assert batch.cap_w == pytest.approx(600 - 125 - 150 - spread_w)
    assert allocation.node_load_w["b"] == pytest.approx(600)
    assert "keep b within its limit" in batch.reason
    assert all(allocation.decisions[s].state is ServiceState.ON for s in ("net", "db", "web"))


def test_shedding_a_dependency_sheds_its_dependents() -> None:
    allocation = allocate(rack(), DEMAND, limits_w={"ups1": 350})
    assert_feasible(rack(), allocation, {}, DEMAND)
    # With 133 W kept for the spreads, only net (30 W) and db throttled towards its 150-W floor
    # fit; web and batch depend on db.
    assert allocation.decisions["net"].state is ServiceState.ON
    assert allocation.decisions["db"].state is ServiceState.THROTTLED
    assert allocation.decisions["web"].state is ServiceState.OFF
    assert allocation.decisions["media"].state is ServiceState.OFF
    assert "shed" in allocation.decisions["media"].reason


def test_unmanaged_load_counts_against_limits() -> None:
    site = rack()
    allocation = allocate(site, DEMAND, unmanaged_w={"a/8": 500})
    assert_feasible(site, allocation, {"a/8": 500}, DEMAND)
    assert allocation.node_load_w["a/8"] == 500


def test_holds_that_contradict_each_other_are_refused() -> None:
    held_on, held_off = frozenset({"web"}), frozenset({"db"})
    with pytest.raises(HoldConflictError, match="db") as raised:
        allocate(rack(), DEMAND, held_on=held_on, held_off=held_off)
    assert raised.value.services == hold_conflicts(rack(), held_on, held_off)
    assert "db" in raised.value.services
    assert hold_conflicts(rack(), held_on, frozenset()) == frozenset()


def test_held_on_beyond_the_limits_is_reported_not_hidden() -> None:
    allocation = allocate(
        rack(), DEMAND, held_on=frozenset({"web", "batch"}), limits_w={"ups1": 500}
    )
    assert not allocation.within_limits
    assert allocation.decisions["batch"].state is not ServiceState.OFF


@pytest.mark.parametrize(
    ("demand", "message"),
    [
        ({**DEMAND, "web": Demand(1, math.nan)}, "web"),
        ({**DEMAND, "web": Demand(-1, 5)}, "mean_w"),
        ({k: v for k, v in DEMAND.items() if k != "db"}, "no demand forecast for service 'db'"),
    ],
)
def test_bad_forecasts_are_refused_with_the_service_named(
    demand: dict[str, Demand], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        allocate(rack(), demand)


def test_unknown_nodes_and_outlets_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown node"):
        allocate(rack(), DEMAND, limits_w={"nope": 5})
    with pytest.raises(ValueError, match="not an unmanaged outlet"):
        allocate(rack(), DEMAND, unmanaged_w={"a/1": 5})


def test_two_noisy_services_fit_where_their_upper_quantiles_summed_would_not() -> None:
    # Each peaks at 540 W, both together at 800 + 198 W (they do not peak at the same moment):
    # within the 1,000-W PDU. The sum of their upper quantiles, 1,080 W, stopped one of them.
    site = Site(
        ups=(Ups("ups1", rated_w=3000, capacity_wh=864, runtime_full_load_s=360),),
        pdus=(Pdu.numbered("a", "ups1", 1000, 2),),
        services=(
            Service("web", Priority.MEDIUM, ("a/1",)),
            Service("media", Priority.LOW, ("a/2",)),
        ),
    )
    noisy = {"web": Demand(400, 540), "media": Demand(400, 540)}
    allocation = allocate(site, noisy)
    assert allocation.method == "all_fit"
    assert allocation.node_load_w["a"] == pytest.approx(800 + math.hypot(140, 140))
    assert_feasible(site, allocation, {}, noisy)
    summed = allocate(site, {sid: Demand(d.upper_w, d.upper_w) for sid, d in noisy.items()})
    assert summed.decisions["media"].state is ServiceState.OFF


def test_a_service_too_wide_for_its_node_alone_leaves_the_others_their_room() -> None:
    # gpu's band alone is over the PDU: it runs in no allocation, and its spread does not
    # crowd web out.
    site = Site(
        ups=(Ups("ups1", rated_w=3000, capacity_wh=864, runtime_full_load_s=360),),
        pdus=(Pdu.numbered("a", "ups1", 900, 2),),
        services=(
            Service("web", Priority.HIGH, ("a/1",)),
            Service("gpu", Priority.LOW, ("a/2",)),
        ),
    )
    demand = {"web": Demand(500, 500), "gpu": Demand(10, 1000)}
    allocation = allocate(site, demand)
    assert allocation.decisions["web"].state is ServiceState.ON
    assert allocation.decisions["gpu"].state is ServiceState.OFF
    assert allocation.decisions["gpu"].reason.endswith("it needs 1000 W")
    assert_reasons_hold(site, allocation)


@settings(max_examples=100, deadline=None)
@given(random_cases(max_services=30))
def test_what_fits_by_its_upper_quantiles_summed_is_never_stopped(case: RandomCase) -> None:
    """The quantile of the sum is never above the sum of the quantiles: a site whose services
    all fit by the old rule runs all of them."""
    summed = {sid: Demand(d.upper_w, d.upper_w) for sid, d in case.demand_w.items()}
    if allocate(case.site, summed, unmanaged_w=case.unmanaged_w).method != "all_fit":
        return
    for exact_max in (0, 250):
        allocation = allocate(
            case.site, case.demand_w, unmanaged_w=case.unmanaged_w, exact_max_services=exact_max
        )
        assert allocation.method == "all_fit"
        assert_feasible(case.site, allocation, case.unmanaged_w, case.demand_w)
