"""The outage controller: a cycle at a time, on hand-made telemetry."""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import pytest

from custom_components.power_allocation.engine.allocator import Demand, HoldConflictError
from custom_components.power_allocation.engine.battery import BatteryModel
from custom_components.power_allocation.engine.controller import (
    Command,
    ControllerSettings,
    ControllerState,
    Fault,
    Mode,
    OutageController,
    Phase,
    ServiceControl,
    StartService,
    StopService,
    SwitchOutlets,
    Telemetry,
    Throttle,
    UpsReading,
    ended_outage_s,
    hold,
    initial_state,
)
from custom_components.power_allocation.engine.model import Site
from custom_components.power_allocation.engine.outage import ConditionalOutage
from custom_components.power_allocation.engine.planner import Plan, PlanStep
from custom_components.power_allocation.engine.scenario import build_scenario

from .outage_scenarios import RACK, rack

SITE = rack().site
DEMAND = {
    "network": Demand(30, 30),
    "storage": Demand(80, 85),
    "db": Demand(120, 130),
    "web": Demand(90, 95),
    "batch": Demand(150, 200),
}
IDLE_W = {s.id: s.idle_w for s in SITE.services}


def telemetry(
    now_s: float,
    state: ControllerState,
    *,
    mains_on: bool | None = False,
    soc_ratio: float | None = 0.5,
    runtime_s: float | None = None,
    stuck: frozenset[str] = frozenset(),
    draw_w: Mapping[str, float] | None = None,
) -> Telemetry:
    """What a site obeying every command would report: stopping services idle, cut ones dark,
    capped ones at most at their cap; `draw_w` overrides the draws of the services it names."""
    draw: dict[str, float | None] = {}
    outlets: dict[str, bool | None] = {}
    for service in SITE.services:
        phase = state.services[service.id].phase
        cut = phase is Phase.OFF or (phase is Phase.CUTTING and service.outlets[0] not in stuck)
        for outlet in service.outlets:
            outlets[outlet] = not cut or outlet in stuck
        if phase is Phase.OFF:
            draw[service.id] = 0.0
        elif phase in (Phase.STOPPING, Phase.CUTTING):
            draw[service.id] = IDLE_W[service.id]
        else:
            cap_w = state.services[service.id].cap_w
            mean_w = DEMAND[service.id].mean_w
            draw[service.id] = mean_w if cap_w is None else min(mean_w, cap_w)
    draw.update(draw_w or {})
    return Telemetry(
        now_s=now_s,
        mains_on=mains_on,
        ups={"ups1": UpsReading(soc_ratio, runtime_s, sum(d or 0 for d in draw.values()))},
        service_draw_w=draw,
        outlet_on=outlets,
        demand_w=DEMAND,
    )


def run(
    controller: OutageController,
    state: ControllerState,
    start_s: float,
    end_s: float,
    step_s: float = 10.0,
    **readings: Any,
) -> tuple[ControllerState, list[tuple[float, Command]], list[Fault]]:
    commands: list[tuple[float, Command]] = []
    faults: list[Fault] = []
    t_s = start_s
    while t_s < end_s:
        result = controller.step(state, telemetry(t_s, state, **readings))
        state = result.state
        commands += [(t_s, c) for c in result.commands]
        faults += list(result.faults)
        t_s += step_s
    return state, commands, faults


class _EditedPlan(OutageController):
    """The real plan, edited by `edit(plan, outage)` before the controller acts on it."""

    def __init__(
        self, edit: Callable[[Plan, ConditionalOutage], Plan], ride_through_s: float = 0.0
    ) -> None:
        super().__init__(SITE, settings=ControllerSettings(ride_through_s=ride_through_s))
        self.edit = edit

    def plan(
        self,
        soc_ratio: Mapping[str, float],
        demand_w: Mapping[str, Demand],
        outage: ConditionalOutage,
        running: frozenset[str],
        unmanaged_w: Mapping[str, float] | None = None,
        stopping_s: Mapping[str, float] | None = None,
    ) -> Plan:
        plan = super().plan(soc_ratio, demand_w, outage, running, unmanaged_w, stopping_s)
        return self.edit(plan, outage)


def _plan_stops_db_at(
    stop_s: float, ride_through_s: float = 0.0, db_steps: tuple[PlanStep, ...] = ()
) -> OutageController:
    """The real plan, except that db (and web, which depends on it) stop at `stop_s`, and
    `db_steps` come first among its steps."""

    def edit(plan: Plan, outage: ConditionalOutage) -> Plan:
        in_s = max(0.0, stop_s - outage.elapsed_s)
        return replace(
            plan,
            steps=db_steps + plan.steps,
            stop_at_s={**plan.stop_at_s, "db": in_s, "web": in_s},
            throttle_at_s={**plan.throttle_at_s, "db": in_s},
        )

    return _EditedPlan(edit, ride_through_s)


def test_the_final_shutdown_reserves_for_what_a_service_draws_now_above_its_band() -> None:
    """A forecaster takes minutes to believe a step up; the reserve of a clean stop counts the
    draw measured now (here storage at 600 W against a band of 85 W) from the first cycle."""
    modes = []
    for storage_w in (None, 600.0):
        state = replace(initial_state(SITE), outage_started_s=0.0)
        drawn = {} if storage_w is None else {"storage": storage_w}
        reading = telemetry(600.0, state, soc_ratio=0.08, draw_w=drawn)
        controller = OutageController(SITE, settings=ControllerSettings(ride_through_s=0.0))
        modes.append(controller.step(state, reading).state.mode)
    assert modes == [Mode.SHEDDING, Mode.FINAL_SHUTDOWN]


def _plan_stops_batch_late() -> OutageController:
    """The real plan, except that batch stops in an hour and the final shutdown is later."""

    def edit(plan: Plan, _: ConditionalOutage) -> Plan:
        stops = dict.fromkeys(plan.stop_at_s, math.inf)
        return replace(plan, stop_at_s={**stops, "batch": 3600.0}, final_shutdown_at_s=7200.0)

    return _EditedPlan(edit)


