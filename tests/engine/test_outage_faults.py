"""Random tiny sites, random outages, random faults: the predictive controller keeps I1-I4, I7.

The simulation measures the invariants at every physics step (dependency-violation seconds,
overload seconds, unclean power losses) and logs every decision with its reason; the properties
are asserted on those.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from custom_components.power_allocation.engine.battery import BatteryModel, shutdown_reserve
from custom_components.power_allocation.engine.policies import make_policy
from custom_components.power_allocation.engine.scenario import Scenario, build_scenario
from custom_components.power_allocation.engine.simulate import simulate

TIERS = ("critical", "high", "medium", "low")
STEP_S = 10
CYCLE_S = 30


@st.composite
def scenarios(draw: st.DrawFn, *, hours_of_charge: bool = False) -> Scenario:
    """Small random sites; `hours_of_charge`: a pack far larger than any of its outages, and
    no runtime reading that falls (which, persisting, is believed)."""
    count = draw(st.integers(2, 4))
    services: list[dict[str, Any]] = []
    for i in range(count):
        depends_on = sorted(
            draw(st.sets(st.sampled_from([f"s{j}" for j in range(i)]), max_size=2)) if i else set()
        )
        services.append(
            {
                "id": f"s{i}",
                "priority": draw(st.sampled_from(TIERS)),
                "outlets": [f"pdu/{i + 1}"],
                "depends_on": depends_on,
                "shutdown_s": draw(st.integers(0, 60)),
                "startup_s": draw(st.integers(0, 60)),
                "idle_w": draw(st.integers(0, 5)),
                "load": {"constant_w": draw(st.integers(10, 150))},
            }
        )
    total_w = sum(s["load"]["constant_w"] for s in services)
    # One case in four: mains never returns (those run until the battery is spent: the longest).
    never_returns = not hours_of_charge and draw(st.integers(0, 3)) == 0
    outage_s = None if never_returns else draw(st.integers(10, 400))
    faults = draw(
        st.lists(
            st.one_of(
                st.builds(
                    lambda at, d: {"at_s": at, "kind": "telemetry_gap", "duration_s": d},
                    st.integers(0, 400),
                    st.integers(10, 120),
                ),
                st.builds(
                    lambda at, d: {"at_s": at, "kind": "mains_flicker", "duration_s": d},
                    st.integers(0, 600),
                    st.integers(1, 200),
                ),
                st.builds(
                    lambda at, d, s: {
                        "at_s": at,
                        "kind": "command_fails",
                        "service": f"s{s}",
                        "duration_s": d,
                    },
                    st.integers(0, 400),
                    st.integers(10, 600),
                    st.integers(0, count - 1),
                ),
                st.builds(
                    lambda at, d, s: {
                        "at_s": at,
                        "kind": "outlet_stuck",
                        "outlet": f"pdu/{s + 1}",
                        "duration_s": d,
                    },
                    st.integers(0, 400),
                    st.integers(10, 600),
                    st.integers(0, count - 1),
                ),
                st.builds(
                    lambda at, d, f: {
                        "at_s": at,
                        "kind": "ups_runtime_jump",
                        "ups": "ups",
                        "factor": f,
                        "duration_s": d,
                    },
                    st.integers(0, 400),
                    st.integers(10, 300),
                    st.sampled_from([3.0] if hours_of_charge else [0.0, 0.2, 3.0]),
                ),
            ),
            max_size=3,
        )
    )
    return site_scenario(
        services,
        faults,
        # From 6 to 10 minutes of this site's load, at full charge: short runs.
        capacity_wh=total_w
        * draw(st.integers(*((120, 240) if hours_of_charge else (6, 10))))
        / 60
        / 0.9,
        runtime_full_load_s=draw(st.integers(300, 900)),
        soc_start_pct=draw(st.integers(70, 100)),
        outage_s=outage_s,
    )


def site_scenario(
    services: list[dict[str, Any]],
    events: list[dict[str, Any]],
    *,
    capacity_wh: float,
    runtime_full_load_s: float = 300,
    soc_start_pct: float = 70,
    outage_s: float | None = None,
) -> Scenario:
    """The generator's shape of site: one UPS, one PDU, an outlet per service, no history."""
    config = {
        "name": "random",
        "seed": 1,
        "step_s": STEP_S,
        "ups": [
            {
                "id": "ups",
                "capacity_wh": capacity_wh,
                "rated_w": 1000,
                "runtime_full_load_s": runtime_full_load_s,
                "soc_start_pct": soc_start_pct,
            }
        ],
        "pdus": [{"id": "pdu", "ups": "ups", "limit_w": 1000, "outlets": len(services)}],
        "services": services,
        "timeline": {
            "history_s": 0,
            "outage_at_s": STEP_S,
            "outage_duration_s": outage_s,
            "events": events,
        },
    }
    return build_scenario(config, {})


def clean_shutdown_possible(scenario: Scenario) -> bool:
    """Whether the battery holds what stopping everything cleanly needs, with room to decide."""
    site = scenario.site
    ups = site.ups[0]
    reserve = shutdown_reserve(
        BatteryModel.from_ups(ups),
        site.graph,
        {s.id: scenario.demand_w(s.id, 0) * 1.2 for s in site.services},
        {s.id: s.shutdown_s for s in site.services},
    )
    soc = scenario.soc_start_pct[ups.id] / 100.0
    load_w = sum(scenario.demand_w(s.id, 0) for s in site.services)
    # A controller that looks every CYCLE_S cannot save a battery that lasts a few cycles.
    runtime_s = BatteryModel.from_ups(ups).runtime_s(load_w, soc)
    return reserve.soc_ratio * 3.0 + 0.1 < soc and runtime_s >= 8 * CYCLE_S


