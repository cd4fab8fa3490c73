"""The integration runs what the benchmarks measure: the same readings, the same commands.

A scenario is simulated under the `predictive` policy; every cycle, what that policy observes is
also handed, as the drivers would report it, to the integration's `SiteControl` for the same
site. Both must order exactly the same commands, cycle after cycle, on mains (learning, the
overload guard) and through an outage (the plan, the final shutdown, the restore).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from custom_components.power_allocation.drivers.interface import (
    OutletReading,
    TelemetrySnapshot,
    UpsReading,
)
from custom_components.power_allocation.drivers.scenario_file import scenario_from_mapping
from custom_components.power_allocation.engine.controller import Command, StopService
from custom_components.power_allocation.engine.policies import make_policy
from custom_components.power_allocation.engine.simulate import Observation, simulate
from custom_components.power_allocation.site_control import SiteControl
from custom_components.power_allocation.topology import parse_topology

SOURCE = {"kind": "modbus", "host": "127.0.0.1"}
UPS = {"id": "ups1", "rated_w": 900, "capacity_wh": 150, "runtime_full_load_s": 400}
PDU = {"id": "pdu-a", "ups": "ups1", "limit_w": 800, "outlets": 6}
SERVICES: list[dict[str, Any]] = [
    {"id": "network", "priority": "critical", "outlets": ["pdu-a/1"]},
    {
        "id": "db",
        "priority": "high",
        "outlets": ["pdu-a/2"],
        "depends_on": ["network"],
        "shutdown_s": 40,
        "startup_s": 60,
        "idle_w": 5,
    },
    {
        "id": "web",
        "priority": "medium",
        "outlets": ["pdu-a/3"],
        "depends_on": ["db"],
        "shutdown_s": 20,
        "throttle": {"min_w": 60},
    },
    {"id": "batch", "priority": "low", "outlets": ["pdu-a/4"], "shutdown_s": 30},
]
LOADS: dict[str, dict[str, float]] = {
    "network": {"constant_w": 40},
    "db": {"base_w": 150, "peak_w": 260, "period_s": 3600, "noise_ratio": 0.05},
    "web": {"base_w": 90, "peak_w": 200, "period_s": 1800, "noise_ratio": 0.1},
    "batch": {"base_w": 100, "peak_w": 300, "period_s": 2400, "noise_ratio": 0.1},
}


def scenario_mapping() -> dict[str, Any]:
    return {
        "name": "same-commands",
        "seed": 11,
        "step_s": 5,
        "ups": [UPS],
        "pdus": [PDU],
        "services": [{**s, "load": LOADS[s["id"]]} for s in SERVICES],
        "timeline": {"history_s": 2 * 3600, "outage_at_s": 2 * 3600, "outage_duration_s": 1200},
    }


def topology_document() -> dict[str, Any]:
    return {
        "ups": [{**UPS, "source": SOURCE}],
        "pdus": [{**PDU, "source": SOURCE}],
        # A stop action on each: every service has a way to be asked to stop, as in a simulation.
        "services": [{**s, "stop_action": {"action": f"script.stop_{s['id']}"}} for s in SERVICES],
    }


def as_the_drivers_report_it(observation: Observation) -> TelemetrySnapshot:
    """The observation as a Modbus UPS and metered PDU would report it."""
    known = observation.mains_on is not None
    return TelemetrySnapshot(
        monotonic_s=observation.now_s,
        ups={
            u: UpsReading(
                u,
                available=known,
                on_battery=None if observation.mains_on is None else not observation.mains_on,
                runtime_s=r.runtime_s,
                soc_pct=None if r.soc_ratio is None else 100.0 * r.soc_ratio,
                output_w=r.output_w,
            )
            for u, r in observation.ups.items()
        },
        outlets={
            o: OutletReading(
                o,
                available=known,
                power_w=observation.outlet_draw_w[o],
                is_on=observation.outlet_on[o],
            )
            for o in observation.outlet_on
        },
    )


class BothPaths:
    """The simulated `predictive` policy, with the integration's path fed the same readings."""

    name = "predictive"

    def __init__(self, simulated: Any, integration: SiteControl) -> None:
        self.simulated = simulated
        self.integration = integration
        self.cycles = 0
        self.commands: list[Command] = []

    def decide(self, observation: Observation) -> Sequence[Command]:
        ordered = tuple(self.simulated.decide(observation))
        snapshot = as_the_drivers_report_it(observation)
        outcome = self.integration.cycle(snapshot, observation.now_s)
        assert outcome.commands == ordered, f"at {observation.now_s} s"
        self.cycles += 1
        self.commands += ordered
        return ordered


def test_the_integration_and_the_simulation_order_the_same_commands() -> None:
    scenario = scenario_from_mapping(scenario_mapping(), Path("."))
    topology = parse_topology(topology_document())
    same = ("ups", "pdus", "services")
    assert [getattr(topology.site, f) for f in same] == [getattr(scenario.site, f) for f in same]
    both = BothPaths(make_policy("predictive", scenario), SiteControl(topology))
    report = simulate(scenario, both, tail_s=600.0)
    # The comparison covered an outage that made the controller act, and its restore.
    assert both.cycles > 100
    assert any(isinstance(c, StopService) for c in both.commands)
    assert report.unclean_power_losses == 0