def test_a_planned_stop_is_asked_at_once_when_the_pack_is_down_to_a_clean_stop() -> None:
    """The plan walks energy on the mean; a stop it puts late ends in time only if the service
    draws no more than that while it stops. Once the charge is down to a clean stop of what
    the UPS carries (upper draw and margin), the plan's early stops are asked at once (I4)."""
    for soc_ratio, asked in ((0.9, False), (0.01, True)):
        _, commands, _ = run(
            _plan_stops_batch_late(), initial_state(SITE), 0, 10, soc_ratio=soc_ratio
        )
        stops = [c for _, c in commands if isinstance(c, StopService)]
        assert [c.service_id for c in stops] == (["batch"] if asked else [])
        assert all(c.reason.startswith("UPS ups1 holds just enough") for c in stops)


def test_a_stop_gives_the_plans_reason_for_the_stop_not_for_an_earlier_cap() -> None:
    steps = (
        PlanStep(0.0, "db", "throttle", 60.0, "capped first"),
        PlanStep(100.0, "db", "shutdown", None, "then stopped"),
    )
    _, commands, _ = run(_plan_stops_db_at(100.0, db_steps=steps), initial_state(SITE), 0, 300)
    reasons = {c.service_id: c.reason for _, c in commands if isinstance(c, StopService)}
    assert reasons["db"] == "then stopped"


def test_what_depends_on_a_planned_stop_is_asked_early_enough_for_it_to_be_on_time() -> None:
    # web takes 20 s to stop and is seen down at the next 10-s cycle; db may stop only then (I1).
    _, commands, _ = run(_plan_stops_db_at(100.0), initial_state(SITE), 0, 300, soc_ratio=0.9)
    stops = {c.service_id: t for t, c in commands if isinstance(c, StopService)}
    assert stops["web"] < stops["db"] <= 100.0


def test_the_first_cycle_on_battery_does_not_take_the_mains_cadence_for_its_own() -> None:
    # Stepped every 5 minutes on mains (as the simulation learns), every 10 s once on battery:
    # the first look on battery must not act on everything due in the next 5 minutes.
    controller = _plan_stops_db_at(100.0)
    state, _, _ = run(controller, initial_state(SITE), -900, 0, step_s=300, mains_on=True)
    _, commands, _ = run(controller, state, 0, 300, soc_ratio=0.9)
    stops = {c.service_id: t for t, c in commands if isinstance(c, StopService)}
    assert stops["web"] == 70.0  # db due at 100 s, less web's 20 s and the cycle's 10 s


def test_a_restart_mid_outage_does_not_take_its_downtime_for_the_cadence() -> None:
    # Home Assistant was down for 5 minutes: the next look still comes 10 s after this one, so
    # web is asked when db's stop at 700 s needs it (700 - 20 - 10), not at the first look.
    controller = _plan_stops_db_at(700.0)
    state, _, _ = run(controller, initial_state(SITE), 0, 200, soc_ratio=0.9)
    restored = ControllerState.from_dict(json.loads(json.dumps(state.to_dict())))
    _, commands, _ = run(controller, restored, 500, 900, soc_ratio=0.9)
    stops = {c.service_id: t for t, c in commands if isinstance(c, StopService)}
    assert stops["web"] == 670.0


def test_nothing_is_asked_to_stop_while_a_blip_is_ridden_through() -> None:
    # The same stop, due as the 2-minute ride-through ends: web is not asked before it does.
    controller = _plan_stops_db_at(120.0, ride_through_s=120.0)
    _, commands, _ = run(controller, initial_state(SITE), 0, 300, soc_ratio=0.9)
    stops = {c.service_id: t for t, c in commands if isinstance(c, StopService)}
    # A step is taken at the cycle (10 s here) within which it falls due.
    assert min(stops.values()) == stops["web"] == 110.0


def test_a_blip_is_ridden_through() -> None:
    controller = OutageController(SITE)
    state, commands, _ = run(controller, initial_state(SITE), 0, 40, soc_ratio=0.9)
    assert state.mode is Mode.ON_BATTERY
    assert commands == []
    state, commands, _ = run(controller, state, 40, 200, mains_on=True, soc_ratio=0.9)
    assert state.mode is Mode.NORMAL
    assert commands == []


def test_the_ride_through_is_the_sites_choice() -> None:
    # A UPS ten times the rack's affords even a ten-minute ride in full.
    ups = SITE.ups[0]
    site = replace(
        SITE,
        ups=(
            replace(
                ups,
                capacity_wh=10 * ups.capacity_wh,
                runtime_full_load_s=10 * ups.runtime_full_load_s,
            ),
        ),
    )

    def stops_s(ride_through_s: float) -> dict[str, float]:
        settings = ControllerSettings(ride_through_s=ride_through_s)
        _, commands, _ = run(
            OutageController(site, settings=settings), initial_state(site), 0, 900, soc_ratio=0.5
        )
        return {c.service_id: t for t, c in commands if isinstance(c, StopService)}

    # Without a ride-through the plan waits as long as its own reckoning says; a shorter ride
    # changes nothing; a longer one is ridden in full (a step is taken at the cycle, 10 s here,
    # within which it falls due).
    own = stops_s(0.0)
    assert min(own.values()) > 0
    assert stops_s(min(own.values()) - 10.0) == own
    longer = stops_s(600.0)
    assert min(longer.values()) == longer["batch"] == 590.0


@pytest.mark.parametrize("ride_through_s", [-1.0, 3601.0, float("nan"), float("inf")])
def test_a_ride_through_out_of_range_is_refused(ride_through_s: float) -> None:
    with pytest.raises(ValueError, match="ride_through_s"):
        ControllerSettings(ride_through_s=ride_through_s)


def test_a_long_outage_sheds_dependents_first_and_cuts_only_after_the_stop() -> None:
    controller = OutageController(SITE)
    state, commands, _ = run(controller, initial_state(SITE), 0, 900, soc_ratio=0.3)
    stops = {c.service_id: t for t, c in commands if isinstance(c, StopService)}
    cuts = {c.service_id: t for t, c in commands if isinstance(c, SwitchOutlets) and not c.on}
    assert "batch" in stops
    assert "web" in stops
    for service in SITE.services:
        if service.id in cuts:
            # I3: the outlets are cut only once the draw fell (next cycle here) or after shutdown_s
            assert cuts[service.id] > stops[service.id]
        for dependency in service.depends_on:
            if dependency in stops:
                # I1: a dependency is asked to stop only once its dependents are down
                assert service.id in cuts
                assert cuts[service.id] <= stops[dependency]
    assert state.services["network"].phase is Phase.ON  # critical: never shed for a lower tier


