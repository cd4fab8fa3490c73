"""Every action of the integration against the simulated site over Modbus TCP.

Each action is called through Home Assistant's service registry, as an automation calls it, and
its effect is checked where it happens: in the simulator's outlets, in the controller's state
and in the entities. Time is driven by the test: `SiteRun.cycle` (tests/site_entry.py) advances the
simulated site 10 s and runs the coordinator once, on a clock that follows the site's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import voluptuous as vol
import yaml  # type: ignore[import-untyped]
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import Context, HomeAssistant, ServiceCall
from homeassistant.exceptions import ServiceValidationError, Unauthorized
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockUser,
    async_capture_events,
)
from syrupy.assertion import SnapshotAssertion

from custom_components.power_allocation.const import DOMAIN, EVENT_DECISION
from custom_components.power_allocation.drivers.bounded_yaml import (
    MAX_DEPTH,
    MAX_EXPANDED_SIZE,
    MAX_TEXT_CHARS,
)
from custom_components.power_allocation.engine.controller import Mode
from tests.drivers.test_bounded_yaml import anchor_bomb
from tests.fixtures.modbus_site import ModbusSite
from tests.site_entry import (
    BATCH_OUTLET,
    CRITICAL_OUTLETS,
    CYCLE_S,
    EPOCH_S,
    SiteRun,
    site_clock,
    small_site_entry,
)


@pytest.fixture
async def run(
    hass: HomeAssistant, modbus_site: ModbusSite, small_site_clock: None
) -> AsyncIterator[SiteRun]:
    """The small site, set up and three cycles into a normal day on mains."""
    site_run = SiteRun.small(hass, modbus_site)
    await site_run.set_up()
    await site_run.cycle(3)
    yield site_run
    if site_run.entry.state is ConfigEntryState.LOADED:
        await site_run.unload()


# --- allocate -------------------------------------------------------------------------------


async def test_allocate_dry_run_decides_without_a_cycle(
    run: SiteRun, snapshot: SnapshotAssertion
) -> None:
    before_s = run.coordinator.data.now_s
    run.simulated.advance(CYCLE_S)
    response = await run.call("allocate", dry_run=True)
    assert response == snapshot
    assert set(response["decisions"]) == {"network", "db", "batch"}
    assert all(d["reason"] for d in response["decisions"].values())
    assert run.coordinator.data.now_s == before_s, "a dry run must not run a cycle"


async def test_allocate_runs_a_cycle_and_reports_holds(run: SiteRun) -> None:
    run.simulated.advance(CYCLE_S)
    await run.call("allocate", dry_run=False)
    assert run.coordinator.data.now_s == EPOCH_S + run.simulated.time_s
    await run.call("shed_service", service="batch")
    response = await run.call("allocate")
    batch = response["decisions"]["batch"]
    assert batch["state"] == "off"
    assert batch["draw_w"] == 0
    assert "held" in batch["reason"]
    assert response["decisions"]["db"]["state"] == "on"


# --- simulate_outage ------------------------------------------------------------------------


async def test_simulate_short_outage_sheds_nothing(
    run: SiteRun, snapshot: SnapshotAssertion
) -> None:
    response = await run.call("simulate_outage", duration=2)
    assert response == snapshot
    assert response["timeline"] == []
    assert response["shut_down"] == []
    assert response["survives"] == ["batch", "db", "network"]
    assert response["final_shutdown_at_s"] is None
    assert response["tier_runtime_s"] == {"critical": 120.0, "low": 120.0}
    assert run.coordinator.data.mode is Mode.NORMAL, "a simulation changes nothing"


async def test_simulate_long_outage_sheds_low_first_then_shuts_down(
    run: SiteRun, snapshot: SnapshotAssertion
) -> None:
    response = await run.call("simulate_outage", duration=60)
    assert response == snapshot
    at_s = {step["service"]: step["at_s"] for step in response["timeline"]}
    assert at_s["batch"] < at_s["db"] == at_s["network"] == response["final_shutdown_at_s"]
    assert response["tier_runtime_s"]["low"] == at_s["batch"]
    assert response["tier_runtime_s"]["critical"] == response["final_shutdown_at_s"]
    assert response["survives"] == []
    final = [s for s in response["timeline"] if s["service"] in ("db", "network")]
    assert all("final shutdown" in s["reason"] for s in final)
    assert all(run.outlet_on(o) for o in (*CRITICAL_OUTLETS, BATCH_OUTLET))


@pytest.mark.parametrize("minutes", [0, 0.05, 7 * 24 * 60 + 1, "long"])
async def test_simulate_outage_duration_out_of_range(run: SiteRun, minutes: object) -> None:
    with pytest.raises(vol.Invalid):
        await run.call("simulate_outage", duration=minutes)


# --- shed / restore / hold / release --------------------------------------------------------


async def test_shed_switches_the_outlet_off_after_shutdown_s_and_restore_brings_it_back(
    run: SiteRun,
) -> None:
    await run.call("shed_service", service="batch")
    # Graceful first: the outlet stays on for the service's shutdown_s (10 s, one cycle).
    assert run.state("sensor.rack_a_batch_allocation") == "stopping"
    assert run.outlet_on(BATCH_OUTLET)
    await run.cycle()
    assert not run.outlet_on(BATCH_OUTLET)
    await run.cycle()
    assert run.state("switch.rack_a_pdu_b_outlet_3") == "off"
    assert run.state("sensor.rack_a_batch_allocation") == "off"
    assert run.state("select.rack_a_batch_hold") == "held_off"
    await run.cycle(3)
    assert not run.outlet_on(BATCH_OUTLET), "held off stays off"

    await run.call("restore_service", service="batch")
    assert run.outlet_on(BATCH_OUTLET)
    await run.cycle(2)
    assert run.state("sensor.rack_a_batch_allocation") == "on"
    assert run.state("switch.rack_a_pdu_b_outlet_3") == "on"
    assert run.state("select.rack_a_batch_hold") == "auto"
    assert all(run.outlet_on(o) for o in CRITICAL_OUTLETS)


async def test_hold_on_keeps_a_low_service_through_an_outage_until_released(
    run: SiteRun,
) -> None:
    await run.call("hold_service", service="batch", state="on")
    run.simulated.set_mains(False)
    await run.cycle(30)
    assert run.coordinator.data.on_battery
    assert run.outlet_on(BATCH_OUTLET), "held on (I8): the controller must not shed it"
    assert run.coordinator.data.services["batch"].held is True

    await run.call("release_service", service="batch")
    assert run.coordinator.data.services["batch"].held is None
    await run.cycle_until(lambda: not run.outlet_on(BATCH_OUTLET))
    await run.cycle()
    assert run.coordinator.data.mode is Mode.CRITICAL_ONLY
    assert all(run.outlet_on(o) for o in CRITICAL_OUTLETS)


async def test_hold_off_a_critical_service_and_its_dependents(run: SiteRun) -> None:
    await run.call("hold_service", service="network", state="off")
    # db needs network: it goes off too, and before it (I1), on mains as on battery.
    db_off = await run.cycle_until(lambda: not run.outlet_on("pdu-a/2"))
    assert not run.outlet_on("pdu-b/2")
    assert run.outlet_on("pdu-a/1")
    network_off = db_off + await run.cycle_until(lambda: not run.outlet_on("pdu-a/1"))
    assert network_off > db_off
    await run.cycle(3)
    assert not run.outlet_on("pdu-a/2"), "a dependent stays off while what it needs is off"
    assert run.outlet_on(BATCH_OUTLET)


async def test_set_priority_changes_who_is_shed(run: SiteRun) -> None:
    await run.call("set_priority", service="batch", priority="critical")
    assert run.state("select.rack_a_batch_priority") == "critical"
    run.simulated.set_mains(False)
    await run.cycle(30)
    assert run.coordinator.data.on_battery
    assert run.outlet_on(BATCH_OUTLET), "a critical service is not shed on battery"

    await run.call("set_priority", service="batch", priority="low")
    await run.cycle_until(lambda: not run.outlet_on(BATCH_OUTLET))
    assert run.state("select.rack_a_batch_priority") == "low"
    assert run.coordinator.control.decider.priority_overrides == {}, "its own tier is no override"


def _entry_with_batch_actions(modbus_site: ModbusSite, **actions: Any) -> MockConfigEntry:
    """The small site, batch with the Home Assistant actions given (`stop_action`, ...)."""
    base = small_site_entry(modbus_site)
    services = [{**s, **actions} if s["id"] == "batch" else s for s in base.options["services"]]
    return MockConfigEntry(
        domain=DOMAIN,
        title=base.title,
        data=dict(base.data),
        options={"pdus": list(base.options["pdus"]), "services": services},
    )


def _host_stop(modbus_site: ModbusSite, stops: list[ServiceCall]) -> Any:
    """What a real stop action does: the host shuts down, and its draw falls to idle."""

    async def stop_host(call: ServiceCall) -> None:
        stops.append(call)
        modbus_site.site.request_shutdown("batch")

    return stop_host


STOP_BATCH_1 = {"action": "host.stop", "data": {"host": "batch-1"}}


async def _shed_batch(
    hass: HomeAssistant, modbus_site: ModbusSite, entry: MockConfigEntry
) -> SiteRun:
    """The site of `entry` set up and running, and batch just shed by hand."""
    run = SiteRun.small(hass, modbus_site, entry)
    await run.set_up()
    await run.cycle(2)
    await run.call("shed_service", service="batch")
    return run


async def test_shed_and_restore_call_the_services_home_assistant_actions(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    entry = _entry_with_batch_actions(
        modbus_site,
        stop_action=STOP_BATCH_1,
        # Not registered: the failure is reported, and the outlet still comes back.
        start_action={"action": "host.missing", "data": {}},
    )
    stops: list[ServiceCall] = []
    hass.services.async_register("host", "stop", _host_stop(modbus_site, stops))
    decisions = async_capture_events(hass, EVENT_DECISION)
    with site_clock(modbus_site.site):
        run = await _shed_batch(hass, modbus_site, entry)
        assert [c.data for c in stops] == [{"host": "batch-1"}]
        await run.cycle_until(lambda: not run.outlet_on(BATCH_OUTLET))
        assert [(d.data["action"], d.data["ok"]) for d in decisions] == [
            ("stop", True),
            ("outlets_off", True),
        ]

        await run.call("restore_service", service="batch")
        await run.cycle_until(lambda: run.outlet_on(BATCH_OUTLET))
        start = decisions[-1].data
        assert (start["service"], start["action"], start["ok"]) == ("batch", "start", False)
        assert start["error"].startswith("host.missing: ")
        await run.unload()


async def test_a_stop_that_could_not_be_delivered_is_asked_again_next_cycle(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    """The stop action is missing when the shed comes (a script renamed, an integration still
    loading): the failure is reported, the next cycle asks again, and once the action is there
    the host stops and its outlet goes off."""
    entry = _entry_with_batch_actions(modbus_site, stop_action=STOP_BATCH_1)
    stops: list[ServiceCall] = []
    decisions = async_capture_events(hass, EVENT_DECISION)
    with site_clock(modbus_site.site):
        run = await _shed_batch(hass, modbus_site, entry)
        (failed,) = [d.data for d in decisions]
        assert (failed["action"], failed["ok"]) == ("stop", False)
        assert failed["error"].startswith("host.stop: ")
        hass.services.async_register("host", "stop", _host_stop(modbus_site, stops))
        await run.cycle()
        again = decisions[-1].data
        assert (again["action"], again["ok"]) == ("stop", True)
        assert again["reason"].startswith("retrying a stop that could not be delivered")
        assert [c.data for c in stops] == [{"host": "batch-1"}]
        await run.cycle_until(lambda: not run.outlet_on(BATCH_OUTLET))
        assert [d.data["action"] for d in decisions] == ["stop", "stop", "outlets_off"]
        await run.unload()


async def test_restore_all_releases_every_hold(run: SiteRun) -> None:
    await run.call("shed_service", service="batch")
    await run.call("hold_service", service="db", state="on")
    await run.cycle(2)
    assert not run.outlet_on(BATCH_OUTLET)

    await run.call("restore_all")
    await run.cycle(2)
    assert run.outlet_on(BATCH_OUTLET)
    assert {s.held for s in run.coordinator.data.services.values()} == {None}


# --- bad input ------------------------------------------------------------------------------


async def test_hold_conflict_is_refused_and_changes_nothing(run: SiteRun) -> None:
    await run.call("hold_service", service="network", state="off")
    with pytest.raises(ServiceValidationError) as raised:
        await run.call("hold_service", service="db", state="on")
    assert raised.value.translation_key == "hold_conflict"
    message = raised.value.translation_placeholders["error"]
    assert "holding db on contradicts the holds on" in message
    assert "network" in message
    assert run.coordinator.control.decider.state.held_on == frozenset()
    assert run.coordinator.control.decider.state.held_off == frozenset({"network"})


@pytest.mark.parametrize(
    ("action", "data"),
    [
        ("shed_service", {}),
        ("restore_service", {}),
        ("release_service", {}),
        ("hold_service", {"state": "on"}),
        ("set_priority", {"priority": "high"}),
    ],
)
async def test_unknown_service_lists_the_known_ones(
    run: SiteRun, action: str, data: dict[str, Any]
) -> None:
    with pytest.raises(ServiceValidationError) as raised:
        await run.call(action, service="mail", **data)
    assert raised.value.translation_key == "unknown_service"
    assert raised.value.translation_placeholders == {
        "service": "mail",
        "services": "network, db, batch",
    }
    assert str(raised.value) == "There is no service mail; the site has: network, db, batch"


@pytest.mark.parametrize(
    ("action", "data"),
    [
        ("hold_service", {"service": "batch", "state": "maybe"}),
        ("hold_service", {"service": "batch"}),
        ("set_priority", {"service": "batch", "priority": "urgent"}),
        ("shed_service", {}),
        ("load_topology", {}),
    ],
)
async def test_malformed_calls_are_refused_by_the_schema(
    run: SiteRun, action: str, data: dict[str, Any]
) -> None:
    with pytest.raises(vol.Invalid):
        await run.call(action, **data)
    assert run.coordinator.control.decider.state.held_off == frozenset()


async def test_unknown_config_entry(hass: HomeAssistant, run: SiteRun) -> None:
    other = MockConfigEntry(domain="mqtt", title="Not a site")
    other.add_to_hass(hass)
    for entry_id in ("no-such-entry", other.entry_id):
        with pytest.raises(ServiceValidationError) as raised:
            await hass.services.async_call(
                DOMAIN, "restore_all", {"config_entry_id": entry_id}, blocking=True
            )
        assert raised.value.translation_key == "unknown_site"
        assert entry_id in str(raised.value)


async def test_site_not_loaded(run: SiteRun) -> None:
    await run.unload()
    with pytest.raises(ServiceValidationError) as raised:
        await run.call("allocate", dry_run=True)
    assert raised.value.translation_key == "site_not_loaded"
    assert str(raised.value) == "The site Rack A is not loaded"


# --- load_topology --------------------------------------------------------------------------


def _topology_yaml(run: SiteRun, services: list[dict[str, Any]]) -> str:
    return yaml.safe_dump({"pdus": list(run.entry.options["pdus"]), "services": services})


async def test_load_topology_reloads_the_entry_with_the_new_services(
    hass: HomeAssistant, run: SiteRun
) -> None:
    old = run.coordinator
    services = [dict(s) for s in run.entry.options["services"] if s["id"] != "batch"] + [
        {"id": "web", "priority": "medium", "outlets": ["pdu-a/3"], "depends_on": ["db"]}
    ]
    response = await run.call("load_topology", topology=_topology_yaml(run, services))
    assert response == {"ups": 1, "pdus": 2, "services": 3}
    assert run.entry.state is ConfigEntryState.LOADED
    assert run.coordinator is not old, "the entry reloaded"
    assert list(run.coordinator.control.site.service_by_id) == ["network", "db", "web"]
    assert [s["id"] for s in run.entry.options["services"]] == ["network", "db", "web"]
    # The UPS the YAML left out stays as configured.
    assert [u["id"] for u in run.entry.data["topology"]["ups"]] == ["ups1"]
    await run.cycle()
    assert run.state("sensor.rack_a_web_allocation") == "on"
    assert hass.states.get("sensor.rack_a_batch_allocation") is None


@pytest.mark.parametrize(
    ("topology", "problem"),
    [
        ("services: [unclosed", "not valid YAML"),
        ("- just\n- a list", "a topology must be a mapping"),
        (None, "services[0] (db).colour: extra keys not allowed"),
        (None, "dependency cycle"),
        (None, "unknown outlet 'pdu-z/1'"),
        ("ups: []\n", "a site needs at least one UPS"),
    ],
    ids=["yaml", "not-a-mapping", "unknown-key", "cycle", "unknown-outlet", "no-ups"],
)
async def test_load_topology_refuses_a_bad_document_and_keeps_the_entry(
    run: SiteRun, topology: str | None, problem: str, request: pytest.FixtureRequest
) -> None:
    services = [dict(s) for s in run.entry.options["services"]]
    match request.node.callspec.id:
        case "unknown-key":
            services = [{**services[1], "colour": "red"}]
        case "cycle":
            services[0]["depends_on"] = ["db"]
        case "unknown-outlet":
            services[2]["outlets"] = ["pdu-z/1"]
    text = topology if topology is not None else _topology_yaml(run, services)
    data, options, coordinator = dict(run.entry.data), dict(run.entry.options), run.coordinator
    with pytest.raises(ServiceValidationError) as raised:
        await run.call("load_topology", topology=text)
    assert raised.value.translation_key == "invalid_topology"
    assert problem in raised.value.translation_placeholders["error"]
    assert str(raised.value).startswith("The topology is not valid: ")
    assert dict(run.entry.data) == data
    assert dict(run.entry.options) == options
    assert run.entry.state is ConfigEntryState.LOADED
    assert run.coordinator is coordinator


async def test_load_topology_sets_the_planner_and_keeps_it_when_left_out(run: SiteRun) -> None:
    services = [dict(s) for s in run.entry.options["services"]]
    text = _topology_yaml(run, services)
    await run.call("load_topology", topology=text + "planner: {ride_through_s: 600}\n")
    assert run.entry.options["planner"] == {"ride_through_s": 600.0}
    assert run.coordinator.control.topology.ride_through_s == 600.0
    await run.call("load_topology", topology=text)
    assert run.entry.options["planner"] == {"ride_through_s": 600.0}
    assert run.coordinator.control.topology.ride_through_s == 600.0


async def test_load_topology_keeps_the_configured_broker(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    broker = {"host": "127.0.0.1", "port": 1883, "base_topic": "rack"}
    with site_clock(modbus_site.site):
        run = SiteRun.small(hass, modbus_site, small_site_entry(modbus_site, mqtt=broker))
        await run.set_up()
        services = [dict(s) for s in run.entry.options["services"]]
        response = await run.call("load_topology", topology=_topology_yaml(run, services))
        assert response == {"ups": 1, "pdus": 2, "services": 3}
        assert run.entry.data["topology"]["mqtt"] == {**broker, "tls": False}
        assert run.entry.state is ConfigEntryState.LOADED
        await run.unload()


async def test_load_topology_refuses_an_anchor_bomb_before_storing_anything(run: SiteRun) -> None:
    # 3 KB of YAML in a stop action's data grew the stored entry from 3.6 KB to 46.9 MB.
    services = [dict(s) for s in run.entry.options["services"]]
    text = _topology_yaml(run, services) + "bomb:\n" + anchor_bomb(indent="  ")
    data, options = dict(run.entry.data), dict(run.entry.options)
    with pytest.raises(ServiceValidationError) as raised:
        await run.call("load_topology", topology=text)
    assert raised.value.translation_key == "invalid_topology"
    assert f"larger than {MAX_EXPANDED_SIZE} characters" in str(raised.value)
    assert (dict(run.entry.data), dict(run.entry.options)) == (data, options)


async def test_load_topology_refuses_deep_nesting_with_a_message_not_a_crash(run: SiteRun) -> None:
    text = "services: " + "[" * 20_000 + "]" * 20_000
    with pytest.raises(ServiceValidationError, match=f"deeper than {MAX_DEPTH} levels"):
        await run.call("load_topology", topology=text)
    assert run.entry.state is ConfigEntryState.LOADED


async def test_load_topology_refuses_text_longer_than_the_bound(run: SiteRun) -> None:
    with pytest.raises(vol.Invalid, match=f"at most {MAX_TEXT_CHARS}"):
        await run.call("load_topology", topology="#" * (MAX_TEXT_CHARS + 1))


async def test_load_topology_checks_the_sources_as_setup_does(run: SiteRun) -> None:
    # The schema takes a NUT source without its prefix; setup then refused the site.
    ups = dict(run.entry.data["topology"]["ups"][0])
    ups["source"] = {"kind": "mqtt", "profile": "nut"}
    text = yaml.safe_dump(
        {
            "mqtt": {"host": "127.0.0.1", "port": 1883},
            "ups": [ups],
            "pdus": list(run.entry.options["pdus"]),
            "services": [dict(s) for s in run.entry.options["services"]],
        }
    )
    data, coordinator = dict(run.entry.data), run.coordinator
    with pytest.raises(ServiceValidationError) as raised:
        await run.call("load_topology", topology=text)
    assert raised.value.translation_key == "invalid_topology"
    assert "nut ups1: variable 'prefix' is required" in str(raised.value)
    assert dict(run.entry.data) == data
    assert run.coordinator is coordinator, "nothing stored, nothing reloaded"


# --- who may call what ----------------------------------------------------------------------

# Every action that changes what runs or the site, with a valid call.
ADMIN_ACTIONS: list[tuple[str, dict[str, Any]]] = [
    ("shed_service", {"service": "batch"}),
    ("restore_service", {"service": "batch"}),
    ("hold_service", {"service": "batch", "state": "off"}),
    ("release_service", {"service": "batch"}),
    ("set_priority", {"service": "batch", "priority": "critical"}),
    ("restore_all", {}),
    ("load_topology", {"topology": "services: []"}),
]


@pytest.mark.parametrize(("action", "data"), ADMIN_ACTIONS, ids=[a for a, _ in ADMIN_ACTIONS])
async def test_a_user_who_is_not_an_administrator_cannot_change_what_runs(
    hass: HomeAssistant,
    run: SiteRun,
    hass_read_only_user: MockUser,
    action: str,
    data: dict[str, Any],
) -> None:
    assert not hass_read_only_user.is_admin
    await run.call("hold_service", service="db", state="on")
    decider = run.coordinator.control.decider
    before = (decider.state.held_on, decider.state.held_off, dict(decider.priority_overrides))
    options, coordinator = dict(run.entry.options), run.coordinator
    with pytest.raises(Unauthorized):
        await hass.services.async_call(
            DOMAIN,
            action,
            {"config_entry_id": run.entry.entry_id, **data},
            blocking=True,
            context=Context(user_id=hass_read_only_user.id),
        )
    await hass.async_block_till_done()
    assert run.coordinator is coordinator
    assert (decider.state.held_on, decider.state.held_off, dict(decider.priority_overrides)) == (
        before
    )
    assert dict(run.entry.options) == options


@pytest.mark.parametrize(
    ("action", "data"), ADMIN_ACTIONS[:-1], ids=[a for a, _ in ADMIN_ACTIONS[:-1]]
)
async def test_an_administrator_may_change_what_runs(
    hass: HomeAssistant,
    run: SiteRun,
    hass_admin_user: MockUser,
    action: str,
    data: dict[str, Any],
) -> None:
    await hass.services.async_call(
        DOMAIN,
        action,
        {"config_entry_id": run.entry.entry_id, **data},
        blocking=True,
        context=Context(user_id=hass_admin_user.id),
    )


async def test_an_administrator_may_load_a_topology_and_gets_its_summary(
    hass: HomeAssistant, run: SiteRun, hass_admin_user: MockUser
) -> None:
    response = await hass.services.async_call(
        DOMAIN,
        "load_topology",
        {
            "config_entry_id": run.entry.entry_id,
            "topology": _topology_yaml(run, [dict(s) for s in run.entry.options["services"]]),
        },
        blocking=True,
        context=Context(user_id=hass_admin_user.id),
        return_response=True,
    )
    assert response == {"ups": 1, "pdus": 2, "services": 3}


@pytest.mark.parametrize(
    ("action", "data"), [("allocate", {"dry_run": True}), ("simulate_outage", {"duration": 5})]
)
async def test_what_only_reads_is_open_to_every_user(
    hass: HomeAssistant,
    run: SiteRun,
    hass_read_only_user: MockUser,
    action: str,
    data: dict[str, Any],
) -> None:
    response = await hass.services.async_call(
        DOMAIN,
        action,
        {"config_entry_id": run.entry.entry_id, **data},
        blocking=True,
        context=Context(user_id=hass_read_only_user.id),
        return_response=True,
    )
    assert response
