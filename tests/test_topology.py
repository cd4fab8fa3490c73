"""`parse_topology`: a valid site document, and for every kind of mistake a message naming the
item to fix; `load_yaml_document` for the bulk import."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest

from custom_components.power_allocation.drivers.bounded_yaml import MAX_DEPTH, MAX_EXPANDED_SIZE
from custom_components.power_allocation.engine.model import Priority, TopologyError
from custom_components.power_allocation.engine.outage import OutagePrior
from custom_components.power_allocation.engine.planner import RIDE_THROUGH_S
from custom_components.power_allocation.topology import (
    HaAction,
    ServiceControls,
    load_yaml_document,
    parse_topology,
)
from tests.drivers.test_bounded_yaml import anchor_bomb

DOCUMENT: dict[str, Any] = {
    "name": "Rack A",
    "mqtt": {"host": "broker.lan", "username": "pa", "password": "pw"},
    "ups": [
        {
            "id": "ups1",
            "rated_w": 1000,
            "capacity_wh": 500,
            "runtime_full_load_s": 300,
            "peukert_k": 1.2,
            "source": {"kind": "modbus", "host": "10.0.0.5"},
        }
    ],
    "pdus": [
        {
            "id": "pdu-a",
            "ups": "ups1",
            "limit_w": 1500,
            "outlets": 4,
            "outlet_limits_w": {"1": 500},
            "source": {"kind": "modbus", "host": "10.0.0.6", "port": "5020", "unit_id": 2},
        },
        {
            "id": "plugs",
            "ups": "ups1",
            "limit_w": 1000,
            "outlets": 2,
            "source": {
                "kind": "mqtt",
                "profile": "tasmota",
                "outlets": {"1": {"topic": "plug1"}, "2": {"topic": "plug2"}},
            },
        },
        {
            "id": "ha",
            "ups": "ups1",
            "limit_w": 1000,
            "outlets": 1,
            "source": {
                "kind": "entities",
                "outlets": {1: {"switch": "switch.lab", "power": "sensor.lab_power"}},
            },
        },
    ],
    "services": [
        {"id": "network", "priority": "critical", "outlets": ["pdu-a/1"]},
        {
            "id": "db",
            "priority": "high",
            "outlets": ["pdu-a/2", "pdu-a/3"],
            "depends_on": ["network"],
            "shutdown_s": 30,
            "agent": True,
            "agent_secret": "db-agent-secret-0123",
        },
        {
            "id": "lab",
            "priority": "low",
            "outlets": ["ha/1"],
            "throttle": {"min_w": 50},
            "stop_action": {"action": "script.stop_lab"},
            "throttle_action": {"action": "script.cap_lab", "data": {"host": "lab"}},
            "start_action": {"action": "script.start_lab"},
        },
        {"id": "media", "priority": "medium", "outlets": ["plugs/1"], "depends_on": ["network"]},
    ],
}


def test_a_valid_document() -> None:
    topology = parse_topology(DOCUMENT)
    site = topology.site
    assert [u.id for u in site.ups] == ["ups1"]
    assert [p.id for p in site.pdus] == ["pdu-a", "plugs", "ha"]
    assert site.service_by_id["db"].priority is Priority.HIGH
    assert site.service_by_id["db"].depends_on == ("network",)
    assert site.service_by_outlet["pdu-a/3"] == "db"
    assert site.outlet_by_id["pdu-a/1"].limit_w == 500
    assert topology.mqtt == {
        "host": "broker.lan",
        "port": 1883,
        "username": "pa",
        "password": "pw",
        "tls": False,
        "base_topic": "power_allocation",
    }
    # Defaults filled in, strings coerced.
    assert topology.ups_sources["ups1"] == {
        "kind": "modbus",
        "host": "10.0.0.5",
        "port": 502,
        "unit_id": 1,
        "profile": "apc_smart_ups",
        "timeout_s": 1.0,
    }
    assert topology.pdu_sources["pdu-a"]["port"] == 5020
    assert topology.pdu_sources["plugs"]["outlets"] == {
        1: {"topic": "plug1"},
        2: {"topic": "plug2"},
    }
    assert topology.controls == {
        "network": ServiceControls(),
        "db": ServiceControls(agent=True, agent_secret="db-agent-secret-0123"),
        "lab": ServiceControls(
            stop=HaAction("script", "stop_lab", {}),
            throttle=HaAction("script", "cap_lab", {"host": "lab"}),
            start=HaAction("script", "start_lab", {}),
        ),
        "media": ServiceControls(),
    }
    assert topology.document["services"][0]["depends_on"] == []
    # What is stored parses again to the same site.
    again = parse_topology(topology.document).site
    assert (again.ups, again.pdus, again.services) == (site.ups, site.pdus, site.services)


def _broken(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    document = copy.deepcopy(DOCUMENT)
    change(document)
    return document


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set `services.1.priority`-style paths."""

    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("services.1.priority", "urgent"), "services[1] (db).priority: value must be one of"),
        (_set("services.0.outlets", ["pdu-a/9"]), "service 'network': unknown outlet 'pdu-a/9'"),
        (_set("services.0.outlets", ["nowhere/1"]), "service 'network': unknown outlet"),
        (
            _set("services.0.depends_on", ["media"]),
            "dependency cycle: ",
        ),
        (
            _set("services.2.stop_action", {"action": "not an action"}),
            "services[2] (lab).stop_action.action",
        ),
        (
            _set("services.3.outlets", []),
            "services[3] (media).outlets: length of value must be at least 1",
        ),
        (_set("services.0.color", "red"), "services[0] (network).color: extra keys not allowed"),
        (_set("ups.0.rated_w", -5), "ups[0] (ups1).rated_w: value must be at least 0"),
        (_set("ups.0.voltage", 230), "ups[0] (ups1).voltage: extra keys not allowed"),
        (
            _set("ups.0.source", {"kind": "snmp", "host": "x"}),
            "ups[0] (ups1).source.kind: kind must be one of modbus, mqtt, entities",
        ),
        (_set("ups.0.source", "modbus"), "ups[0] (ups1).source.kind: kind must be one of"),
        (
            _set("ups.0.source.profile", "eaton"),
            "ups[0] (ups1).source.profile: value must be one of",
        ),
        (
            _set("ups.0.source.port", 70000),
            "ups[0] (ups1).source.port: value must be at most 65535",
        ),
        (
            _set("ups.0.source.community", "public"),
            "ups[0] (ups1).source.community: extra keys not allowed",
        ),
        (
            _set(
                "ups.0.source",
                {"kind": "entities", "status": "sensor.s", "on_battery": "binary_sensor.b"},
            ),
            "ups[0] (ups1).source.<mains>: give on_battery or status, not both",
        ),
        (
            _set("ups.0.source", {"kind": "entities", "charge": "sensor.ups_charge"}),
            "ups[0] (ups1).source: needs on_battery or status",
        ),
        (
            _set("ups.0.source", {"kind": "entities", "status": "Sensor Status"}),
            "ups[0] (ups1).source.status: not an entity id",
        ),
        (_set("pdus.0.ups", "ups9"), "PDU 'pdu-a': unknown UPS 'ups9'"),
        (_set("pdus.0.outlets", 200), "pdus[0] (pdu-a).outlets: value must be at most 96"),
        (
            _set("pdus.1.source.outlets", {"1": {"topic": "a"}, "3": {"topic": "c"}}),
            "PDU 'plugs': source names outlet(s) [3] beyond its 2 outlets",
        ),
        (
            _set("pdus.2.source.outlets", {2: {"switch": "switch.x"}}),
            "PDU 'ha': source names outlet(s) [2] beyond its 1 outlets",
        ),
        (
            _set("pdus.1.source.profile", "zigbee"),
            "pdus[1] (plugs).source.profile: value must be one of",
        ),
        (_set("pdus.0.id", "pdu a"), "pdus[0] (pdu a).id: letters, digits, _ . - only"),
        (_set("mqtt.base_topic", "site/#"), "mqtt.base_topic: must not contain + # or NUL"),
        (_set("mqtt.port", 0), "mqtt.port: value must be at least 1"),
        (_set("mqtt.tls", "yes"), "mqtt.tls: expected bool"),
        (_set("site", "x"), "site: extra keys not allowed"),
        (
            _set("planner", {"ride_through_s": 7200}),
            "planner.ride_through_s: value must be at most 3600",
        ),
        (
            _set("planner", {"ride_through_s": -5}),
            "planner.ride_through_s: value must be at least 0",
        ),
        (
            _set("planner", {"ride_through_s": "soon"}),
            "planner.ride_through_s: expected float",
        ),
        (
            _set("planner", {"ride_through_s": 60, "delay_s": 5}),
            "planner.delay_s: extra keys not allowed",
        ),
        (
            _set("planner", {"sustained_median_s": 60}),
            "planner.sustained_median_s: value must be at least 300",
        ),
        (
            _set("planner", {"momentary_ratio": -0.1}),
            "planner.momentary_ratio: value must be at least 0",
        ),
        (
            _set("planner", {"sustained_sigma": 9}),
            "planner.sustained_sigma: value must be at most 3",
        ),
    ],
)
def test_every_error_names_the_item(change: Callable[[dict[str, Any]], Any], message: str) -> None:
    with pytest.raises(TopologyError) as error:
        parse_topology(_broken(change))
    assert str(error.value).startswith(message), str(error.value)