def test_final_shutdown_stops_everything_cleanly_in_dependency_order() -> None:
    controller = OutageController(SITE)
    state, commands, _ = run(controller, initial_state(SITE), 0, 600, soc_ratio=0.004)
    assert state.mode is Mode.FINAL_SHUTDOWN
    order = [c.service_id for _, c in commands if isinstance(c, StopService)]
    assert order.index("storage") > order.index("db") > order.index("web")
    assert order.index("network") > order.index("storage")
    assert all(c.phase is Phase.OFF for c in state.services.values())


def test_mains_back_mid_shutdown_aborts_pending_stops_and_restores_in_order() -> None:
    controller = OutageController(SITE)
    state, _, _ = run(controller, initial_state(SITE), 0, 300, soc_ratio=0.2)
    assert any(c.phase is not Phase.ON for c in state.services.values())
    state, commands, _ = run(controller, state, 300, 1500, mains_on=True, soc_ratio=0.2)
    assert all(c.phase is Phase.ON for c in state.services.values())
    assert state.mode is Mode.NORMAL
    starts = [(t, c.service_id) for t, c in commands if isinstance(c, StartService)]
    assert starts
    assert starts[0][0] >= 300 + controller.settings.restore_delay_s
    started = [sid for _, sid in starts]
    for service in SITE.services:
        for dependency in service.depends_on:
            if service.id in started and dependency in started:
                assert started.index(dependency) < started.index(service.id)
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(starts)]
    assert all(gap >= controller.settings.restore_stagger_s for gap in gaps)


def _in_the_final_shutdown(
    soc_ratio: float, looked_s: float, services: Mapping[str, ServiceControl]
) -> ControllerState:
    """A final shutdown under way since the outage began at 0, last looked at `looked_s`."""
    return replace(
        initial_state(SITE),
        mode=Mode.FINAL_SHUTDOWN,
        outage_started_s=0.0,
        soc_ratio={"ups1": soc_ratio},
        soc_at_s=looked_s,
        look_interval_s=10.0,
        services=dict(services),
    )


def _final_shutdown_caps(web: Phase) -> list[tuple[str, float | None]]:
    """The caps of the next cycle of a final shutdown in which db, storage and network wait to
    stop and web is `web`."""
    services = {sid: ServiceControl(phase=Phase.PENDING_STOP) for sid in SITE.service_by_id}
    services["batch"] = ServiceControl(phase=Phase.OFF)
    services["web"] = ServiceControl(phase=web, since_s=990.0)
    state = _in_the_final_shutdown(0.3, 990.0, services)
    reading = telemetry(1000.0, state, soc_ratio=0.3)
    commands = OutageController(SITE).step(state, reading).commands
    return [(c.service_id, c.cap_w) for c in commands if isinstance(c, Throttle)]


def test_in_the_final_shutdown_what_waits_for_its_dependents_runs_at_its_floor() -> None:
    """db waits for web's stop: capped to its 60-W floor meanwhile, the watts go to the last
    stops. With web down, db stops at once and is not capped: its stop saves more."""
    assert _final_shutdown_caps(web=Phase.STOPPING) == [("db", 60.0)]
    assert _final_shutdown_caps(web=Phase.OFF) == []


def _mains_back_in_the_final_shutdown(soc_ratio: float) -> ControllerState:
    """The state a cycle after mains returned, while db stopped and storage and network waited."""
    services = dict.fromkeys(("web", "batch"), ServiceControl(phase=Phase.OFF))
    services["db"] = ServiceControl(phase=Phase.STOPPING, since_s=990.0)
    for sid in ("storage", "network"):
        services[sid] = ServiceControl(phase=Phase.PENDING_STOP, shed_in_outage=True)
    state = _in_the_final_shutdown(soc_ratio, 990.0, services)
    reading = telemetry(1000.0, state, mains_on=True, soc_ratio=soc_ratio)
    return OutageController(SITE).step(state, reading).state


def test_mains_back_calls_off_a_pending_stop_only_if_the_charge_could_stop_it_again() -> None:
    """A second outage finds the pack as the first left it: what is kept on must be what that
    charge can still stop cleanly, as for a restore (I4)."""
    charged = _mains_back_in_the_final_shutdown(soc_ratio=0.9)
    assert charged.services["storage"].phase is Phase.ON
    assert charged.services["network"].phase is Phase.ON
    empty = _mains_back_in_the_final_shutdown(soc_ratio=0.0)
    assert all(empty.services[sid].phase is Phase.PENDING_STOP for sid in ("storage", "network"))
    # network is critical: its stop is the final shutdown's, going on (I4, I7).
    assert empty.services["network"].reason.startswith("the final shutdown goes on: mains is back")
    assert "restored once recharged" in empty.services["network"].reason


def test_a_restart_counts_its_startup_from_when_its_outlet_came_on() -> None:
    """network's outlet stays off for its first starts: storage, which needs it, waits for its
    startup_s from the outlet on, not from the first start command (I1, I6)."""
    controller = OutageController(SITE)
    services = {sid: ServiceControl(phase=Phase.OFF) for sid in SITE.service_by_id}
    state = replace(initial_state(SITE), services=services)
    stuck_until_s = 200.0
    powered_s: float | None = None
    storage_started_s: float | None = None
    t_s = 0.0
    while storage_started_s is None and t_s < 1000.0:
        stuck = t_s < stuck_until_s
        reading = telemetry(
            t_s, state, mains_on=True, soc_ratio=1.0, draw_w={"network": 0.0} if stuck else {}
        )
        if stuck:
            reading = replace(reading, outlet_on={**reading.outlet_on, "pdu-a/1": False})
        elif powered_s is None and state.services["network"].phase is Phase.STARTING:
            powered_s = t_s
        result = controller.step(state, reading)
        state = result.state
        if any(isinstance(c, StartService) and c.service_id == "storage" for c in result.commands):
            storage_started_s = t_s
        t_s += 10.0
    assert powered_s is not None
    assert storage_started_s is not None
    assert storage_started_s >= powered_s + SITE.service_by_id["network"].startup_s


