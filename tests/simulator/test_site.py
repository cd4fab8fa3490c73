"""The simulated site's physics: switching, graceful shutdown, throttling, battery, death."""

from __future__ import annotations

import copy

import pytest

from custom_components.power_allocation.engine.battery import BatteryModel
from custom_components.power_allocation.engine.scenario import Scenario, build_scenario
from simulator.site import (
    LOW_BATTERY_RUNTIME_S,
    RECHARGE_FULL_S,
    UPS_GROUP_MIN_OFF_S,
    UPS_GROUP_OFF_DELAY_S,
    ServiceMode,
    SimulatedSite,
)
from tests.fixtures.modbus_site import SMALL_SITE


@pytest.fixture
def site(small_scenario: Scenario) -> SimulatedSite:
    return SimulatedSite(small_scenario, follow_timeline=False)


def run(site: SimulatedSite, seconds: int) -> None:
    for _ in range(seconds):
        site.advance(1.0)


def test_starts_with_everything_running(site: SimulatedSite) -> None:
    snapshot = site.snapshot()
    assert snapshot.mains_on
    assert all(s.mode is ServiceMode.RUNNING for s in snapshot.services.values())
    assert snapshot.ups["ups1"].online
    assert snapshot.ups["ups1"].soc_pct == 100.0
    assert snapshot.outlets["pdu-a/1"].power_w == 40.0


def test_a_dual_psu_service_shares_its_draw(site: SimulatedSite) -> None:
    snapshot = site.snapshot()
    assert snapshot.outlets["pdu-a/2"].power_w == 150.0
    assert snapshot.outlets["pdu-b/2"].power_w == 150.0
    site.set_outlet("pdu-b/2", False)
    snapshot = site.snapshot()
    assert snapshot.outlets["pdu-a/2"].power_w == 300.0
    assert snapshot.outlets["pdu-b/2"].power_w == 0.0
    assert snapshot.services["db"].mode is ServiceMode.RUNNING


def test_ups_output_is_the_sum_of_its_outlets(site: SimulatedSite) -> None:
    snapshot = site.snapshot()
    total_w = sum(o.power_w for o in snapshot.outlets.values())
    assert snapshot.ups["ups1"].output_w == pytest.approx(total_w)
    assert total_w == pytest.approx(40 + 300 + snapshot.services["batch"].demand_w)


def test_switching_off_an_outlet_cuts_power_uncleanly(site: SimulatedSite) -> None:
    site.set_outlet("pdu-a/1", False)
    snapshot = site.snapshot()
    assert snapshot.outlets["pdu-a/1"].power_w == 0.0
    assert snapshot.services["network"].mode is ServiceMode.UNPOWERED
    assert site.unclean_power_losses["network"] == 1


def test_graceful_shutdown_falls_to_idle_after_shutdown_s(site: SimulatedSite) -> None:
    site.request_shutdown("db")
    run(site, 29)
    assert site.snapshot().services["db"].mode is ServiceMode.STOPPING
    assert site.snapshot().services["db"].power_w == 300.0
    run(site, 1)
    stopped = site.snapshot().services["db"]
    assert stopped.mode is ServiceMode.STOPPED
    assert stopped.power_w == 8.0
    site.set_outlet("pdu-a/2", False)
    site.set_outlet("pdu-b/2", False)
    assert site.snapshot().services["db"].mode is ServiceMode.UNPOWERED
    assert site.unclean_power_losses["db"] == 0


def test_power_back_boots_the_service(site: SimulatedSite) -> None:
    site.set_outlet("pdu-b/3", False)
    site.set_outlet("pdu-b/3", True)
    assert site.snapshot().services["batch"].mode is ServiceMode.STARTING
    run(site, 5)
    assert site.snapshot().services["batch"].mode is ServiceMode.RUNNING


def test_a_stopped_service_can_be_started(site: SimulatedSite) -> None:
    site.request_shutdown("batch")
    run(site, 10)
    site.request_start("batch")
    assert site.snapshot().services["batch"].mode is ServiceMode.STARTING
    run(site, 5)
    assert site.snapshot().services["batch"].mode is ServiceMode.RUNNING


def test_start_is_a_no_op_without_power(site: SimulatedSite) -> None:
    site.set_outlet("pdu-a/1", False)
    site.request_start("network")
    assert site.snapshot().services["network"].mode is ServiceMode.UNPOWERED


def test_throttle_caps_the_draw_and_can_be_released(site: SimulatedSite) -> None:
    site.throttle("db", 120.0)
    assert site.snapshot().services["db"].power_w == 120.0
    site.throttle("db", 500.0)
    assert site.snapshot().services["db"].power_w == 300.0
    site.throttle("db", None)
    assert site.snapshot().services["db"].cap_w is None
    with pytest.raises(ValueError, match="cap_w"):
        site.throttle("db", -1.0)


