"""The conservative plan: while the grid is in trouble, plan for long outages."""

from __future__ import annotations

import pytest
from homeassistant.core import HomeAssistant

from custom_components.power_allocation.engine.allocator import Demand
from custom_components.power_allocation.engine.battery import BatteryModel
from custom_components.power_allocation.engine.decider import conservative_prior
from custom_components.power_allocation.engine.outage import OutagePrior
from custom_components.power_allocation.engine.planner import plan_outage
from custom_components.power_allocation.topology import load_yaml_document, parse_topology
from tests.fixtures.modbus_site import ModbusSite
from tests.site_entry import SiteRun

SWITCH = "switch.rack_a_conservative_plan"


@pytest.mark.parametrize(
    "usual",
    [
        OutagePrior(),
        # A site of short outages, and one whose outages are already longer than the 4 h.
        OutagePrior(momentary_ratio=0.9, sustained_median_s=600.0),
        OutagePrior(momentary_ratio=0.1, sustained_median_s=8 * 3600.0, sustained_sigma=0.8),
    ],
)
def test_conservative_prior_never_plans_a_stop_later(usual: OutagePrior) -> None:
    with open("docs/demo-topology.yaml", encoding="utf-8") as file:
        site = parse_topology(load_yaml_document(file.read())).site
    demand = {s.id: Demand(60.0, 80.0) for s in site.services}
    batteries = {u.id: BatteryModel.from_ups(u) for u in site.ups}
    conservative = conservative_prior(usual)
    assert conservative.momentary_ratio <= usual.momentary_ratio
    assert conservative.sustained_median_s >= usual.sustained_median_s
    assert conservative.sustained_sigma == usual.sustained_sigma
    plans = [
        plan_outage(site, batteries, {"ups": 1.0}, demand, prior.given(0.0), ride_through_s=0)
        for prior in (usual, conservative)
    ]
    usual_at, conservative_at = (plan.stop_at_s for plan in plans)
    lower = [s.id for s in site.services if s.priority.value != "critical"]
    # The lower tiers go sooner, and what that saves keeps the critical ones up longer.
    assert all(conservative_at[sid] <= usual_at[sid] for sid in lower)
    if conservative != usual:
        assert any(conservative_at[sid] < usual_at[sid] for sid in lower)
    assert plans[1].tier_runtime_s["critical"] >= plans[0].tier_runtime_s["critical"]


async def test_switch_sets_the_prior_and_survives_in_the_state(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    run = SiteRun.small(hass, modbus_site)
    await run.set_up()
    entry = run.entry
    control = entry.runtime_data.control
    assert hass.states.get(SWITCH).state == "off"
    assert control.decider.prior is control.decider.normal_prior

    await hass.services.async_call("switch", "turn_on", {"entity_id": SWITCH}, blocking=True)
    assert hass.states.get(SWITCH).state == "on"
    assert control.decider.prior is control.decider.conservative_prior
    assert control.decider.to_state()["conservative"] is True

    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert hass.states.get(SWITCH).state == "on"
    await hass.services.async_call("switch", "turn_off", {"entity_id": SWITCH}, blocking=True)
    assert (
        entry.runtime_data.control.decider.prior is entry.runtime_data.control.decider.normal_prior
    )


async def test_plan_settings_reach_the_running_site(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    """Saving the Plan settings reloads the site, whose plan then uses the prior they set; the
    form shows the outages the site has seen."""
    run = SiteRun.small(hass, modbus_site)
    await run.set_up()
    entry = run.entry
    assert entry.runtime_data.control.decider.normal_prior == OutagePrior()
    # What the site has seen is shown beside the settings it informs.
    entry.runtime_data.control.decider.outages_s = [30.0, 600.0, 1200.0]
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "planner"}
    )
    assert result["description_placeholders"] == {
        "outages": "3",
        "momentary": "1",
        "sustained_median_min": "15",
    }
    await hass.config_entries.options.async_configure(
        result["flow_id"],
        {"ride_through_s": 60, "momentary_pct": 50, "sustained_median_min": 20},
    )
    await hass.async_block_till_done()
    control = entry.runtime_data.control
    assert control.decider.normal_prior == OutagePrior(
        momentary_ratio=0.5, sustained_median_s=1200.0
    )
    assert control.decider.prior is control.decider.normal_prior
    assert control.decider.conservative_prior == OutagePrior(
        momentary_ratio=0.2, sustained_median_s=4 * 3600.0
    )
    assert control.topology.ride_through_s == 60.0
    assert control.decider.outages_s == [30.0, 600.0, 1200.0]  # kept across the reload