def _db_throttles_after_a_cap(db_draw_w: float) -> list[Throttle]:
    """The Throttle commands for db a cycle after it was capped to 60 W, drawing `db_draw_w`."""
    services = dict(initial_state(SITE).services)
    services["db"] = ServiceControl(phase=Phase.ON, cap_w=60.0, next_switch_s=5.0)
    state = replace(
        initial_state(SITE), services=services, outage_started_s=0.0, soc_ratio={"ups1": 0.9}
    )
    reading = telemetry(10.0, state, soc_ratio=0.9, draw_w={"db": db_draw_w})
    commands = OutageController(SITE).step(state, reading).commands
    return [c for c in commands if isinstance(c, Throttle) and c.service_id == "db"]


def test_a_cap_the_draw_stays_above_is_sent_again() -> None:
    """A lost cap leaves the service drawing what the plan counted as saved (I7)."""
    (again,) = _db_throttles_after_a_cap(db_draw_w=120.0)
    assert again.cap_w == 60.0
    assert again.reason.startswith("retrying a cap that did not take")
    assert _db_throttles_after_a_cap(db_draw_w=60.0) == []


def test_a_service_waiting_for_its_dependents_to_stop_is_capped_meanwhile() -> None:
    """The plan stops storage, which db depends on: db is to stop once web is down (I1), and
    runs at its 60-W floor until then, the plan's own caps aside."""

    def edit(plan: Plan, _: ConditionalOutage) -> Plan:
        return replace(
            plan,
            stop_at_s={**plan.stop_at_s, "storage": 0.0},
            throttle_at_s=dict.fromkeys(plan.throttle_at_s, math.inf),
        )

    state, commands, _ = run(_EditedPlan(edit), initial_state(SITE), 0, 10, soc_ratio=0.9)
    assert state.services["db"].phase is Phase.PENDING_STOP
    (cap,) = [c for _, c in commands if isinstance(c, Throttle)]
    assert (cap.service_id, cap.cap_w) == ("db", 60.0)
    assert cap.reason == "capped while what needs it stops, before its own stop"


def test_state_survives_a_restart_mid_outage() -> None:
    controller = OutageController(SITE)
    state, _, _ = run(controller, initial_state(SITE), 0, 300, soc_ratio=0.2)
    restored = ControllerState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    again = OutageController(SITE).step(restored, telemetry(300, restored, soc_ratio=0.2))
    shed = [sid for sid, c in state.services.items() if c.phase is Phase.OFF]
    assert not any(isinstance(c, StartService) for c in again.commands)
    assert all(again.state.services[sid].phase is Phase.OFF for sid in shed)


def test_an_outlet_that_does_not_switch_is_retried_with_backoff_and_reported() -> None:
    controller = OutageController(SITE)
    stuck = frozenset({"pdu-a/5"})
    state, commands, faults = run(
        controller, initial_state(SITE), 0, 900, soc_ratio=0.3, stuck=stuck
    )
    retries = [t for t, c in commands if isinstance(c, SwitchOutlets) and c.service_id == "batch"]
    assert len(retries) >= 3
    gaps = [b - a for a, b in itertools.pairwise(retries)]
    assert gaps == sorted(gaps)  # backing off
    assert any(f.kind == "outlet_stuck" and f.service_id == "batch" for f in faults)
    # The rest of the shutdown is not held up by it.
    assert state.services["web"].phase is Phase.OFF


def test_missing_telemetry_changes_nothing_and_is_reported() -> None:
    controller = OutageController(SITE)
    state = initial_state(SITE)
    result = controller.step(state, telemetry(0, state, mains_on=None, soc_ratio=None))
    assert result.commands == ()
    assert result.state.mode is Mode.NORMAL
    assert {f.kind for f in result.faults} == {"telemetry_missing"}


def test_a_runtime_reading_that_jumps_is_believed_only_once_it_persists() -> None:
    controller = OutageController(SITE)
    state = initial_state(SITE)
    state = controller.step(state, telemetry(0, state, soc_ratio=0.9, runtime_s=3000)).state
    jumped = controller.step(state, telemetry(10, state, soc_ratio=0.9, runtime_s=30))
    assert jumped.state.soc_ratio["ups1"] == 0.9
    state = jumped.state
    for t_s in range(20, 100, 10):
        state = controller.step(state, telemetry(t_s, state, soc_ratio=0.9, runtime_s=30)).state
    assert state.soc_ratio["ups1"] < 0.2


def test_holds_are_obeyed() -> None:
    controller = OutageController(SITE)
    state = hold(SITE, hold(SITE, initial_state(SITE), "web", True), "batch", False)
    state, commands, _ = run(controller, state, 0, 600, soc_ratio=0.004)
    stopped = {c.service_id for _, c in commands if isinstance(c, StopService)}
    # web is held on, and so is everything it needs; batch is held off.
    assert stopped == {"batch"}
    assert state.services["web"].phase is Phase.ON
    released = hold(SITE, replace(state), "web", None)
    assert "web" not in released.held_on


def test_a_hold_that_contradicts_another_is_refused() -> None:
    """web needs db, which needs storage: web cannot be held on while storage is held off."""
    state = hold(SITE, initial_state(SITE), "storage", False)
    with pytest.raises(HoldConflictError) as raised:
        hold(SITE, state, "web", True)
    assert str(raised.value) == (
        "holding web on contradicts the holds on db, storage, web through their dependencies"
    )
    assert raised.value.services == {"storage", "db", "web"}
    released = hold(SITE, state, "storage", None)
    assert hold(SITE, released, "web", True).held_on == {"web"}


