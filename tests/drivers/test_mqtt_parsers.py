"""Every MQTT profile's parser: generated payloads never raise anything but MalformedPayloadError,
and whatever it accepts is a plausible reading."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custom_components.power_allocation.drivers.interface import CommandKind
from custom_components.power_allocation.drivers.mqtt_payload import (
    AckVerdict,
    DeviceParser,
    DeviceUpdate,
    MalformedPayloadError,
    PayloadLimits,
    judge_ack,
)
from custom_components.power_allocation.drivers.mqtt_profile import (
    READINGS,
    MqttDevice,
    MqttProfile,
    ProfileError,
    Quantity,
    bind_variables,
    builtin_profiles,
    profile_from_mapping,
)

LIMITS = PayloadLimits(max_payload_bytes=2048, max_power_w=10_000)
DEVICES = {
    "tasmota": MqttDevice("tasmota", "pdu-a/1", {"topic": "plug1"}),
    "shelly_gen2": MqttDevice("shelly_gen2", "pdu-a/2", {"prefix": "shelly-a", "switch": 1}),
    "nut": MqttDevice("nut", "ups1", {"prefix": "nut/ups1"}),
    "power_allocation_outlet": MqttDevice("power_allocation_outlet", "pdu-b/1", {}),
    "power_allocation_ups": MqttDevice("power_allocation_ups", "ups2", {}),
    "power_allocation_agent": MqttDevice("power_allocation_agent", "db", {}),
}
CEILINGS = {
    Quantity.WATTS: LIMITS.max_power_w,
    Quantity.PERCENT: 100.0,
    Quantity.SECONDS: LIMITS.max_runtime_s,
    Quantity.VOLTS: LIMITS.max_voltage_v,
}


def parser_for(name: str) -> tuple[MqttProfile, DeviceParser]:
    profile = builtin_profiles()[name]
    variables = bind_variables(profile, DEVICES[name], base="pa", client_id="pa-driver")
    return profile, DeviceParser(profile, variables, LIMITS)


def test_every_builtin_profile_has_a_device_here() -> None:
    assert set(builtin_profiles()) == set(DEVICES)


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["ON", "OFF", "OL", "OB LB", "true", "online", "Online", "12.5"])
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def documents_for(parser: DeviceParser, topic: str) -> st.SearchStrategy[Any]:
    """JSON objects with the profile's paths filled with anything, plus noise keys."""
    paths = (
        [spec.path for spec in parser.messages[topic].fields] if topic in parser.messages else []
    )

    def build(values: list[Any], noise: dict[str, Any]) -> dict[str, Any]:
        document: dict[str, Any] = dict(noise)
        for path, value in zip(paths, values, strict=False):
            node = document
            for key in path[:-1]:
                child = node.get(key)
                node[key] = child = child if isinstance(child, dict) else {}
                node = child
            if path:
                node[path[-1]] = value
        return document

    return st.builds(
        build,
        st.lists(json_values, min_size=len(paths), max_size=len(paths)),
        st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    )


def encodings(parser: DeviceParser, topic: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        st.text(max_size=32).map(str.encode),
        json_values.map(lambda value: json.dumps(value).encode()),
        documents_for(parser, topic).map(lambda doc: json.dumps(doc).encode()),
        st.sampled_from([b"ON", b"OFF", b"OL CHRG", b"OB LB", b"12.5", b"-0", b"1e3", b"nan"]),
    )


def check_update(profile: MqttProfile, update: DeviceUpdate) -> None:
    quantities = READINGS[profile.feeds]
    for reading, value in update.readings.items():
        quantity = quantities[reading]
        if quantity is Quantity.SWITCH:
            assert isinstance(value, bool)
        else:
            assert not isinstance(value, bool)
            assert isinstance(value, float)
            assert math.isfinite(value)
            assert 0.0 <= value <= CEILINGS[quantity]


@pytest.mark.parametrize("name", sorted(DEVICES))
@settings(
    max_examples=80,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_generated_payloads_are_parsed_or_rejected(name: str, data: st.DataObject) -> None:
    profile, parser = parser_for(name)
    topic = data.draw(st.sampled_from(parser.topics), label="topic")
    payload = data.draw(encodings(parser, topic), label="payload")
    try:
        update = parser.parse(topic, payload)
    except MalformedPayloadError:
        return
    check_update(profile, update)


@pytest.mark.parametrize("name", sorted(DEVICES))
@settings(max_examples=40, derandomize=True, database=None, deadline=None)
@given(topic=st.text(max_size=40), payload=st.binary(max_size=16))
def test_unknown_topics_are_rejected(name: str, topic: str, payload: bytes) -> None:
    _, parser = parser_for(name)
    if topic in parser.topics:
        return
    with pytest.raises(MalformedPayloadError, match="unknown topic"):
        parser.parse(topic, payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000,  # deep nesting: RecursionError inside json
        b'{"ENERGY": {"Power": 1' + b"0" * 400 + b"}}",  # a huge integer: overflows to inf
        b'{"ENERGY": {"Power": 1e400}}',
        b'{"ENERGY": {"Power": -Infinity}}',
        b'{"ENERGY": {"Power": "12"}}',  # a string is not a number in JSON
        b'{"ENERGY": {"Power": true}}',  # nor is a boolean, though Python's bool is an int
        b'{"ENERGY": {"Power": 10001}}',  # above the configured ceiling
        b'{"ENERGY": {}}',
        b"\xc3\x28",
        b"{" + b" " * 3000 + b"}",  # oversized
    ],
)
def test_tasmota_sensor_rejects(payload: bytes) -> None:
    _, parser = parser_for("tasmota")
    with pytest.raises(MalformedPayloadError):
        parser.parse("tele/plug1/SENSOR", payload)


