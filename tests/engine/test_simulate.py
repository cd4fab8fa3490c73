"""The time-stepped simulation and its report."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from custom_components.power_allocation.engine.controller import (
    Command,
    StartService,
    StopService,
    SwitchOutlets,
)
from custom_components.power_allocation.engine.policies import make_policy
from custom_components.power_allocation.engine.simulate import (
    FALSE_STOP_WINDOW_S,
    TAIL_S,
    Observation,
    simulate,
)

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
        "longest_mains_downtime_s",
    }
    assert set(report["tiers"]) == {"critical", "high", "medium", "low"}
    assert set(report["site"]) == {
        "weighted_score",
        "mains_availability",
        "mains_stops",
        "false_mains_stops",
        "unclean_power_losses",
        "dependency_violation_s",
        "overload_s",
        "mains_overload_s",
        "trips",
        "mains_trips",
        "unnecessary_sheds",
        "battery_end_pct",
    }
    # From the outage's start to the end of the run, the tail after mains returns included.
    assert report["services"]["db"]["demand_s"] == 600 + TAIL_S
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
    # The run ends a tail after the flicker, not after the first outage.
    assert report.services["db"].demand_s == 900 + 60 + TAIL_S - 600


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


def test_time_on_mains_counts_only_the_part_of_a_step_after_mains_returns() -> None:
    # The UPS dies; mains returns at 4198 s, inside the 5-s step from 4195 s that the plant
    # runs on battery: network is down 2 s of it on mains, then boots for its 30 s.
    scenario = rack(outage_duration_s=3598)
    report = simulate(scenario, make_policy("none", scenario))
    assert report.unclean_power_losses == len(scenario.site.services)
    assert report.services["network"].longest_mains_downtime_s == 2 + 30


class _StopThenStart:
    """Stops one service at `stop_at_s` and starts it again at `start_at_s` (None: never)."""

    name = "stop_then_start"

    def __init__(self, service_id: str, stop_at_s: float, start_at_s: float | None) -> None:
        self.service_id = service_id
        self.outlet_ids = tuple(rack().site.service_by_id[service_id].outlets)
        self.stop_at_s = stop_at_s
        self.start_at_s = start_at_s
        self.done: set[str] = set()

    def decide(self, observation: Observation) -> Sequence[Command]:
        sid = self.service_id
        if "stop" not in self.done and observation.now_s >= self.stop_at_s:
            self.done.add("stop")
            return [StopService(sid, "test")]
        start_at_s = math.inf if self.start_at_s is None else self.start_at_s
        if "start" not in self.done and observation.now_s >= start_at_s:
            self.done.add("start")
            return [StartService(sid, self.outlet_ids, "test")]
        return []


def test_a_stop_before_mains_returns_costs_its_restart_after_mains_returns() -> None:
    # web (startup 30 s) stopped as the outage begins at 600 s, started as mains returns at
    # 1200 s: down from its stop until it runs at 1230 s, the boot on mains included.
    scenario = rack(outage_duration_s=600)
    report = simulate(scenario, _StopThenStart("web", stop_at_s=600, start_at_s=1200))
    web = report.services["web"]
    assert web.demand_s == 600 + TAIL_S
    assert web.uptime_s == web.demand_s - (1230 - 600)
    assert web.longest_mains_downtime_s == 30
    assert report.services["db"].uptime_s == report.services["db"].demand_s
    assert report.weighted_score < 1.0
    assert report.mains_stops == 0  # stopped on battery


def test_a_stop_on_mains_for_no_reason_is_a_false_mains_stop() -> None:
    # batch stopped at 300 s on mains, started at 480 s (startup 30 s): nothing near a limit
    # (about 420 W on a 1000-W PDU and an 800-W UPS).
    scenario = rack(outage_duration_s=20)
    report = simulate(
        scenario, _StopThenStart("batch", stop_at_s=300, start_at_s=480), history_step_s=5
    )
    assert report.mains_stops == 1
    assert report.false_mains_stops == 1
    assert report.services["batch"].longest_mains_downtime_s == 480 + 30 - 300
    assert report.mains_availability < 1.0
    assert report.weighted_score == 1.0  # all of it before the outage


def test_a_stop_on_mains_is_justified_by_a_node_it_would_have_overloaded() -> None:
    # batch stopped at 300 s and left off; 900 s later (within the window) it would have drawn
    # about 1070 W, which with the rest (about 320 W) is over the PDU's 1000 W. Without that
    # step, the stop is false.
    stop_at_s, step_at_s = 300, 1200
    assert step_at_s < stop_at_s + FALSE_STOP_WINDOW_S
    step = {"at_s": step_at_s, "kind": "load_step", "service": "batch", "extra_w": 900}
    false_stops = {}
    for events in ([], [{**step, "duration_s": 60}]):
        scenario = rack(outage_duration_s=20, events=events)
        report = simulate(scenario, _StopThenStart("batch", stop_at_s, start_at_s=None))
        assert report.mains_stops == 1
        assert report.overload_s == 0  # batch was off: nothing really went over
        false_stops[len(events)] = report.false_mains_stops
    assert false_stops == {0: 1, 1: 0}


def _web_step(at_s: float, duration_s: float) -> dict[str, object]:
    """web wants 680 W more: about 1100 W in all, 1.1 x the PDU's limit (under its breaker's
    first step, 1.13) and 1.375 x the UPS's rating (its curve trips after 5 s there)."""
    return {
        "at_s": at_s,
        "kind": "load_step",
        "service": "web",
        "extra_w": 680,
        "duration_s": duration_s,
    }


def test_an_overload_on_mains_counts_in_overload_s_and_mains_overload_s() -> None:
    # 120 s over in the history (at its 60-s step), 30 s in the outage (600 s to 900 s).
    scenario = rack(outage_duration_s=300, events=[_web_step(300, 120), _web_step(700, 30)])
    report = simulate(scenario, make_policy("none", scenario))
    assert report.overload_s == 120 + 30
    assert report.mains_overload_s == 120
    assert (report.trips, report.mains_trips) == (2, 1)  # the UPS, once per overload


def test_a_trip_is_counted_once_the_curve_time_at_its_load_is_reached() -> None:
    # At 1.375 x its rating the UPS trips after 5 s: 4 s over is not a trip, 6 s is.
    trips = {}
    for seconds in (4, 6):
        scenario = rack(outage_duration_s=20, events=[_web_step(300, seconds)])
        report = simulate(scenario, make_policy("none", scenario), history_step_s=1)
        assert report.overload_s == report.mains_overload_s == seconds
        trips[seconds] = report.trips
    assert trips == {4: 0, 6: 1}