def test_a_lost_stop_is_asked_again_and_the_outlets_are_cut_only_after_one_went_through() -> None:
    """Every command for `batch` is lost until `fixed_s`: its OS must never lose power running."""
    controller = OutageController(SITE)
    state = initial_state(SITE)
    fixed_s = 400.0
    os_down_at_s: float | None = None  # when a stop that went through has let its OS stop
    cut_at_s: float | None = None
    stops: list[float] = []
    t_s = 0.0
    while t_s < 1500:
        reading = telemetry(t_s, state, soc_ratio=0.3)
        batch_w = 0.0 if cut_at_s is not None else DEMAND["batch"].mean_w
        if os_down_at_s is not None and t_s >= os_down_at_s and cut_at_s is None:
            batch_w = IDLE_W["batch"]
        reading = replace(
            reading,
            service_draw_w={**reading.service_draw_w, "batch": batch_w},
            outlet_on={**reading.outlet_on, "pdu-a/5": cut_at_s is None},
        )
        result = controller.step(state, reading)
        state = result.state
        for command in result.commands:
            if command.service_id != "batch" or t_s < fixed_s:
                continue
            if isinstance(command, StopService) and os_down_at_s is None:
                os_down_at_s = t_s + 10.0
            elif isinstance(command, SwitchOutlets) and not command.on and cut_at_s is None:
                assert os_down_at_s is not None  # I3: never cut before a stop went through
                assert t_s >= os_down_at_s
                cut_at_s = t_s
        stops += [
            t_s for c in result.commands if isinstance(c, StopService) and c.service_id == "batch"
        ]
        t_s += 10.0
    early = [t for t in stops if t < fixed_s]
    assert len(early) >= 3
    gaps = [b - a for a, b in itertools.pairwise(early)]
    assert gaps == sorted(gaps)  # asked again with backoff
    assert cut_at_s is not None
    assert state.services["batch"].phase is Phase.OFF


def _final_shutdown_starts_s(*, batch_ignores_commands: bool, soc_ratio: float) -> float:
    """When the final shutdown begins, the charge falling from `soc_ratio` to empty in 3000 s."""
    controller = OutageController(SITE)
    state = initial_state(SITE)
    t_s = 0.0
    while state.mode is not Mode.FINAL_SHUTDOWN:
        assert t_s < 3600, "no final shutdown"
        reading = telemetry(t_s, state, soc_ratio=soc_ratio * max(0.0, 1.0 - t_s / 3000))
        if batch_ignores_commands:
            reading = replace(
                reading,
                service_draw_w={**reading.service_draw_w, "batch": DEMAND["batch"].mean_w},
                outlet_on={**reading.outlet_on, "pdu-a/5": True},
            )
        state = controller.step(state, reading).state
        t_s += 10.0
    return t_s


def _final_shutdown_with_batch_still_up(soc_ratio: float) -> list[Command]:
    """The commands for batch once its stop's shutdown_s ran out in the final shutdown, its
    draw showing the stop was lost."""
    batch = SITE.service_by_id["batch"]
    asked_s = 1000.0
    services = {sid: ServiceControl(phase=Phase.PENDING_STOP) for sid in SITE.service_by_id}
    services["web"] = ServiceControl(phase=Phase.OFF)
    services["batch"] = ServiceControl(phase=Phase.STOPPING, since_s=asked_s)
    state = _in_the_final_shutdown(soc_ratio, asked_s + batch.shutdown_s - 10.0, services)
    now_s = asked_s + batch.shutdown_s
    reading = telemetry(now_s, state, soc_ratio=soc_ratio, draw_w={"batch": DEMAND["batch"].mean_w})
    return [
        c for c in OutageController(SITE).step(state, reading).commands if c.service_id == "batch"
    ]


def test_a_lost_stop_in_the_final_shutdown_is_asked_again_while_the_pack_affords_it() -> None:
    """Cutting it would take power from a running OS (I3); the cut waits while the charge
    still covers another stop of everything drawing, and goes ahead once it does not (I1)."""
    (again,) = _final_shutdown_with_batch_still_up(soc_ratio=0.6)
    assert isinstance(again, StopService)
    assert again.reason.startswith("retrying a stop that did not happen")
    (cut,) = _final_shutdown_with_batch_still_up(soc_ratio=0.02)
    assert isinstance(cut, SwitchOutlets)
    assert not cut.on


def _when_a_stop_ends(
    sid: str, running_w: float, draw_w: float, cap_w: float | None = None
) -> list[Command]:
    """The commands for `sid`, on battery, once its stop's shutdown_s ran out with it drawing
    `draw_w`; it draws `running_w` when up, and was capped to `cap_w`."""
    asked_s = 1000.0
    services = dict(initial_state(SITE).services)
    services[sid] = ServiceControl(phase=Phase.STOPPING, since_s=asked_s, cap_w=cap_w)
    for dependent in SITE.graph.dependent_closure([sid]) - {sid}:
        services[dependent] = ServiceControl(phase=Phase.OFF)
    state = replace(
        initial_state(SITE), services=services, outage_started_s=0.0, soc_ratio={"ups1": 0.9}
    )
    now_s = asked_s + SITE.service_by_id[sid].shutdown_s
    reading = telemetry(now_s, state, soc_ratio=0.9, draw_w={sid: draw_w})
    demand = {**DEMAND, sid: Demand(running_w, running_w * 1.1)}
    result = OutageController(SITE).step(state, replace(reading, demand_w=demand))
    return [c for c in result.commands if c.service_id == sid]


def test_a_lost_stop_shows_in_the_draw_of_a_service_that_runs_within_the_idle_margin() -> None:
    """web idles at 3 W; running at 6 W it is within the 5-W margin a server's idle noise
    needs, so its margin is half its running draw above idle: up above 4.5 W. Its stop lost, it
    is asked again rather than cut under a running OS (I3)."""
    (again,) = _when_a_stop_ends("web", running_w=6.0, draw_w=6.0)
    assert isinstance(again, StopService)
    assert again.reason.startswith("retrying a stop that did not happen")
    (cut,) = _when_a_stop_ends("web", running_w=6.0, draw_w=4.0)
    assert isinstance(cut, SwitchOutlets)
    # A server's margin stays 5 W: 4 W over idle is a stopped OS's noise, and it is cut.
    (cut,) = _when_a_stop_ends("web", running_w=90.0, draw_w=7.0)
    assert isinstance(cut, SwitchOutlets)


def test_a_cap_the_draw_is_above_hides_no_lost_stop() -> None:
    """db runs at 12 W, up above 8.5 W. Capped to 8 W its draw could not show it up, but at
    12 W the cap did not take (lost with the stop, say), and neither did the stop."""
    (again,) = _when_a_stop_ends("db", running_w=12.0, draw_w=12.0, cap_w=8.0)
    assert isinstance(again, StopService)
    # Drawing within the cap, it cannot tell: its shutdown_s is all there is to go by.
    (cut,) = _when_a_stop_ends("db", running_w=12.0, draw_w=7.0, cap_w=8.0)
    assert isinstance(cut, SwitchOutlets)


