"""Random sites for hypothesis: random DAGs, limits, dual-fed services, throttle floors."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from custom_components.power_allocation.engine.allocator import Demand
from custom_components.power_allocation.engine.model import Pdu, Priority, Service, Site, Ups


@dataclass(frozen=True)
class RandomCase:
    """A site with the forecasts and unmanaged draws to allocate for."""

    site: Site
    demand_w: dict[str, Demand]
    unmanaged_w: dict[str, float]


@st.composite
def random_cases(draw: st.DrawFn, max_services: int = 14) -> RandomCase:
    """A random but valid site: every unmanaged draw fits on its own, so all-off is feasible."""
    n = draw(st.integers(1, max_services))
    ups_count = draw(st.integers(1, 2))
    ups = tuple(
        Ups(
            f"ups{u}",
            rated_w=draw(st.integers(100, 3000)),
            capacity_wh=500,
            runtime_full_load_s=300,
        )
        for u in range(ups_count)
    )
    pdu_count = draw(st.integers(1, 3))
    outlets_per_pdu = 2 * n + 2
    pdus = []
    for p in range(pdu_count):
        outlet_limits = draw(
            st.dictionaries(
                st.integers(1, outlets_per_pdu), st.integers(50, 600), max_size=outlets_per_pdu // 2
            )
        )
        pdus.append(
            Pdu.numbered(
                f"pdu{p}",
                ups=f"ups{draw(st.integers(0, ups_count - 1))}",
                limit_w=draw(st.integers(100, 2500)),
                count=outlets_per_pdu,
                outlet_limits_w=outlet_limits,
            )
        )
    next_outlet = [1] * pdu_count
    services = []
    demand: dict[str, Demand] = {}
    for i in range(n):
        feeds = draw(st.lists(st.integers(0, pdu_count - 1), min_size=1, max_size=2, unique=True))
        outlets = []
        for p in feeds:
            outlets.append(f"pdu{p}/{next_outlet[p]}")
            next_outlet[p] += 1
        deps = draw(st.lists(st.integers(0, i - 1), max_size=min(2, i), unique=True)) if i else []
        upper = float(draw(st.integers(5, 700)))
        throttle = draw(st.none() | st.floats(0.1, 1.0))
        services.append(
            Service(
                id=f"s{i}",
                priority=draw(st.sampled_from(list(Priority))),
                outlets=tuple(outlets),
                depends_on=tuple(f"s{d}" for d in deps),
                throttle_min_w=None if throttle is None else max(1.0, round(upper * throttle)),
            )
        )
        demand[f"s{i}"] = Demand(mean_w=upper * draw(st.floats(0.3, 1.0)), upper_w=upper)
    site = Site(ups=ups, pdus=tuple(pdus), services=tuple(services))
    unmanaged: dict[str, float] = {}
    for outlet in draw(st.lists(st.sampled_from(site.unmanaged_outlets), max_size=2, unique=True)):
        unmanaged[outlet] = float(draw(st.integers(0, 40)))
    return RandomCase(site, demand, unmanaged)