def test_the_ride_through_is_the_sites_own_or_the_planners_default() -> None:
    assert parse_topology(DOCUMENT).ride_through_s == RIDE_THROUGH_S
    topology = parse_topology({**DOCUMENT, "planner": {"ride_through_s": "600"}})
    assert topology.ride_through_s == 600.0
    assert topology.document["planner"] == {"ride_through_s": 600.0}
    assert parse_topology({**DOCUMENT, "planner": {"ride_through_s": 0}}).ride_through_s == 0.0


def test_the_outage_prior_is_the_sites_own_where_it_says_so() -> None:
    assert parse_topology(DOCUMENT).outage_prior == OutagePrior()
    topology = parse_topology({**DOCUMENT, "planner": {"sustained_median_s": "900"}})
    assert topology.outage_prior == OutagePrior(sustained_median_s=900.0)
    assert topology.ride_through_s == RIDE_THROUGH_S
    every = {"momentary_ratio": 0.5, "sustained_median_s": 7200, "sustained_sigma": 1.5}
    assert parse_topology({**DOCUMENT, "planner": every}).outage_prior == OutagePrior(
        momentary_ratio=0.5, sustained_median_s=7200.0, sustained_sigma=1.5
    )


def test_a_cycle_lists_its_services() -> None:
    with pytest.raises(TopologyError) as error:
        parse_topology(_broken(_set("services.0.depends_on", ["media"])))
    cycle = str(error.value).removeprefix("dependency cycle: ").split(" -> ")
    assert set(cycle) == {"network", "media"}
    assert cycle[0] == cycle[-1]


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("mqtt"),  # an MQTT PDU and an agent
        _set("pdus", [DOCUMENT["pdus"][0]]),  # then the agent alone
    ],
)
def test_mqtt_without_a_broker(change: Callable[[dict[str, Any]], Any]) -> None:
    document = _broken(change)
    document.pop("mqtt", None)
    if len(document["pdus"]) == 1:
        document["services"] = [s for s in document["services"] if s["id"] in ("network", "db")]
    with pytest.raises(
        TopologyError,
        match=re.escape("mqtt: a source or an agent uses MQTT, but no broker is configured"),
    ):
        parse_topology(document)