def _service(index: int, priority: str, watts: int, shutdown_s: int, **more: Any) -> dict[str, Any]:
    return {
        "id": f"s{index}",
        "priority": priority,
        "outlets": [f"pdu/{index + 1}"],
        "shutdown_s": shutdown_s,
        "startup_s": 0,
        "idle_w": 0,
        "load": {"constant_w": watts},
        **more,
    }


# Cases the property test found, kept so that they are always run.
FOUND = {
    # The plan stopped a service just in time, but what depends on it had to go first: a cycle
    # late, the battery ran out under the stop.
    "a stop waits for its dependents": site_scenario(
        [
            _service(0, "high", 94, 11),
            _service(1, "high", 11, 0),
            _service(2, "high", 10, 0, depends_on=["s0"]),
        ],
        [],
        capacity_wh=12.78,
    ),
    # The plan took a stopping OS's draw as gone at once; it lasts its shutdown_s.
    "a stopping OS draws": site_scenario(
        [_service(0, "high", 20, 31), _service(1, "high", 11, 11)], [], capacity_wh=3.44
    ),
    # No telemetry while the final shutdown ran: the next wave waited for readings that did not
    # come, and the battery ran out under it.
    "a telemetry gap in the final shutdown": site_scenario(
        [
            _service(0, "critical", 25, 51),
            _service(1, "critical", 10, 1, depends_on=["s0"], idle_w=2),
        ],
        [{"at_s": 101, "kind": "telemetry_gap", "duration_s": 120}],
        capacity_wh=3.89,
    ),
    # A critical service's final-shutdown stop lost and asked again: still the final shutdown's.
    "a lost final stop asked again": site_scenario(
        [_service(0, "critical", 10, 0), _service(1, "critical", 10, 0)],
        [{"at_s": 0, "kind": "command_fails", "service": "s0", "duration_s": 251}],
        capacity_wh=2.22,
    ),
    # A runtime reading of 0 began the final shutdown; mains came back with the pack believed
    # empty, and the critical stops went on: still the final shutdown's, and said so.
    "the final shutdown goes on after mains returns": site_scenario(
        [_service(0, "critical", 10, 0), _service(1, "critical", 10, 0, depends_on=["s0"])],
        [
            {"at_s": 0, "kind": "mains_flicker", "duration_s": 61},
            {"at_s": 0, "kind": "ups_runtime_jump", "ups": "ups", "duration_s": 91, "factor": 0},
        ],
        capacity_wh=2.22,
        outage_s=10,
    ),
}


@pytest.mark.parametrize("scenario", FOUND.values(), ids=FOUND.keys())
def test_invariants_hold_in_the_cases_found(scenario: Scenario) -> None:
    assert clean_shutdown_possible(scenario)
    assert_invariants(scenario)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_invariants_hold_under_random_faults(scenario: Scenario) -> None:
    assume(clean_shutdown_possible(scenario))
    assert_invariants(scenario)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(hours_of_charge=True))
def test_a_pack_of_hours_stops_no_critical_service_in_minutes(scenario: Scenario) -> None:
    """Outages of minutes on a pack of hours: whatever the readings' faults, the final shutdown
    never begins and no critical service stops (the plan may still shed lower tiers)."""
    report = simulate(scenario, make_policy("predictive", scenario), cycle_s=CYCLE_S, tail_s=120)
    critical = {s.id for s in scenario.site.services if s.priority.value == "critical"}
    stopped = {d["service"] for d in report.decisions if d["action"] == "StopService"}
    assert not stopped & critical
    assert not any("final shutdown" in d["reason"] for d in report.decisions)


def assert_invariants(scenario: Scenario) -> None:
    """I1-I4 and I7 over the whole run, as the simulation measured them at every step."""
    report = simulate(scenario, make_policy("predictive", scenario), cycle_s=CYCLE_S, tail_s=120)
    site = scenario.site
    lost = {d["service"] for d in report.decisions if d.get("lost")}
    # I2 at every step; I1 at every step unless a stop was lost. A service whose stop and cut
    # are lost keeps running; what it needs then runs on too (I1 first) until the battery is
    # spent, and if mains returns meanwhile the restore can meet it still running: a known gap.
    assert report.overload_s == 0
    if not lost:
        assert report.dependency_violation_s == 0
    # I3 and I4: nothing loses power uncleanly, except a service whose commands were lost (its
    # outlets are cut once its shutdown_s has run out, as I3 allows) and what it needs.
    excused = site.graph.dependency_closure(lost)
    for service_id, service_report in report.services.items():
        if service_id not in excused:
            assert service_report.unclean_power_loss == 0, service_id
    # I4 and I7: a critical service is stopped only by the final shutdown (never to buy runtime
    # for a lower tier, never because a reading or a command failed).
    for decision in report.decisions:
        service = site.service_by_id[decision["service"]]
        if service.priority.value == "critical" and decision["action"] == "StopService":
            assert "final shutdown" in decision["reason"], decision