def test_a_stop_that_could_not_be_delivered_is_asked_again_at_once() -> None:
    """Its agent or stop action reported an error: the OS never heard it, so the next cycle
    asks again, rather than waiting out its shutdown_s to see its draw still up (I7)."""
    stopping = ServiceControl(phase=Phase.STOPPING, since_s=1000.0, next_switch_s=1000.0)
    services = {**initial_state(SITE).services, "web": stopping}
    state = replace(
        initial_state(SITE), services=services, outage_started_s=0.0, soc_ratio={"ups1": 0.9}
    )
    controller = OutageController(SITE)
    reading = telemetry(1010.0, state, soc_ratio=0.9, draw_w={"web": DEMAND["web"].mean_w})
    assert not [c for c in controller.step(state, reading).commands if c.service_id == "web"]
    result = controller.step(state, replace(reading, stops_undelivered=frozenset({"web"})))
    (again,) = [c for c in result.commands if c.service_id == "web"]
    assert isinstance(again, StopService)
    assert again.reason.startswith("retrying a stop that could not be delivered")
    assert [f.kind for f in result.faults if f.service_id == "web"] == ["stop_undelivered"]
    # Its shutdown_s counts from the stop that may arrive, and the next ask backs off.
    web = result.state.services["web"]
    assert (web.since_s, web.switch_attempts, web.next_switch_s) == (1010.0, 1, 1015.0)


def test_a_service_whose_stop_fails_is_carried_by_the_reserve() -> None:
    """Its draw goes on as long as the fault: the final shutdown must start earlier for it."""
    for soc_ratio in (0.1, 0.3):
        obeyed = _final_shutdown_starts_s(batch_ignores_commands=False, soc_ratio=soc_ratio)
        ignored = _final_shutdown_starts_s(batch_ignores_commands=True, soc_ratio=soc_ratio)
        assert ignored < obeyed


def test_a_service_nobody_can_ask_to_stop_is_cut_once_its_shutdown_s_ran_out() -> None:
    """No agent, no stop action: its draw never falls, and that is no lost stop to retry (I3)."""
    controller = OutageController(SITE)
    state = hold(SITE, initial_state(SITE), "batch", False)
    batch = SITE.service_by_id["batch"]
    stopped_at_s: float | None = None
    cut_at_s: float | None = None
    t_s = 0.0
    while t_s < 600 and cut_at_s is None:
        reading = telemetry(t_s, state, mains_on=True, soc_ratio=1.0)
        reading = replace(
            reading,
            service_draw_w={**reading.service_draw_w, "batch": DEMAND["batch"].mean_w},
            no_stop_channel=frozenset({"batch"}),
        )
        result = controller.step(state, reading)
        state = result.state
        for command in result.commands:
            if isinstance(command, StopService) and command.service_id == "batch":
                assert stopped_at_s is None, "asked only once"
                stopped_at_s = t_s
            elif isinstance(command, SwitchOutlets) and command.service_id == "batch":
                cut_at_s = t_s
        t_s += 10.0
    assert stopped_at_s is not None
    assert cut_at_s is not None
    assert cut_at_s - stopped_at_s >= batch.shutdown_s
    assert state.services["batch"].phase in (Phase.CUTTING, Phase.OFF)


def test_a_restore_waits_for_the_charge_a_clean_stop_would_need() -> None:
    controller = OutageController(SITE)
    state, _, _ = run(controller, initial_state(SITE), 0, 600, soc_ratio=0.004)
    assert all(c.phase is Phase.OFF for c in state.services.values())
    # Back on mains with the pack nearly empty: were mains to fail again, what is restored must
    # be what this charge can still stop cleanly.
    state, commands, _ = run(controller, state, 600, 1200, mains_on=True, soc_ratio=0.01)
    started = [c.service_id for _, c in commands if isinstance(c, StartService)]
    # The critical chain needs little to stop (network 5 s, storage 30 s); db's 40-s stop with
    # storage's after it needs more than 1 % of this pack, and db waits for it.
    assert started == ["network", "storage"]
    assert state.services["db"].phase is Phase.OFF
    assert "recharge" in state.services["db"].reason
    state, _, _ = run(controller, state, 1200, 2400, mains_on=True, soc_ratio=0.9)
    assert all(c.phase is Phase.ON for c in state.services.values())


def test_a_pack_too_small_to_stop_everything_restores_once_it_is_charged() -> None:
    # 30 s at 800 W: no charge stops the rack cleanly; waiting for more than a full pack holds
    # would never restore at all.
    tiny = BatteryModel(t_ref_s=30, p_ref_w=800, peukert_k=1.3, capacity_wh=20, efficiency=0.9)
    controller = OutageController(SITE, batteries={"ups1": tiny})
    state, _, _ = run(controller, initial_state(SITE), 0, 600, soc_ratio=0.004)
    state, _, _ = run(controller, state, 600, 1800, mains_on=True, soc_ratio=0.9)
    assert any(c.phase is Phase.OFF for c in state.services.values())
    state, _, _ = run(controller, state, 1800, 3000, mains_on=True, soc_ratio=1.0)
    assert all(c.phase is Phase.ON for c in state.services.values())


@pytest.mark.parametrize(("storage_draw_w", "storage_shed"), [(80.0, False), (380.0, True)])
def test_a_critical_service_is_shed_for_a_limit_only_once_its_draw_is_over_it(
    storage_draw_w: float, storage_shed: bool
) -> None:
    # storage's band reaches 390 W (a young forecaster after a jump): with network it is over
    # the 400-W PDU by the band. It is shed only if it draws that much.
    site = rack(pdus=[{"id": "pdu-a", "ups": "ups1", "limit_w": 400, "outlets": 6}]).site
    controller = OutageController(site, settings=ControllerSettings(ride_through_s=0))
    demand = {**DEMAND, "storage": Demand(80, 390)}
    state = initial_state(site)
    for now_s in (0.0, 10.0):
        reading = telemetry(now_s, state, soc_ratio=0.9)
        draw = {**reading.service_draw_w, "storage": storage_draw_w}
        state = controller.step(state, replace(reading, demand_w=demand, service_draw_w=draw)).state
    assert (state.services["storage"].phase is not Phase.ON) is storage_shed
    assert state.services["network"].phase is Phase.ON
    # What does not fit beside the critical tier goes, by the band, as before.
    assert state.services["db"].phase is not Phase.ON
    assert state.services["db"].reason.startswith("over a limit") or storage_shed


