"""The outage plan: I1 and I4 as properties, a safe final shutdown, blips ridden through, every
stop paying its restart."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custom_components.power_allocation.engine.allocator import Demand
from custom_components.power_allocation.engine.battery import BatteryModel, shutdown_reserve
from custom_components.power_allocation.engine.model import Pdu, Priority, Service, Site, Ups
from custom_components.power_allocation.engine.outage import OutagePrior
from custom_components.power_allocation.engine.planner import Plan, plan_outage, site_restarts

from .sites import RandomCase, random_cases

PRIOR = OutagePrior()


def batteries(site: Site) -> dict[str, BatteryModel]:
    return {u.id: BatteryModel.from_ups(u) for u in site.ups}


@settings(max_examples=60, deadline=None)
@given(
    random_cases(max_services=20),
    st.floats(0, 7200),
    st.floats(0.05, 1.0),
    st.lists(st.tuples(st.integers(0, 19), st.floats(0, 300)), max_size=4),
)
def test_plan_keeps_dependencies_and_critical_services(
    case: RandomCase, elapsed_s: float, soc: float, shed: list[tuple[int, float]]
) -> None:
    site = case.site
    # Services shed earlier, with their dependents (as the controller sheds), still stopping.
    stopping: dict[str, float] = {}
    for index, left_s in shed:
        if index < len(site.services):
            for sid in site.graph.dependent_closure([site.services[index].id]):
                stopping.setdefault(sid, left_s)
    running = frozenset(s.id for s in site.services) - set(stopping)
    plan = plan_outage(
        site,
        batteries(site),
        {u.id: soc for u in site.ups},
        case.demand_w,
        PRIOR.given(elapsed_s),
        running=running,
        stopping=stopping,
        unmanaged_w=case.unmanaged_w,
    )
    final = plan.final_shutdown_at_s
    assert set(plan.stop_at_s) == running  # what is on its way down is not planned again
    for service in (s for s in site.services if s.id in running):
        stop = plan.stop_at_s[service.id]
        assert 0.0 <= stop <= final or (math.isinf(stop) and math.isinf(final))
        assert plan.throttle_at_s[service.id] <= stop
        for dep in service.depends_on:
            assert stop <= plan.stop_at_s[dep]  # I1: dependents stop first
        if service.priority is Priority.CRITICAL:
            assert stop == final  # I4: never stopped before the final shutdown
    times = [step.at_s for step in plan.steps]
    assert times == sorted(times)
    assert all(step.reason for step in plan.steps)


def rack(capacity_wh: float) -> Site:
    return Site(
        ups=(
            Ups(
                "ups1",
                rated_w=1000,
                capacity_wh=capacity_wh,
                runtime_full_load_s=360 * capacity_wh / 864,
            ),
        ),
        pdus=(Pdu.numbered("a", "ups1", 1800, 8), Pdu.numbered("b", "ups1", 1800, 8)),
        services=(
            Service("net", Priority.CRITICAL, ("a/1",), shutdown_s=10),
            Service("db", Priority.CRITICAL, ("a/2", "b/2"), ("net",), shutdown_s=90),
            Service("web", Priority.HIGH, ("a/3",), ("db",), shutdown_s=30),
            Service("batch", Priority.LOW, ("b/3",), ("db",), shutdown_s=60, throttle_min_w=100),
            Service("media", Priority.MEDIUM, ("b/4",), shutdown_s=30),
        ),
    )


DEMAND = {
    "net": Demand(30, 40),
    "db": Demand(250, 300),
    "web": Demand(120, 150),
    "batch": Demand(200, 300),
    "media": Demand(100, 150),
}


def test_the_final_shutdown_leaves_enough_charge_to_stop_everything_cleanly() -> None:
    site = rack(864)
    model = batteries(site)["ups1"]
    plan = plan_outage(site, {"ups1": model}, {"ups1": 0.6}, DEMAND, PRIOR.given(30))
    final = plan.final_shutdown_at_s
    assert 0 < final < math.inf
    # Walk the charge along the plan at the mean draws, then check the reserve at upper draws.
    soc = 0.6
    now = 0.0
    events = sorted({0.0, final, *(t for t in plan.stop_at_s.values() if t < final)})
    for start, end in itertools.pairwise(events):
        load = sum(DEMAND[s].mean_w for s, stop in plan.stop_at_s.items() if stop > start)
        soc = model.soc_after(soc, load, end - start)
        now = end
    still_on = {s: DEMAND[s].upper_w for s, stop in plan.stop_at_s.items() if stop >= final}
    needed = shutdown_reserve(
        model,
        site.graph,
        still_on,
        {s.id: s.shutdown_s for s in site.services if s.id in still_on},
    )
    assert now == final
    assert soc >= needed.soc_ratio


def test_a_big_battery_rides_through_a_blip_and_a_small_one_saves_the_critical_tier() -> None:
    big = rack(20000)
    plan = plan_outage(big, batteries(big), {"ups1": 1.0}, DEMAND, PRIOR.given(0))
    assert min(plan.stop_at_s.values()) >= 60  # nothing stops in the first minute
    small = rack(300)
    plan = plan_outage(small, batteries(small), {"ups1": 1.0}, DEMAND, PRIOR.given(0))
    assert plan.stop_at_s["media"] < 60  # a full ride-through would cost it too much
    assert plan.tier_runtime_s[Priority.CRITICAL] == plan.final_shutdown_at_s


def test_a_ride_through_too_dear_in_full_is_shortened_and_not_extended_by_replanning() -> None:
    site = rack(600)
    soc = {"ups1": 1.0}
    first = plan_outage(site, batteries(site), soc, DEMAND, PRIOR.given(0))
    ride_end_s = min(first.stop_at_s.values())
    assert 10 < ride_end_s < 120  # part of the 2-minute ride-through
    model = batteries(site)["ups1"]
    everything_w = sum(d.mean_w for d in DEMAND.values())
    for elapsed_s in (10.0, 20.0, 30.0):
        # Re-planned later, on the charge riding has left, the ride ends no later than planned
        # (to within the price grid's resolution: a cycle of the controller).
        left = {"ups1": model.soc_after(soc["ups1"], everything_w, elapsed_s)}
        later = plan_outage(site, batteries(site), left, DEMAND, PRIOR.given(elapsed_s))
        assert elapsed_s + min(later.stop_at_s.values()) <= ride_end_s + 10.0


def test_services_already_off_are_not_planned() -> None:
    site = rack(864)
    plan = plan_outage(
        site,
        batteries(site),
        {"ups1": 1.0},
        DEMAND,
        PRIOR.given(0),
        running=frozenset({"net", "db"}),
    )
    assert set(plan.stop_at_s) == {"net", "db"}


def test_an_outage_known_to_be_long_is_not_ridden_through() -> None:
    """The ride-through is paid for only by the chance that it pays off."""
    site = rack(1200)
    soc = {"ups1": 1.0}
    blip_or_not = plan_outage(site, batteries(site), soc, DEMAND, PRIOR.given(0))
    assert min(blip_or_not.stop_at_s.values()) > 30
    long = OutagePrior(momentary_ratio=0.0, sustained_median_s=7200, sustained_sigma=0.02)
    known = plan_outage(site, batteries(site), soc, DEMAND, long.given(0))
    assert min(known.stop_at_s.values()) == 0.0


def test_a_stop_under_way_is_walked_and_reserved_but_not_planned() -> None:
    """batch still draws while its stop runs: that charge is gone for the services that stay."""
    site = rack(600)
    soc = {"ups1": 0.5}
    running = frozenset({"net", "db", "web", "media"})

    def plan(stopping: dict[str, float] | None) -> float:
        result = plan_outage(
            site, batteries(site), soc, DEMAND, PRIOR.given(300), running=running, stopping=stopping
        )
        assert set(result.stop_at_s) == running
        assert all(step.service_id in running for step in result.steps)
        return result.final_shutdown_at_s

    untouched = plan(None)
    assert plan({"batch": 0.0}) == untouched  # its stop is over: nothing more to carry
    assert plan({"batch": 60.0}) < untouched - 60
    assert plan({"batch": 600.0}) == 0.0  # ten more minutes of it leave too little to wait


def tiny() -> Site:
    """Two critical services in a chain and one low one, on a battery of about 20 minutes."""
    return Site(
        ups=(Ups("ups1", rated_w=1000, capacity_wh=864, runtime_full_load_s=360),),
        pdus=(Pdu.numbered("a", "ups1", 1800, 8),),
        services=(
            Service("net", Priority.CRITICAL, ("a/1",), shutdown_s=10, startup_s=30),
            Service("db", Priority.CRITICAL, ("a/2",), ("net",), shutdown_s=30, startup_s=120),
            Service("lab", Priority.LOW, ("a/3",), shutdown_s=10, startup_s=30),
        ),
    )


TINY_DEMAND = {"net": Demand(100, 110), "db": Demand(300, 330), "lab": Demand(200, 220)}


def test_restarts_replay_the_restore_after_mains_returns() -> None:
    """Restore delay 60 s, a start every 15 s, highest priority first among those ready."""
    restarts = site_restarts(tiny(), restore_delay_s=60, restore_stagger_s=15)
    assert restarts.own_s == {"net": 90, "db": 180, "lab": 90}
    # db starts once net runs (30 s after its start), and runs 120 s later.
    assert restarts.chain_s == {"net": 90, "db": 210, "lab": 90}
    # After a final shutdown: net at 0, lab at 15 (db is not ready yet), db at 30.
    assert restarts.full_s == {"net": 90, "db": 210, "lab": 105}
    # net's stop costs its own restart, and the 30 s db waits behind it.
    assert restarts.owed_ws == {"net": 1000 * 90 + 1000 * 30, "db": 1000 * 180, "lab": 90}
    assert restarts.queue_ws == 1 * 15  # lab's place in the queue


def test_the_expected_score_counts_every_restart_as_computed_by_hand() -> None:
    """Uptime share of each service, less each restart times the chance it is owed (per 1/D):
    lab's from its stop, the critical chain's and the queue's from the final shutdown."""
    site = tiny()
    outage = PRIOR.given(30)
    plan = plan_outage(site, batteries(site), {"ups1": 0.8}, TINY_DEMAND, outage)
    final, lab_s = plan.final_shutdown_at_s, plan.stop_at_s["lab"]
    assert 0 < lab_s < final < math.inf  # lab is shed, and the final shutdown comes

    def share(t_s: float) -> float:
        return float(outage.expected_shares(np.array([t_s]))[0])

    def worth(t_s: float) -> float:
        return float(outage.worths(np.array([t_s]))[0])

    served = 2 * 1000 * share(final) + 1 * share(lab_s)
    owed = (1000 * 90 + 1000 * 210 + 1 * 15) * worth(final) + 1 * 90 * worth(lab_s)
    assert plan.expected_score == pytest.approx(served - owed, rel=1e-9)


