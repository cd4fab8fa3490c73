"""Every MQTT profile's parser: generated payloads never raise anything but MalformedPayloadError,
whatever it accepts is a plausible reading, and every valid payload reads as what it says."""

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
    DEFAULT_STALE_AFTER_S,
    READINGS,
    FieldSpec,
    MessageSpec,
    MqttDevice,
    MqttProfile,
    PayloadFormat,
    ProfileError,
    Quantity,
    bind_variables,
    builtin_profiles,
    profile_from_mapping,
)
from custom_components.power_allocation.drivers.plausibility import (
    NEGATIVE_POWER_TOLERANCE_W,
    PERCENT,
    RUNTIME,
    VOLTAGE,
    Span,
    power_span,
)

LIMITS = PayloadLimits(max_payload_bytes=2048)
# Status flags NUT defines for `ups.status` (networkupstools.org, "Status data").
NUT_FLAGS = (
    "OL",
    "OB",
    "LB",
    "HB",
    "RB",
    "CHRG",
    "DISCHRG",
    "BYPASS",
    "CAL",
    "OFF",
    "OVER",
    "TRIM",
    "BOOST",
    "FSD",
)
HYPOTHESIS = settings(
    max_examples=80,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
DEVICES = {
    "tasmota": MqttDevice("tasmota", "pdu-a/1", {"topic": "plug1"}),
    "shelly_gen2": MqttDevice("shelly_gen2", "pdu-a/2", {"prefix": "shelly-a", "switch": 1}),
    "nut": MqttDevice("nut", "ups1", {"prefix": "nut/ups1"}),
    "power_allocation_outlet": MqttDevice("power_allocation_outlet", "pdu-b/1", {}),
    "power_allocation_ups": MqttDevice("power_allocation_ups", "ups2", {}),
    "power_allocation_agent": MqttDevice("power_allocation_agent", "db", {}),
}


def spans_of(profile: MqttProfile) -> dict[Quantity, Span]:
    return {
        Quantity.WATTS: power_span(profile.max_power_w),
        Quantity.PERCENT: PERCENT,
        Quantity.SECONDS: RUNTIME,
        Quantity.VOLTS: VOLTAGE,
    }


def parser_for(name: str) -> tuple[MqttProfile, DeviceParser]:
    profile = builtin_profiles()[name]
    device = DEVICES[name]
    variables = bind_variables(profile, device, base="pa", client_id="pa-driver")
    return profile, DeviceParser(profile, variables, LIMITS, device.power_ceiling_w(profile))


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
    spans = spans_of(profile)
    for reading, value in update.readings.items():
        quantity = quantities[reading]
        if quantity is Quantity.SWITCH:
            assert isinstance(value, bool)
        else:
            assert not isinstance(value, bool)
            assert isinstance(value, float)
            assert math.isfinite(value)
            assert 0.0 <= value <= spans[quantity].high
    for reading, value in update.implausible.items():
        assert reading not in update.readings
        assert spans[quantities[reading]].admit(value) is None


@pytest.mark.parametrize("name", sorted(DEVICES))
@HYPOTHESIS
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


def plausible_numbers(span: Span) -> st.SearchStrategy[float | int]:
    """Numbers a device may really send for a quantity: JSON integers and floats in its span."""
    low, high = max(span.low, 0.0), span.high
    return st.integers(min_value=math.ceil(low), max_value=math.floor(high)) | st.floats(
        min_value=low, max_value=high, allow_nan=False, allow_infinity=False
    )


def nut_statuses() -> st.SearchStrategy[list[str]]:
    """`ups.status` as upsd writes it: distinct flags, space-separated, in any order."""
    return st.lists(st.sampled_from(NUT_FLAGS), min_size=1, max_size=6, unique=True)


@st.composite
def valid_message(
    draw: st.DrawFn, profile: MqttProfile, message: MessageSpec
) -> tuple[bytes, dict[str, float | bool]]:
    """A payload the device could really publish on `message`'s topic, and what it says."""
    spans = spans_of(profile)
    if message.format is PayloadFormat.TEXT:
        if all(spec.flag is not None for spec in message.fields):
            flags = draw(nut_statuses(), label="status")
            said = {spec.reading: spec.flag in flags for spec in message.fields}
            return " ".join(flags).encode(), said
        (spec,) = message.fields
        if spec.quantity is Quantity.SWITCH:
            on = draw(st.booleans(), label=spec.reading)
            return str(spec.on if on else spec.off).encode(), {spec.reading: on}
        number = draw(plausible_numbers(spans[spec.quantity]), label=spec.reading)
        padding = draw(st.sampled_from(["", "\n", " "]))
        return f"{number!r}{padding}".encode(), {spec.reading: float(number)}
    included = [
        spec
        for spec in message.fields
        if not spec.optional or draw(st.booleans(), label=f"has {spec.reading}")
    ]
    document: dict[str, Any] = {}
    said: dict[str, float | bool] = {}
    # Every field may be optional, but a message says at least one thing.
    for spec in included or message.fields[:1]:
        value, said[spec.reading] = draw(json_field(spec, spans), label=spec.reading)
        place(document, spec.path, value)
    # Keys the schema does not know are ignored, so that it can grow.
    document.setdefault("firmware", draw(st.text(max_size=8)))
    return json.dumps(document).encode(), said


def place(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Put `value` at `path` in a JSON object, making the objects on the way."""
    node = document
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def json_field(
    spec: FieldSpec, spans: dict[Quantity, Span]
) -> st.SearchStrategy[tuple[Any, float | bool]]:
    """(JSON value, what it reads as) for one field."""
    if spec.quantity is not Quantity.SWITCH:
        return plausible_numbers(spans[spec.quantity]).map(lambda n: (n, float(n)))
    if spec.on is not None:
        return st.booleans().map(lambda on: (spec.on if on else spec.off, on))
    return st.booleans().map(lambda on: (on, on))


@pytest.mark.parametrize("name", sorted(DEVICES))
@HYPOTHESIS
@given(data=st.data())
def test_valid_payloads_read_as_what_they_say(name: str, data: st.DataObject) -> None:
    profile, parser = parser_for(name)
    message = data.draw(st.sampled_from(list(parser.messages.values())), label="topic")
    payload, said = data.draw(valid_message(profile, message), label="payload")

    update = parser.parse(message.topic, payload)

    assert update == DeviceUpdate(readings=said)


@pytest.mark.parametrize("name", sorted(DEVICES))
def test_availability_words_say_online_or_offline(name: str) -> None:
    profile, parser = parser_for(name)
    assert profile.availability is not None
    assert parser.availability_topic is not None
    for word, online in (
        (profile.availability.online, True),
        (profile.availability.offline, False),
    ):
        assert parser.parse(parser.availability_topic, word.encode()) == DeviceUpdate(online=online)


@HYPOTHESIS
@given(flags=nut_statuses())
def test_nut_status_flags_read_as_nut_defines_them(flags: list[str]) -> None:
    _, parser = parser_for("nut")

    readings = parser.parse("nut/ups1/ups.status", " ".join(flags).encode()).readings

    assert readings == {
        "online": "OL" in flags,  # the driver reads OL with OB as on battery (test_mqtt.py)
        "on_battery": "OB" in flags,
        "low_battery": "LB" in flags,
        "forced_shutdown": "FSD" in flags,
    }


@pytest.mark.parametrize("name", sorted(DEVICES))
@HYPOTHESIS
@given(data=st.data())
def test_numbers_outside_what_a_device_can_report_are_implausible(
    name: str, data: st.DataObject
) -> None:
    profile, parser = parser_for(name)
    numeric = [
        (message, spec)
        for message in parser.messages.values()
        for spec in message.fields
        if spec.quantity is not Quantity.SWITCH
    ]
    message, spec = data.draw(st.sampled_from(numeric), label="field")
    span = spans_of(profile)[spec.quantity]
    number = data.draw(
        st.floats(max_value=span.low, exclude_max=True, min_value=-1e12)
        | st.floats(min_value=span.high, exclude_min=True, max_value=1e12),
        label="number",
    )
    if message.format is PayloadFormat.TEXT:
        payload = repr(number).encode()
    else:
        document: dict[str, Any] = {}
        spans = spans_of(profile)
        for other in message.fields:
            if not other.optional:
                place(document, other.path, data.draw(json_field(other, spans))[0])
        place(document, spec.path, number)
        payload = json.dumps(document).encode()

    update = parser.parse(message.topic, payload)

    assert update.implausible == {spec.reading: number}
    assert spec.reading not in update.readings


def test_every_device_has_its_own_power_ceiling() -> None:
    _, tasmota = parser_for("tasmota")
    _, agent = parser_for("power_allocation_agent")
    small = MqttDevice("tasmota", "pdu-a/1", {"topic": "plug1"}, max_power_w=500.0)
    profile = builtin_profiles()["tasmota"]
    variables = bind_variables(profile, small, base="pa", client_id="pa-driver")
    small_plug = DeviceParser(profile, variables, LIMITS, small.power_ceiling_w(profile))
    watts = b'{"ENERGY": {"Power": 3000}}'

    assert tasmota.parse("tele/plug1/SENSOR", watts).readings == {"power_w": 3000.0}
    assert small_plug.parse("tele/plug1/SENSOR", watts).implausible == {"power_w": 3000.0}
    assert agent.parse("pa/agent/db/telemetry", b'{"power_w": 2500}').implausible == {
        "power_w": 2500.0
    }
    # An all-ones 16-bit register scaled to 0.1 W, as a bridge might forward it: not a reading.
    assert tasmota.parse("tele/plug1/SENSOR", b'{"ENERGY": {"Power": 6553.5}}').readings == {}


def test_a_meter_offset_below_zero_reads_zero_and_more_is_implausible() -> None:
    _, tasmota = parser_for("tasmota")
    just_below = -NEGATIVE_POWER_TOLERANCE_W / 2
    reversed_clamp = -NEGATIVE_POWER_TOLERANCE_W * 5
    sensor = "tele/plug1/SENSOR"

    offset = tasmota.parse(sensor, json.dumps({"ENERGY": {"Power": just_below}}).encode())
    wrong = tasmota.parse(sensor, json.dumps({"ENERGY": {"Power": reversed_clamp}}).encode())

    assert offset.readings == {"power_w": 0.0}
    assert wrong.implausible == {"power_w": reversed_clamp}


def test_profiles_declare_a_stale_age_within_bounds() -> None:
    assert profile_from_mapping(MINIMAL).stale_after_s == DEFAULT_STALE_AFTER_S
    assert profile_from_mapping(MINIMAL | {"stale_after_s": 90}).stale_after_s == 90.0
    for bad in (0, -5, "soon", 10**6):
        with pytest.raises(ProfileError, match="stale_after_s"):
            profile_from_mapping(MINIMAL | {"stale_after_s": bad})
    with pytest.raises(ProfileError, match="max_power_w"):
        profile_from_mapping(MINIMAL | {"max_power_w": 0})


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
        "forced_shutdown": False,
    }
    assert nut.parse("nut/ups1/ups.status", b"OB LB FSD").readings == {
        "online": False,
        "on_battery": True,
        "low_battery": True,
        "forced_shutdown": True,
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