def test_a_restore_never_displaces_what_runs() -> None:
    # web and batch each fit beside the critical chain and db, not both. web (medium) is off,
    # batch (low) runs: the allocation of everything would rather have web than batch, but
    # starting web means an overload until batch is shed. web waits.
    site = rack(pdus=[{"id": "pdu-a", "ups": "ups1", "limit_w": 460, "outlets": 6}]).site
    controller = OutageController(site)
    state = initial_state(site)
    state = replace(
        state, services={**state.services, "web": replace(state.services["web"], phase=Phase.OFF)}
    )
    state, commands, _ = run(controller, state, 0, 600, mains_on=True, soc_ratio=1.0)
    assert not [c for _, c in commands if isinstance(c, StartService)]
    assert state.services["batch"].phase is Phase.ON
    assert state.services["web"].phase is Phase.OFF
    assert state.services["web"].reason == (
        "waiting to restore: over a limit (batch would not fit beside it)"
    )


def test_a_start_capped_too_low_to_show_in_its_draw_is_not_retried() -> None:
    # db is up when it draws more than idle (5 W) + 60 W; capped to 60 W it never can. The cap
    # is the overload guard's, whose shed on pdu-a holds it.
    controller = OutageController(SITE, settings=ControllerSettings(idle_margin_w=60))
    guarded = frozenset({"pdu-a"})
    state = initial_state(SITE)
    starting = ServiceControl(phase=Phase.STARTING, since_s=0.0, cap_w=60.0, next_switch_s=5.0)
    state = replace(state, services={**state.services, "db": starting})
    faults: list[Fault] = []
    for now_s in range(0, 300, 10):
        reading = telemetry(now_s, state, mains_on=True, soc_ratio=1.0)
        draw = {**reading.service_draw_w, "db": 60.0}
        reading = replace(reading, service_draw_w=draw, overload_shedding_nodes=guarded)
        result = controller.step(state, reading)
        state = result.state
        faults += result.faults
        assert not [c for c in result.commands if isinstance(c, StartService)]
    assert state.services["db"].phase is Phase.ON
    assert state.services["db"].cap_w == 60.0
    assert not faults


def _web_off_batch_stopping(site: Site) -> ControllerState:
    state = initial_state(site)
    stopping = replace(state.services["batch"], phase=Phase.STOPPING, since_s=0.0)
    web_off = replace(state.services["web"], phase=Phase.OFF)
    return replace(state, services={**state.services, "batch": stopping, "web": web_off})


def test_a_restore_waits_for_what_is_still_stopping_when_it_fits_only_without_it() -> None:
    # As above: web fits beside the rest once batch is off, and batch draws until it is.
    site = rack(pdus=[{"id": "pdu-a", "ups": "ups1", "limit_w": 460, "outlets": 6}]).site
    controller = OutageController(site)
    state = _web_off_batch_stopping(site)
    events: list[tuple[float, str]] = []
    for now_s in range(0, 300, 10):
        result = controller.step(state, telemetry(now_s, state, mains_on=True, soc_ratio=1.0))
        state = result.state
        events += [
            (now_s, f"start {c.service_id}") for c in result.commands if isinstance(c, StartService)
        ]
        if state.services["batch"].phase is Phase.OFF and not any(
            e == "batch off" for _, e in events
        ):
            events.append((now_s, "batch off"))
    assert [e for _, e in events][:2] == ["batch off", "start web"]


def _web_restored_beside_dual_fed_db(db_second_feed_on: bool) -> ControllerState:
    """web off and mains back; db dual-fed from pdu-a/3 and pdu-b/1. With both feeds on, pdu-a
    (300 W) carries half of db and web fits; with pdu-b/1 off, it carries all of db, and does not.
    """
    config = copy.deepcopy(RACK)
    config["pdus"] = [
        {"id": "pdu-a", "ups": "ups1", "limit_w": 300, "outlets": 6},
        {"id": "pdu-b", "ups": "ups1", "limit_w": 1000, "outlets": 6},
    ]
    outlets = {"db": ["pdu-a/3", "pdu-b/1"], "batch": ["pdu-b/2"]}
    for service in config["services"]:
        service["outlets"] = outlets.get(service["id"], service["outlets"])
    site = build_scenario(config, {}).site
    controller = OutageController(site)
    state = initial_state(site)
    state = replace(
        state, services={**state.services, "web": replace(state.services["web"], phase=Phase.OFF)}
    )
    for now_s in range(0, 300, 10):
        reading = telemetry(now_s, state, mains_on=True, soc_ratio=1.0)
        outlet_on: dict[str, bool | None] = {
            o: state.services[s.id].phase is not Phase.OFF for s in site.services for o in s.outlets
        }
        outlet_on["pdu-b/1"] = db_second_feed_on
        state = controller.step(state, replace(reading, outlet_on=outlet_on)).state
    return state


def test_a_dual_fed_service_with_a_feed_off_counts_all_its_draw_on_the_other() -> None:
    assert _web_restored_beside_dual_fed_db(db_second_feed_on=True).services["web"].phase in (
        Phase.STARTING,
        Phase.ON,
    )
    web = _web_restored_beside_dual_fed_db(db_second_feed_on=False).services["web"]
    assert web.phase is Phase.OFF
    assert web.reason.startswith("waiting to restore: over a limit")


def test_nothing_is_restored_onto_a_node_the_overload_guard_is_shedding_on() -> None:
    controller = OutageController(SITE)
    state = _web_off_batch_stopping(SITE)
    for now_s in range(0, 300, 10):
        reading = telemetry(now_s, state, mains_on=True, soc_ratio=1.0)
        result = controller.step(
            state, replace(reading, overload_shedding_nodes=frozenset({"pdu-a"}))
        )
        state = result.state
        assert not [c for c in result.commands if isinstance(c, StartService)]
    assert state.services["web"].reason == (
        "waiting to restore: the overload guard is shedding on pdu-a"
    )