def test_valid_messages_of_every_profile() -> None:
    _, tasmota = parser_for("tasmota")
    assert tasmota.parse("tele/plug1/SENSOR", b'{"ENERGY": {"Power": 0}}').readings == {
        "power_w": 0.0
    }
    assert tasmota.parse("tele/plug1/STATE", b'{"POWER": "OFF"}').readings == {"is_on": False}
    assert tasmota.parse("stat/plug1/POWER", b"ON").readings == {"is_on": True}
    assert tasmota.parse("tele/plug1/LWT", b"Offline") == DeviceUpdate(online=False)

    _, shelly = parser_for("shelly_gen2")
    # A Plus 1 has no meter: apower is absent, the relay state still counts.
    assert shelly.parse("shelly-a/status/switch:1", b'{"id": 1, "output": true}').readings == {
        "is_on": True
    }
    assert shelly.parse("shelly-a/online", b"true") == DeviceUpdate(online=True)

    _, nut = parser_for("nut")
    assert nut.parse("nut/ups1/ups.status", b"OL CHRG").readings == {
        "online": True,
        "on_battery": False,
        "low_battery": False,
    }
    assert nut.parse("nut/ups1/battery.runtime", b" 1830\n").readings == {"runtime_s": 1830.0}
    for text in (b"1_000", b"inf", b"0x10", b"12,5", b""):
        with pytest.raises(MalformedPayloadError):
            nut.parse("nut/ups1/battery.runtime", text)

    _, ups = parser_for("power_allocation_ups")
    with pytest.raises(MalformedPayloadError, match="no reading"):
        ups.parse("pa/ups/ups2/telemetry", b'{"firmware": "1.2"}')
    assert ups.parse("pa/ups/ups2/telemetry", b'{"soc_pct": null, "online": true}').readings == {
        "online": True
    }


def test_acknowledgements_are_matched_to_their_command() -> None:
    shelly = builtin_profiles()["shelly_gen2"].commands[CommandKind.OUTLET_ON].ack
    agent = builtin_profiles()["power_allocation_agent"].commands[CommandKind.AGENT_START].ack
    assert shelly is not None
    assert agent is not None
    expect_7: dict[tuple[str, ...], Any] = {("id",): 7}
    assert judge_ack(shelly, expect_7, b'{"id": 7, "result": {}}', LIMITS) == AckVerdict(ok=True)
    assert judge_ack(shelly, expect_7, b'{"id": 8, "result": {}}', LIMITS) is None
    assert judge_ack(shelly, expect_7, b'{"id": true}', LIMITS) is None
    assert judge_ack(shelly, expect_7, b"garbage", LIMITS) is None
    refused = judge_ack(shelly, expect_7, b'{"id": 7, "error": {"message": "no"}}', LIMITS)
    assert refused is not None
    assert not refused.ok
    assert judge_ack(agent, expect_7, b'{"id": 7, "ok": true}', LIMITS) == AckVerdict(ok=True)
    assert judge_ack(agent, expect_7, b'{"id": 7, "ok": 1}', LIMITS) == AckVerdict(
        ok=False, error="refused by the device"
    )


MINIMAL = {
    "name": "plug",
    "title": "A plug",
    "feeds": "outlet",
    "variables": {"topic": None},
    "messages": [{"topic": "{topic}/power", "format": "text", "fields": {"power_w": {}}}],
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"feeds": "toaster"}, "feeds"),
        ({"messages": []}, "messages"),
        (
            {"messages": [{"topic": "{nope}/p", "format": "text", "fields": {"power_w": {}}}]},
            "nope",
        ),
        (
            {"messages": [{"topic": "a/#", "format": "text", "fields": {"power_w": {}}}]},
            "wildcard|'#'",
        ),
        ({"messages": [{"topic": "t", "format": "text", "fields": {"soc_pct": {}}}]}, "reports"),
        ({"messages": [{"topic": "t", "format": "json", "fields": {"power_w": {}}}]}, "path"),
        ({"messages": [{"topic": "t", "format": "text", "fields": {"is_on": {}}}]}, "on/off"),
        (
            {"messages": [{"topic": "t", "format": "text", "fields": {"is_on": {"on": "1"}}}]},
            "both",
        ),
        ({"commands": {"agent_start": {"topic": "t", "payload": "x"}}}, "cannot take"),
        ({"commands": {"outlet_on": {"topic": "t", "payload": "{cap}"}}}, "cap"),
        (
            {
                "commands": {
                    "outlet_on": {
                        "topic": "t",
                        "payload": "1",
                        "ack": {"topic": "r", "format": "json"},
                    }
                }
            },
            "match",
        ),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_profiles_are_rejected_with_a_reason(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(ProfileError, match=problem):
        profile_from_mapping(MINIMAL | change)


def test_minimal_profile_loads() -> None:
    assert profile_from_mapping(MINIMAL).name == "plug"
