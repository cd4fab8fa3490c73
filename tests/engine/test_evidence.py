"""A reading is evidence, not truth: single, forged or impossible readings start nothing (I9)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from custom_components.power_allocation.engine.controller import (
    Mode,
    Phase,
    Readings,
    StartService,
    StopService,
    UpsReading,
)
from custom_components.power_allocation.engine.decider import SiteDecider
from custom_components.power_allocation.engine.evidence import MainsBelief
from custom_components.power_allocation.engine.model import Priority, Site, Ups

from .outage_scenarios import rack

SITE = rack().site
DRAW_W = {"network": 30.0, "storage": 80.0, "db": 120.0, "web": 90.0, "batch": 150.0}


def readings(
    now_s: float,
    *,
    on_battery: bool | None = False,
    soc_ratio: float | None = 1.0,
    low_battery: bool | None = False,
    agent_w: dict[str, float] | None = None,
    site: Site = SITE,
) -> Readings:
    """A healthy rack as its drivers would report it; the UPS's flags as asked."""
    draw = {**DRAW_W, **(agent_w or {})}
    return Readings(
        now_s=now_s,
        mains_on=None if on_battery is None else not on_battery,
        ups={
            u.id: UpsReading(
                soc_ratio, None, sum(draw.values()), on_battery=on_battery, low_battery=low_battery
            )
            for u in site.ups
        },
        service_draw_w=draw,
        outlet_on={o: True for s in site.services for o in s.outlets},
    )


def _learnt_decider() -> SiteDecider:
    """A rack decider after ten minutes on mains."""
    decider = SiteDecider(SITE)
    for t in range(0, 600, 10):
        decider.decide(readings(float(t)))
    return decider


def test_one_on_battery_reading_starts_no_outage() -> None:
    decider = _learnt_decider()
    cycle = decider.decide(readings(600.0, on_battery=True))
    assert decider.state.outage_started_s is None
    assert any(f.kind == "reading_unconfirmed" for f in cycle.step.faults)
    cycle = decider.decide(readings(610.0))
    assert decider.state.outage_started_s is None
    assert not cycle.step.commands


def test_two_on_battery_readings_in_a_row_are_an_outage() -> None:
    decider = _learnt_decider()
    decider.decide(readings(600.0, on_battery=True))
    decider.decide(readings(610.0, on_battery=True))
    assert decider.state.outage_started_s == 600.0  # it began at its first reading


def test_two_ups_units_agreeing_are_an_outage_at_once() -> None:
    two = Site(
        ups=(*SITE.ups, Ups("ups2", rated_w=800, capacity_wh=600, runtime_full_load_s=900)),
        pdus=SITE.pdus,
        services=SITE.services,
    )
    decider = SiteDecider(two)
    decider.decide(readings(0.0, site=two))
    decider.decide(readings(10.0, on_battery=True, site=two))
    assert decider.state.outage_started_s == 10.0


def test_a_forged_low_charge_alone_starts_no_final_shutdown() -> None:
    """A real outage, then one message saying 5 %: the pack cannot have lost that in 10 s."""
    decider = _learnt_decider()
    decider.decide(readings(600.0, on_battery=True, soc_ratio=0.95))
    decider.decide(readings(610.0, on_battery=True, soc_ratio=0.95))
    cycle = decider.decide(readings(620.0, on_battery=True, soc_ratio=0.05))
    assert decider.state.mode is not Mode.FINAL_SHUTDOWN
    assert decider.state.soc_ratio["ups1"] > 0.9
    assert any(f.kind == "reading_implausible" for f in cycle.step.faults)
    critical = {s.id for s in SITE.services if s.priority is Priority.CRITICAL}
    assert not any(
        isinstance(c, StopService) and c.service_id in critical for c in cycle.step.commands
    )


def test_a_low_charge_that_persists_is_believed() -> None:
    decider = _learnt_decider()
    decider.decide(readings(600.0, on_battery=True, soc_ratio=0.95))
    decider.decide(readings(610.0, on_battery=True, soc_ratio=0.95))
    for t in range(620, 700, 10):
        decider.decide(readings(float(t), on_battery=True, soc_ratio=0.05))
    assert decider.state.soc_ratio["ups1"] == 0.05