def chain_site(cache_startup_s: float, app_startup_s: float = 60.0) -> Site:
    """app (high) runs behind cache (low, heavy): stopping cache stops app too (I1)."""
    return Site(
        ups=(Ups("ups1", rated_w=1000, capacity_wh=864, runtime_full_load_s=360),),
        pdus=(Pdu.numbered("a", "ups1", 1800, 8),),
        services=(
            Service("net", Priority.CRITICAL, ("a/1",), shutdown_s=10, startup_s=30),
            Service("cache", Priority.LOW, ("a/2",), shutdown_s=10, startup_s=cache_startup_s),
            Service(
                "app", Priority.HIGH, ("a/3",), ("cache",), shutdown_s=10, startup_s=app_startup_s
            ),
        ),
    )


CHAIN_DEMAND = {"net": Demand(150, 160), "cache": Demand(300, 320), "app": Demand(60, 70)}


def test_a_service_behind_a_long_restart_chain_is_kept_on_longer() -> None:
    """After mains returns app waits for cache to start: the longer that takes, the more its stop
    costs, and the later the plan makes it (the same service, the same draws)."""
    stops = {}
    for cache_startup_s in (30.0, 900.0):
        site = chain_site(cache_startup_s)
        plan = plan_outage(site, batteries(site), {"ups1": 0.7}, CHAIN_DEMAND, PRIOR.given(150))
        assert plan.stop_at_s["app"] <= plan.stop_at_s["cache"] < plan.final_shutdown_at_s
        stops[cache_startup_s] = plan.stop_at_s["app"]
    assert stops[900.0] > stops[30.0] + 30


