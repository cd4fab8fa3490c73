"""The time-stepped simulation and its report."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from custom_components.power_allocation.engine.controller import (
    Command,
    StopService,
    SwitchOutlets,
)
from custom_components.power_allocation.engine.policies import make_policy
from custom_components.power_allocation.engine.simulate import Observation, simulate

from .outage_scenarios import rack


def test_the_report_has_every_field_of_the_design_and_is_json() -> None:
    scenario = rack(outage_duration_s=600)
    report = simulate(scenario, make_policy("static_timers", scenario)).to_dict()
    json.dumps(report)
    assert set(report["services"]["db"]) == {
        "uptime_s",
        "demand_s",
        "interruptions",
        "clean_shutdown",
        "unclean_power_loss",
    }
    assert set(report["tiers"]) == {"critical", "high", "medium", "low"}
    assert set(report["site"]) == {
        "weighted_score",
        "unclean_power_losses",
        "dependency_violation_s",
        "overload_s",
        "unnecessary_sheds",
        "battery_end_pct",
    }
    assert report["services"]["db"]["demand_s"] == 600
    low = report["decisions"][0]
    assert low["service"] == "batch"
    assert "timer" in low["reason"]


def test_runs_are_deterministic() -> None:
    scenario = rack(outage_duration_s=900)
    first = simulate(scenario, make_policy("predictive", scenario)).to_dict()
    second = simulate(scenario, make_policy("predictive", scenario)).to_dict()
    assert first == second


def test_doing_nothing_on_a_long_outage_loses_everything_uncleanly() -> None:
    scenario = rack(outage_duration_s=None)
    report = simulate(scenario, make_policy("none", scenario))
    assert report.unclean_power_losses == len(scenario.site.services)
    assert report.battery_end_pct == 0
    assert report.services["network"].clean_shutdown is False


def test_a_short_blip_costs_nothing() -> None:
    scenario = rack(outage_duration_s=20)
    report = simulate(scenario, make_policy("none", scenario))
    assert report.weighted_score == 1.0
    assert report.unclean_power_losses == 0
    assert all(r.interruptions == 0 for r in report.services.values())


def test_a_dependency_ignored_is_measured() -> None:
    # The UPS dies; when mains returns everything boots at once, and web (30 s startup) runs
    # before the db it needs (60 s).
    scenario = rack(outage_duration_s=3600)
    report = simulate(scenario, make_policy("none", scenario))
    assert report.dependency_violation_s > 0


def test_a_mains_flicker_is_a_second_outage_in_the_report() -> None:
    scenario = rack(
        outage_duration_s=120,
        events=[{"at_s": 900, "kind": "mains_flicker", "duration_s": 60}],
    )
    report = simulate(scenario, make_policy("none", scenario))
    assert report.services["db"].demand_s == 180


def test_a_stuck_outlet_ignores_its_commands() -> None:
    scenario = rack(
        outage_duration_s=None,
        events=[{"at_s": 0, "kind": "outlet_stuck", "outlet": "pdu-a/5", "duration_s": 1e9}],
    )
    report = simulate(scenario, make_policy("nut", scenario))
    # nut cut every outlet but the stuck one: batch stays stopped (idle) until the UPS dies.
    assert report.services["batch"].unclean_power_loss == 0
    assert report.services["web"].clean_shutdown is True


class _ShedAtOnce:
    """Stops the batch job the moment mains fails, and cuts it after its shutdown_s."""

    name = "shed_at_once"

    def __init__(self) -> None:
        self.stopped_s: float | None = None

    def decide(self, observation: Observation) -> Sequence[Command]:
        if observation.mains_on is False and self.stopped_s is None:
            self.stopped_s = observation.now_s
            return [StopService("batch", "test")]
        if self.stopped_s is not None and observation.now_s - self.stopped_s >= 60:
            self.stopped_s = math.inf
            return [SwitchOutlets("batch", ("pdu-a/5",), False, "test")]
        return []


def test_a_shed_in_the_first_cycle_of_an_outage_is_counted_as_unnecessary() -> None:
    scenario = rack(outage_duration_s=300)  # the battery carries everything for far longer
    report = simulate(scenario, _ShedAtOnce())
    assert report.services["batch"].interruptions == 1
    assert report.unnecessary_sheds == 1


def test_a_shed_counts_as_unnecessary_only_if_the_pack_would_have_carried_it_to_the_end() -> None:
    # Shedding batch leaves the pack at a light load, where a watt-hour costs less charge than it
    # would have with batch on (Peukert): near the edge only a replay of the outage tells. The
    # plant itself says which outage the pack carries with everything kept on.
    carried = {}
    for outage_s in (1600, 1800):
        scenario = rack(outage_duration_s=outage_s)
        kept_on = simulate(scenario, make_policy("none", scenario))
        carried[outage_s] = kept_on.unclean_power_losses == 0
        assert simulate(scenario, _ShedAtOnce()).unnecessary_sheds == int(carried[outage_s])
    assert carried == {1600: True, 1800: False}


def test_uptime_counts_only_the_part_of_a_step_inside_the_outage() -> None:
    # 208 s at a 5-s step: the last step is 3 s of outage and 2 of mains.
    scenario = rack(outage_duration_s=208)
    report = simulate(scenario, make_policy("none", scenario))
    assert all(r.uptime_s == 208 for r in report.services.values())
    assert report.weighted_score == 1.0