def test_step_load_adds_demand_for_its_duration(site: SimulatedSite) -> None:
    site.step_load("network", 60.0, 10.0)
    assert site.snapshot().services["network"].power_w == 100.0
    run(site, 10)
    assert site.snapshot().services["network"].power_w == 40.0


def test_unknown_ids_raise_key_errors(site: SimulatedSite) -> None:
    with pytest.raises(KeyError, match="outlet"):
        site.set_outlet("pdu-z/1", False)
    with pytest.raises(KeyError, match="service"):
        site.request_shutdown("nope")
    with pytest.raises(KeyError):
        site.ups_group("ups1", "sog9", "off")


def test_battery_drains_as_the_battery_model_says(site: SimulatedSite) -> None:
    site.request_shutdown("batch")
    run(site, 10)
    load_w = site.snapshot().ups["ups1"].output_w
    site.set_mains(False)
    run(site, 120)
    model = BatteryModel.from_ups(site.scenario.site.ups[0])
    ups = site.snapshot().ups["ups1"]
    assert ups.on_battery
    assert not ups.online
    assert ups.soc_pct == pytest.approx(100 * model.soc_after(1.0, load_w, 120.0))
    assert ups.runtime_s == pytest.approx(model.runtime_s(load_w, ups.soc_pct / 100))


def test_low_battery_then_death_then_revival(site: SimulatedSite) -> None:
    site.set_mains(False)
    low_seen = False
    for _ in range(100_000):
        site.advance(1.0)
        ups = site.snapshot().ups["ups1"]
        low_seen |= ups.low_battery and ups.alive
        if not ups.alive:
            break
    snapshot = site.snapshot()
    assert low_seen
    assert snapshot.ups["ups1"].runtime_s <= LOW_BATTERY_RUNTIME_S
    assert snapshot.ups["ups1"].soc_pct == 0.0
    assert snapshot.ups["ups1"].output_voltage_v == 0.0
    assert all(o.power_w == 0.0 and not o.powered for o in snapshot.outlets.values())
    assert all(s.mode is ServiceMode.UNPOWERED for s in snapshot.services.values())
    assert site.unclean_power_losses == {"network": 1, "db": 1, "batch": 1}
    site.set_mains(True)
    revived = site.snapshot()
    assert revived.ups["ups1"].online
    assert all(s.mode is ServiceMode.STARTING for s in revived.services.values())
    run(site, 60)
    assert site.snapshot().ups["ups1"].soc_pct == pytest.approx(100 * 60 / RECHARGE_FULL_S)


def test_ups_groups_switch_the_pdus_they_feed(site: SimulatedSite) -> None:
    site.ups_group("ups1", "sog1", "off")  # sog1 feeds the UPS's second PDU, pdu-b
    snapshot = site.snapshot()
    assert not snapshot.outlets["pdu-b/3"].powered
    assert snapshot.outlets["pdu-a/1"].powered
    assert snapshot.ups["ups1"].groups_on["sog1"] is False
    site.ups_group("ups1", "main", "off", use_delay=True)
    run(site, int(UPS_GROUP_OFF_DELAY_S) - 1)
    assert site.snapshot().outlets["pdu-a/1"].powered
    run(site, 1)
    assert not site.snapshot().outlets["pdu-a/1"].powered


def test_group_shutdown_returns_with_mains(site: SimulatedSite) -> None:
    site.set_mains(False)
    site.ups_group("ups1", "sog0", "shutdown")
    run(site, int(UPS_GROUP_MIN_OFF_S) + 5)
    assert not site.snapshot().outlets["pdu-a/1"].powered  # still on battery
    site.set_mains(True)
    assert site.snapshot().outlets["pdu-a/1"].powered


def test_follows_the_scenario_timeline(small_scenario: Scenario) -> None:
    site = SimulatedSite(small_scenario, start_s=590.0)
    assert site.mains_on
    run(site, 10)
    assert not site.mains_on  # outage at 600 s
    run(site, 300)
    assert site.mains_on  # 300 s later


def test_timeline_load_steps_reach_the_outlets() -> None:
    config = copy.deepcopy(SMALL_SITE)
    config["timeline"]["events"] = [
        {"at_s": 5, "kind": "load_step", "service": "network", "extra_w": 25, "duration_s": 3}
    ]
    site = SimulatedSite(build_scenario(config, {}))
    run(site, 5)
    assert site.snapshot().outlets["pdu-a/1"].power_w == 65.0
    run(site, 3)
    assert site.snapshot().outlets["pdu-a/1"].power_w == 40.0


def test_same_scenario_same_site(small_scenario: Scenario) -> None:
    first, second = SimulatedSite(small_scenario), SimulatedSite(small_scenario)
    for site in (first, second):
        site.set_mains(False)
        run(site, 50)
    assert first.snapshot() == second.snapshot()


def test_time_only_moves_forward(site: SimulatedSite) -> None:
    with pytest.raises(ValueError, match="forward"):
        site.advance(-1.0)