def _capped(site: Site, cap_w: float) -> ControllerState:
    state = initial_state(site)
    return replace(
        state, services={**state.services, "batch": replace(state.services["batch"], cap_w=cap_w)}
    )


def test_on_mains_a_cap_is_lifted_once_everything_fits_without_it() -> None:
    # A cap the guard set on mains, its shed since released: batch runs capped for nothing.
    state, commands, _ = run(OutageController(SITE), _capped(SITE, 120.0), 0, 30, mains_on=True)
    assert state.services["batch"].cap_w is None
    assert [c for _, c in commands if isinstance(c, Throttle)] == [
        Throttle("batch", None, "on mains, and everything fits at its full draw")
    ]


def test_on_mains_a_cap_stays_while_the_limits_need_it_and_is_checked_again_later() -> None:
    # Everything at its upper draw is 540 W on a 460-W PDU: batch stays capped.
    site = rack(pdus=[{"id": "pdu-a", "ups": "ups1", "limit_w": 460, "outlets": 6}]).site
    state, commands, _ = run(OutageController(site), _capped(site, 120.0), 0, 600, mains_on=True)
    assert state.services["batch"].cap_w == 120.0
    assert not [c for _, c in commands if isinstance(c, Throttle)]
    assert state.services["batch"].reason.startswith("capped on mains: over a limit")


def test_an_outage_ends_when_mains_has_stayed_back_and_a_flicker_ends_none() -> None:
    controller = OutageController(SITE)
    delay_s = controller.settings.restore_delay_s
    state = initial_state(SITE)
    ended: list[float] = []
    # Off at 0, back at 100, off again at 120 (a flicker: the same outage), back for good at 200.
    for now_s, mains_on in ((0.0, False), (100.0, True), (120.0, False), (200.0, True)):
        after = controller.step(state, telemetry(now_s, state, mains_on=mains_on)).state
        assert ended_outage_s(state, after) is None
        state = after
    now_s = 200.0
    while state.outage_started_s is not None:
        now_s += 10.0
        after = controller.step(state, telemetry(now_s, state, mains_on=True)).state
        if (length_s := ended_outage_s(state, after)) is not None:
            ended.append(length_s)
        state = after
    assert ended == [200.0]
    assert now_s >= 200.0 + delay_s
    # Mains back, then off again after the restore delay with no cycle between: a second outage.
    back = replace(initial_state(SITE), outage_started_s=0.0, mains_back_s=100.0)
    second = replace(back, outage_started_s=100.0 + delay_s, mains_back_s=None)
    assert ended_outage_s(back, second) == 100.0
    assert ended_outage_s(initial_state(SITE), initial_state(SITE)) is None


def _shed_for_a_limit(site: Site, *service_ids: str) -> ControllerState:
    """On mains, `service_ids` stopped for a limit long ago (their recheck is due)."""
    state = initial_state(site)
    shed = {
        sid: replace(state.services[sid], phase=Phase.OFF, shed_for_limit_s=-1000.0)
        for sid in service_ids
    }
    return replace(state, services={**state.services, **shed})


def _give_back(
    state: ControllerState, extra_w: float, end_s: float = 600.0
) -> tuple[ControllerState, list[tuple[float, Command]]]:
    """Cycles on mains where each node's own forecast upper is what draws now plus `extra_w`."""
    controller = OutageController(SITE)
    commands: list[tuple[float, Command]] = []
    for now_s in range(0, int(end_s), 10):
        reading = telemetry(now_s, state, mains_on=True, soc_ratio=1.0)
        drawn_w = sum(w or 0.0 for w in reading.service_draw_w.values())
        forecast = {"pdu-a": drawn_w + extra_w, "ups1": drawn_w + extra_w}
        drawn = {"pdu-a": drawn_w, "ups1": drawn_w}
        result = controller.step(state, replace(reading, node_upper_w=forecast, node_draw_w=drawn))
        state = result.state
        commands += [(now_s, c) for c in result.commands]
    return state, commands


def test_on_mains_what_was_shed_for_a_limit_comes_back_in_order_once_its_node_fits() -> None:
    # db and web were stopped for a limit; the UPS (800 W) forecasts 360 W now: with db's 130 W
    # back it is within 90 % of its rating. web follows once db is up.
    state, commands = _give_back(_shed_for_a_limit(SITE, "db", "web"), extra_w=100.0)
    starts = [(t, c) for t, c in commands if isinstance(c, StartService)]
    assert [c.service_id for _, c in starts] == ["db", "web"]
    assert starts[0][1].reason == "ups1 forecast 480 W of 800 W with db back: restoring"
    assert starts[1][1].reason.endswith("with web back: restoring")
    db_up_s = starts[0][0] + SITE.service_by_id["db"].startup_s
    assert starts[1][0] >= db_up_s
    assert all(c.phase is Phase.ON for c in state.services.values())


def test_on_mains_what_was_shed_for_a_limit_stays_off_while_its_node_would_not_fit() -> None:
    # The UPS forecasts 650 W: db's 130 W more is over 90 % of its 800 W.
    state, commands = _give_back(_shed_for_a_limit(SITE, "db", "web"), extra_w=390.0)
    assert not [c for _, c in commands if isinstance(c, StartService)]
    assert state.services["db"].phase is Phase.OFF
    assert state.services["db"].reason == (
        "waiting to restore: over a limit (ups1 forecast 770 W of 800 W with db back)"
    )


def test_on_mains_a_cap_for_a_limit_is_released_once_its_node_fits_with_the_margin() -> None:
    capped = _capped(SITE, 120.0)
    state, commands = _give_back(capped, extra_w=0.0, end_s=20.0)
    assert state.services["batch"].cap_w is None
    (release,) = [c for _, c in commands if isinstance(c, Throttle)]
    # 440 W drawn (batch at its 120-W cap) and its 80 W above the cap back.
    assert release.reason == "ups1 forecast 520 W of 800 W with batch uncapped back: releasing"
    kept, commands = _give_back(capped, extra_w=250.0, end_s=20.0)
    assert kept.services["batch"].cap_w == 120.0
    assert not [c for _, c in commands if isinstance(c, Throttle)]