def test_the_ups_low_battery_alarm_starts_the_final_shutdown_at_once() -> None:
    """On battery, charge reading 90 % and no runtime: the UPS's own alarm is what counts."""
    decider = _learnt_decider()
    decider.decide(readings(600.0, on_battery=True, soc_ratio=0.9))
    decider.decide(readings(610.0, on_battery=True, soc_ratio=0.9))
    assert decider.state.mode is not Mode.FINAL_SHUTDOWN
    cycle = decider.decide(readings(620.0, on_battery=True, soc_ratio=0.9, low_battery=True))
    assert decider.state.mode is Mode.FINAL_SHUTDOWN
    assert any(f.kind == "low_battery_alarm" for f in cycle.step.faults)
    # Dependents first (I1): what nothing depends on is asked to stop now.
    assert {c.service_id for c in cycle.step.commands if isinstance(c, StopService)} == {
        "web",
        "batch",
    }


def test_a_low_battery_flag_on_mains_stops_nothing() -> None:
    """`OL LB`: a pack recharging after an outage, as upsmon reads it, is no alarm."""
    decider = _learnt_decider()
    cycle = decider.decide(readings(600.0, low_battery=True, soc_ratio=0.3))
    assert decider.state.mode is Mode.NORMAL
    assert not cycle.step.commands


@given(st.lists(st.sampled_from([True, False, None]), max_size=40))
def test_mains_is_believed_off_only_on_two_readings_and_back_at_once(
    sequence: list[bool | None],
) -> None:
    belief = MainsBelief()
    seen: list[bool] = []
    for read in sequence:
        ups = {} if read is None else {"ups1": UpsReading(None, None, None, on_battery=not read)}
        belief, fault = belief.observe(Readings(0.0, read, ups, {}, {}))
        if read is not None:
            seen.append(read)
        if read is True:
            assert belief.believed is True
        if belief.believed is False:
            # Off only where the last two readings said so (a gap in between breaks nothing).
            assert seen[-2:] == [False, False]
        if read is False and belief.believed is not False:
            assert fault is not None
            assert fault.kind == "reading_unconfirmed"


def _switched_off_by_someone(decider: SiteDecider, now_s: float, service_id: str) -> Readings:
    """The rack's readings with `service_id`'s outlets off and dark, as after a forged command
    or a hand on the PDU."""
    base = readings(now_s, agent_w={service_id: 0.0})
    outlets = set(SITE.service_by_id[service_id].outlets)
    return replace(
        base,
        outlet_on={o: o not in outlets for o in base.outlet_on},
        outlet_w=dict.fromkeys(outlets, 0.0),
    )


def test_a_service_found_off_is_reported_held_off_and_its_dependents_stopped() -> None:
    decider = _learnt_decider()
    first = decider.decide(_switched_off_by_someone(decider, 600.0, "db"))
    assert not first.step.commands  # one reading: not yet
    cycle = decider.decide(_switched_off_by_someone(decider, 610.0, "db"))
    assert any(f.kind == "found_stopped" and f.service_id == "db" for f in cycle.step.faults)
    assert "db" in decider.state.held_off
    assert "db" in decider.state.found_off
    # What needs it stops cleanly (I1); it is not started behind whoever stopped it.
    assert [c.service_id for c in cycle.step.commands if isinstance(c, StopService)] == ["web"]
    for t in range(620, 1200, 10):
        cycle = decider.decide(_switched_off_by_someone(decider, float(t), "db"))
        assert not any(
            isinstance(c, StartService) and c.service_id == "db" for c in cycle.step.commands
        )
    # An administrator's release starts it again.
    decider.hold("db", None)
    started = [
        c.service_id
        for t in range(1200, 1400, 10)
        for c in decider.decide(_switched_off_by_someone(decider, float(t), "db")).step.commands
        if isinstance(c, StartService)
    ]
    assert "db" in started


def test_one_reading_of_a_draw_far_above_the_last_is_held_back() -> None:
    """An agent (or anyone publishing as it) says the 30-W network switch draws 1,900 W, once,
    during an outage: nothing is stopped for it; a second reading in a row is believed."""
    decider = _learnt_decider()
    decider.decide(readings(600.0, on_battery=True))
    decider.decide(readings(610.0, on_battery=True))
    before = {sid for sid, c in decider.state.services.items() if c.phase is not Phase.ON}
    cycle = decider.decide(readings(620.0, on_battery=True, agent_w={"network": 1900.0}))
    assert any(
        f.kind == "reading_implausible" and f.service_id == "network" for f in cycle.step.faults
    )
    assert decider.state.mode is not Mode.FINAL_SHUTDOWN
    after = {sid for sid, c in decider.state.services.items() if c.phase is not Phase.ON}
    assert after == before
    decider.decide(readings(630.0, on_battery=True, agent_w={"network": 1900.0}))
    assert decider.draws.believed_w["network"] == 1900.0