def test_no_mqtt_needed_without_mqtt_sources_or_agents() -> None:
    document = _broken(lambda d: d.pop("mqtt"))
    document["pdus"] = [DOCUMENT["pdus"][0]]
    document["services"] = [DOCUMENT["services"][0]]
    assert parse_topology(document).mqtt is None


@pytest.mark.parametrize("document", [None, [], "ups: []", 3])
def test_not_a_mapping(document: Any) -> None:
    with pytest.raises(TopologyError, match="a topology must be a mapping"):
        parse_topology(document)


def test_yaml_document() -> None:
    text = """
ups:
  - id: ups1
    rated_w: 1000
    capacity_wh: 500
    runtime_full_load_s: 300
    source: {kind: modbus, host: 10.0.0.5}
services: []
"""
    document = load_yaml_document(text)
    assert document["ups"][0]["source"] == {"kind": "modbus", "host": "10.0.0.5"}
    assert parse_topology(document).site.ups[0].rated_w == 1000


@pytest.mark.parametrize("text", ["ups: [unclosed", "a: b: c", "key: 'open"])
def test_yaml_that_does_not_parse(text: str) -> None:
    with pytest.raises(TopologyError, match="^not valid YAML: "):
        load_yaml_document(text)


@pytest.mark.parametrize("text", ["- ups1\n- ups2", "just text", "", "42"])
def test_yaml_that_is_not_a_mapping(text: str) -> None:
    with pytest.raises(TopologyError, match="a topology must be a mapping"):
        load_yaml_document(text)


def _with_stop_action_data(data_yaml: str) -> str:
    """A valid site whose one service's stop action carries `data_yaml` (indented 8)."""
    return (
        "ups:\n"
        "  - {id: ups1, rated_w: 1000, capacity_wh: 500, runtime_full_load_s: 300,\n"
        "     source: {kind: modbus, host: 10.0.0.5}}\n"
        "services:\n"
        "  - id: lab\n"
        "    priority: low\n"
        "    outlets: [ups1/1]\n"
        "    stop_action:\n"
        "      action: script.stop_lab\n"
        "      data:\n" + data_yaml
    )


def test_an_anchor_bomb_in_an_actions_data_is_refused() -> None:
    # The report's 3 KB document grew its config entry from 3.6 KB to 46.9 MB.
    text = _with_stop_action_data(anchor_bomb(indent="        "))
    with pytest.raises(TopologyError, match=f"^refused: .* {MAX_EXPANDED_SIZE} characters"):
        load_yaml_document(text)


def test_deep_nesting_in_an_actions_data_is_refused_not_a_recursion_error() -> None:
    text = _with_stop_action_data(f"        deep: {'[' * 5000}{']' * 5000}\n")
    with pytest.raises(TopologyError, match=f"^refused: .*deeper than {MAX_DEPTH} levels"):
        load_yaml_document(text)


def test_an_action_sharing_data_through_an_anchor_is_read() -> None:
    text = _with_stop_action_data("        common: &common {delay: 5}\n        again: *common\n")
    data = load_yaml_document(text)["services"][0]["stop_action"]["data"]
    assert data == {"common": {"delay": 5}, "again": {"delay": 5}}
