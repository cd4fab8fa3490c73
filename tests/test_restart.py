"""Persistence: a restart in the middle of an outage resumes it; what was learnt survives.

Home Assistant's `Store` is the real one (the test harness keeps its files in `hass_storage`).
The entry is unloaded and set up again in the same Home Assistant, as a restart of the
integration does, while the simulated site's mains stays off.
"""

from __future__ import annotations

from typing import Any

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir

from custom_components.power_allocation.const import DOMAIN, STORAGE_VERSION
from custom_components.power_allocation.engine.controller import Mode
from custom_components.power_allocation.engine.decider import STATE_VERSION
from custom_components.power_allocation.site_control import SiteControl
from tests.fixtures.modbus_site import ModbusSite
from tests.site_entry import BATCH_OUTLET, CRITICAL_OUTLETS, CYCLE_S, SiteRun

pytestmark = pytest.mark.usefixtures("small_site_clock")


def _storage_key(run: SiteRun) -> str:
    return f"{DOMAIN}.{run.entry.entry_id}"


async def test_a_restart_mid_outage_keeps_the_shed_service_off_until_mains_returns(
    hass: HomeAssistant, modbus_site: ModbusSite, hass_storage: dict[str, Any]
) -> None:
    run = SiteRun.small(hass, modbus_site)
    await run.set_up()
    await run.cycle(3)
    modbus_site.site.set_mains(False)
    await run.cycle_until(lambda: not run.outlet_on(BATCH_OUTLET))
    await run.cycle()
    assert run.coordinator.data.mode is Mode.CRITICAL_ONLY
    before = run.coordinator.control.decider
    demand_before = before.demand.demand_w()["batch"]

    await run.unload()
    saved = hass_storage[_storage_key(run)]
    assert saved["version"] == STORAGE_VERSION
    assert saved["data"] == before.to_state(), "unloading saves the last state"

    # Mains stays off while Home Assistant restarts.
    modbus_site.site.advance(CYCLE_S)
    modbus_site.server.refresh()
    await run.set_up()
    assert run.entry.state is ConfigEntryState.LOADED
    after = run.coordinator.control.decider
    assert after is not before
    assert run.coordinator.data.mode is Mode.CRITICAL_ONLY
    assert run.coordinator.data.services["batch"].state == "off"
    assert run.state("sensor.rack_a_controller_state") == "critical_only"
    assert not run.outlet_on(BATCH_OUTLET), "the shed service must not be re-powered"
    # What was learnt survives: batch has been off since, so its demand is the learnt one,
    # not a new site's.
    assert after.demand.demand_w()["batch"] == demand_before
    assert SiteControl(run.coordinator.topology).decider.demand.demand_w()["batch"] != demand_before
    assert after.nodes.to_state().keys() == before.nodes.to_state().keys()
    assert after.state.outage_started_s == before.state.outage_started_s

    await run.cycle(3)
    assert not run.outlet_on(BATCH_OUTLET)
    assert all(run.outlet_on(o) for o in CRITICAL_OUTLETS)

    modbus_site.site.set_mains(True)
    await run.cycle_until(lambda: run.outlet_on(BATCH_OUTLET))
    await run.cycle_until(lambda: run.coordinator.data.mode is Mode.NORMAL)
    assert run.coordinator.data.services["batch"].state == "on"
    await run.unload()


@pytest.mark.parametrize(
    "stored",
    [
        {"version": 1, "key": "", "data": {"version": STATE_VERSION + 1, "controller": {}}},
        {"version": 1, "key": "", "data": {"version": STATE_VERSION, "controller": {"x": 1}}},
        {"version": 1, "key": "", "data": {"version": STATE_VERSION, "demand": {"batch": 3}}},
        {"version": STORAGE_VERSION + 1, "key": "", "data": {"version": STATE_VERSION}},
        {"version": 0, "key": "", "data": {"mode": "shedding"}},
    ],
    ids=["newer-state", "bad-controller", "bad-demand", "newer-store", "older-store"],
)
async def test_a_state_it_cannot_read_is_ignored(
    hass: HomeAssistant,
    modbus_site: ModbusSite,
    hass_storage: dict[str, Any],
    stored: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = SiteRun.small(hass, modbus_site)
    hass_storage[_storage_key(run)] = {**stored, "key": _storage_key(run)}
    await run.set_up()
    assert run.entry.state is ConfigEntryState.LOADED
    assert run.coordinator.data.mode is Mode.NORMAL
    store_unreadable = stored["version"] != STORAGE_VERSION
    assert ("ignoring a stored state of another version" in caplog.text) is store_unreadable
    fresh = SiteControl(run.coordinator.topology)
    assert (
        run.coordinator.control.decider.demand.to_state().keys()
        == fresh.decider.demand.to_state().keys()
    )
    await run.cycle()
    assert all(run.outlet_on(o) for o in (*CRITICAL_OUTLETS, BATCH_OUTLET))
    await run.unload()
    assert hass_storage[_storage_key(run)]["version"] == STORAGE_VERSION
    assert hass_storage[_storage_key(run)]["data"]["version"] == STATE_VERSION


async def test_what_is_shed_or_held_is_on_disk_before_the_next_cycle(
    hass: HomeAssistant, modbus_site: ModbusSite, hass_storage: dict[str, Any]
) -> None:
    """No unload here: a crash (kill -9) may come at any moment, so every cycle that changes
    what is shed, held, capped or stopping writes at once, ahead of the commands it orders."""
    run = SiteRun.small(hass, modbus_site)
    await run.set_up()
    await run.cycle(3)

    def stored_controller() -> dict[str, Any]:
        return hass_storage[_storage_key(run)]["data"]["controller"]

    modbus_site.site.set_mains(False)
    await run.cycle_until(
        lambda: run.coordinator.control.decider.state.services["batch"].phase.value != "on"
    )
    decided = run.coordinator.control.decider.state.to_dict()
    assert stored_controller()["services"]["batch"] == decided["services"]["batch"]
    assert stored_controller()["outage_started_s"] == decided["outage_started_s"]

    modbus_site.site.set_mains(True)
    await run.call("hold_service", service="batch", state="off")
    assert stored_controller()["held_off"] == ["batch"]


@pytest.mark.parametrize(
    ("part", "value"),
    [("demand", "x"), ("conservative", "no")],
    ids=["demand-not-a-mapping", "conservative-not-a-boolean"],
)
async def test_a_stored_part_of_the_wrong_shape_starts_afresh_with_a_repair_issue(
    hass: HomeAssistant,
    modbus_site: ModbusSite,
    hass_storage: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    part: str,
    value: Any,
) -> None:
    # `"demand": "x"` kept the site in setup retry for ever; `"conservative": "no"` read as on.
    run = SiteRun.small(hass, modbus_site)
    await run.set_up()
    await run.call("hold_service", service="batch", state="off")
    await run.unload()
    key = _storage_key(run)
    hass_storage[key]["data"][part] = value

    await run.set_up()
    assert run.entry.state is ConfigEntryState.LOADED
    decider = run.coordinator.control.decider
    assert decider.conservative is False
    assert decider.state.held_off == {"batch"}, "what was valid resumed"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"Rack A: the stored {part} was not valid and starts afresh" in warnings
    issue = ir.async_get(hass).async_get_issue(DOMAIN, f"stored_state_reset_{run.entry.entry_id}")
    assert issue is not None
    assert issue.translation_key == "stored_state_reset"
    assert issue.translation_placeholders == {"site": "Rack A", "reset": part}
    await run.cycle()
    await run.unload()
    assert hass_storage[key]["data"][part] != value, "the next save writes a valid one"