def test_a_long_own_restart_keeps_a_service_on_longer() -> None:
    stops = {}
    for app_startup_s in (60.0, 900.0):
        site = chain_site(30.0, app_startup_s)
        plan = plan_outage(site, batteries(site), {"ups1": 0.7}, CHAIN_DEMAND, PRIOR.given(150))
        stops[app_startup_s] = plan.stop_at_s["app"]
    assert stops[900.0] > stops[60.0] + 30


@pytest.mark.parametrize(
    ("capacity_wh", "soc", "duration_s"),
    [(600, 1.0, 600), (864, 1.0, 1200), (1200, 0.5, 600), (2000, 0.8, 2700), (2000, 1.0, 2700)],
)
def test_an_outage_of_known_length_is_ridden_through_only_where_that_scores_no_worse(
    capacity_wh: float, soc: float, duration_s: float
) -> None:
    """No blip to ride out: a ride is taken when the restarts it spares pay for it, and never
    bought by stopping other services sooner to keep the final shutdown where it was."""
    site = rack(capacity_wh)
    known = OutagePrior(momentary_ratio=0.0, sustained_median_s=duration_s, sustained_sigma=0.02)

    def plan(ride_through_s: float) -> Plan:
        return plan_outage(
            site,
            batteries(site),
            {"ups1": soc},
            DEMAND,
            known.given(0),
            ride_through_s=ride_through_s,
        )

    ridden, unridden = plan(120.0), plan(0.0)
    assert ridden.expected_score >= unridden.expected_score - 1e-9
    if ridden.ride_through_s == 0:
        assert ridden.stop_at_s == unridden.stop_at_s
