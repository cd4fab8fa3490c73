"""One control cycle, the same in the integration and in the simulation.

Learn what ran freely, assess every node's draw, run the overload guard, then one step of the
outage controller on what it all says. `site_control.SiteControl` (Home Assistant) and the
simulated `predictive` and `oracle` policies differ only in where their readings come from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from .allocator import Demand
from .controller import (
    ControllerState,
    OutageController,
    Readings,
    StepResult,
    Telemetry,
    drawing,
    running_free,
)
from .demand import ServiceDemand
from .forecast import NodeForecasters, node_draw_w
from .model import Site
from .overload import GuardDecision, OverloadGuard


@dataclass(frozen=True, slots=True)
class CycleResult:
    """The step, and what it was decided on."""

    node_w: Mapping[str, float]
    guard: GuardDecision
    telemetry: Telemetry
    step: StepResult


def run_cycle(
    site: Site,
    controller: OutageController,
    state: ControllerState,
    readings: Readings,
    learners: tuple[ServiceDemand, NodeForecasters, OverloadGuard],
    demand_w: Mapping[str, Demand] | None = None,
) -> CycleResult:
    """One cycle; `demand_w` stands in for the forecasts (the oracle's true loads)."""
    demand, nodes, overload_guard = learners
    now_s = readings.now_s
    demand.learn(
        now_s,
        readings.service_draw_w,
        running_free(state.services),
        off=frozenset(state.services) - drawing(state.services),
    )
    if demand_w is None:
        demand_w = demand.demand_w()
    # With no reading at all (a telemetry gap) no node is assessed; a shed under way holds.
    node_w = (
        node_draw_w(site, readings.outlet_w, readings.ups_w)
        if readings.outlet_w or readings.ups_w
        else {}
    )
    nodes.observe(now_s, node_w)
    guard = overload_guard.decide(
        now_s,
        node_w,
        nodes.by_node,
        demand_w,
        unmanaged_w=readings.unmanaged_w,
        held_on=state.held_on,
        held_off=state.held_off,
        running=drawing(state.services),
    )
    telemetry = Telemetry(
        **{f.name: getattr(readings, f.name) for f in fields(Readings)},
        demand_w=demand_w,
        overload_allocation=guard.allocation,
        overload_shedding_nodes=frozenset(guard.shed_w),
        node_upper_w={node_id: risk.upper_w for node_id, risk in guard.risks.items()},
        node_draw_w={node_id: risk.draw_w for node_id, risk in guard.risks.items()},
    )
    return CycleResult(node_w, guard, telemetry, controller.step(state, telemetry))
