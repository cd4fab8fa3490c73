"""Validating parsers for inbound MQTT payloads, built from a bound profile.

A parser is pure: topic and payload bytes in, a `DeviceUpdate` out, or `MalformedPayloadError`
with the reason. It rejects what is not a reading at all (not JSON, wrong types, NaN, infinities,
unknown topics, oversized payloads), and such a message is taken whole or not at all, so a
malformed payload never changes a reading. A well-formed number outside what the device can
physically report (`plausibility`: above its `max_power_w`, a negative power, a charge outside
0-100 %) is named in `DeviceUpdate.implausible` instead: the driver reports it as unknown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from .mqtt_profile import (
    AckSpec,
    FieldSpec,
    MessageSpec,
    MqttProfile,
    PayloadFormat,
    Quantity,
    VariableValue,
    render,
)
from .plausibility import PERCENT, RUNTIME, VOLTAGE, Span, power_span

_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_STATUS_CODE = re.compile(r"[A-Z]{1,10}")
_MAX_STATUS_CODES = 16
_MISSING = object()


class MalformedPayloadError(ValueError):
    """A payload that cannot be a reading; the message says why."""


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    """How large a payload may be before it is a fault, not a message."""

    max_payload_bytes: int = 16_384


@dataclass(frozen=True, slots=True)
class DeviceUpdate:
    """What one valid message says: readings to apply, readings that were not plausible (name to
    the value given), and/or whether the device says it is online."""

    readings: Mapping[str, float | bool] = field(default_factory=dict)
    online: bool | None = None
    implausible: Mapping[str, float] = field(default_factory=dict)


def decode_json(payload: bytes, limits: PayloadLimits) -> Any:
    """Strict JSON: size-checked, UTF-8, no NaN or Infinity, integers within 64 bits.

    orjson (which Home Assistant itself ships) is strict in exactly these ways, and decodes a
    telemetry message several times faster than the standard library, which matters at the
    message rates a site of smart plugs produces.
    """
    if len(payload) > limits.max_payload_bytes:
        raise MalformedPayloadError(
            f"payload of {len(payload)} bytes exceeds {limits.max_payload_bytes}"
        )
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        raise MalformedPayloadError(f"not JSON: {err}") from None


def decode_text(payload: bytes, limits: PayloadLimits) -> str:
    """A short UTF-8 text payload, surrounding whitespace removed."""
    if len(payload) > limits.max_payload_bytes:
        raise MalformedPayloadError(
            f"payload of {len(payload)} bytes exceeds {limits.max_payload_bytes}"
        )
    try:
        return payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise MalformedPayloadError("not UTF-8 text") from None


def walk(document: Any, path: tuple[str, ...]) -> Any:
    """The value at `path` in a JSON document, or `_MISSING`."""
    node = document
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


class DeviceParser:
    """The validating parser of one device, generated from its profile and variables."""

    def __init__(
        self,
        profile: MqttProfile,
        variables: Mapping[str, VariableValue],
        limits: PayloadLimits,
        max_power_w: float,
    ) -> None:
        self.limits = limits
        self.messages: dict[str, MessageSpec] = {}
        for message in profile.messages:
            fields = tuple(
                FieldSpec(
                    reading=spec.reading,
                    quantity=spec.quantity,
                    path=tuple(render(part, variables) for part in spec.path),
                    on=spec.on,
                    off=spec.off,
                    flag=spec.flag,
                    optional=spec.optional,
                )
                for spec in message.fields
            )
            self.messages[render(message.topic, variables)] = MessageSpec(
                topic=render(message.topic, variables), format=message.format, fields=fields
            )
        spans = {
            Quantity.WATTS: power_span(max_power_w),
            Quantity.PERCENT: PERCENT,
            Quantity.SECONDS: RUNTIME,
            Quantity.VOLTS: VOLTAGE,
        }
        # Per topic, what parse() needs of each field, looked up once here rather than per message.
        self._plans: dict[str, tuple[bool, tuple[_FieldPlan, ...]]] = {
            topic: (
                message.format is PayloadFormat.TEXT,
                tuple(_FieldPlan(spec, spans.get(spec.quantity)) for spec in message.fields),
            )
            for topic, message in self.messages.items()
        }
        self.availability_topic: str | None = None
        self._online_words: dict[str, bool] = {}
        if profile.availability is not None:
            self.availability_topic = render(profile.availability.topic, variables)
            self._online_words = {
                profile.availability.online: True,
                profile.availability.offline: False,
            }

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic this device publishes on."""
        extra = () if self.availability_topic is None else (self.availability_topic,)
        return (*self.messages, *extra)

    def parse(self, topic: str, payload: bytes) -> DeviceUpdate:
        """Validate one message; raises `MalformedPayloadError`."""
        if topic == self.availability_topic:
            word = decode_text(payload, self.limits)
            if word not in self._online_words:
                raise MalformedPayloadError(
                    f"availability {word[:40]!r} is neither online nor offline"
                )
            return DeviceUpdate(online=self._online_words[word])
        plan = self._plans.get(topic)
        if plan is None:
            raise MalformedPayloadError(f"unknown topic {topic[:200]!r}")
        is_text, fields = plan
        if is_text:
            document: Any = decode_text(payload, self.limits)
        else:
            document = decode_json(payload, self.limits)
            if type(document) is not dict:
                raise MalformedPayloadError("JSON payload is not an object")
        readings: dict[str, float | bool] = {}
        implausible: dict[str, float] = {}
        for spec, span in fields:
            raw = document if is_text else walk(document, spec.path)
            if raw is _MISSING or (raw is None and spec.optional):
                if not spec.optional:
                    raise MalformedPayloadError(f"{_name(spec)} is missing")
                continue
            if span is None:
                readings[spec.reading] = _switch(spec, raw)
                continue
            number = _number_from_text(raw, spec) if is_text else _number(raw, spec)
            admitted = span.admit(number)
            if admitted is None:
                implausible[spec.reading] = number
            else:
                readings[spec.reading] = admitted
        if not readings and not implausible:
            raise MalformedPayloadError("no reading in payload")
        return DeviceUpdate(readings, implausible=implausible)


class _FieldPlan(NamedTuple):
    spec: FieldSpec
    span: Span | None  # None: a switch


def _name(spec: FieldSpec) -> str:
    return ".".join(spec.path) or spec.reading


def _number_from_text(text: str, spec: FieldSpec) -> float:
    # Stricter than float(): no "nan", "inf", "1_000" or surrounding junk.
    if not _NUMBER.fullmatch(text):
        raise MalformedPayloadError(f"{_name(spec)} = {text[:40]!r} is not a number")
    return _number(float(text), spec)


def _number(raw: Any, spec: FieldSpec) -> float:
    # Exact types: a JSON decoder makes plain floats and ints, and `true` is an int subclass.
    kind = type(raw)
    if kind is float:
        number: float = raw
    elif kind is int:
        try:
            number = float(raw)
        except OverflowError:  # a JSON integer with hundreds of digits
            raise MalformedPayloadError(f"{_name(spec)} is not finite") from None
    else:
        raise MalformedPayloadError(f"{_name(spec)} is a {kind.__name__}, not a number")
    if not math.isfinite(number):
        raise MalformedPayloadError(f"{_name(spec)} is not finite")
    return number


def _switch(spec: FieldSpec, raw: Any) -> bool:
    name = _name(spec)
    if spec.flag is not None:
        if not isinstance(raw, str):
            raise MalformedPayloadError(f"{name} is not a status string")
        codes = raw.split()
        if not codes or len(codes) > _MAX_STATUS_CODES:
            raise MalformedPayloadError(f"{name} = {raw[:40]!r} is not a status")
        if not all(_STATUS_CODE.fullmatch(code) for code in codes):
            raise MalformedPayloadError(f"{name} = {raw[:40]!r} is not a status")
        return spec.flag in codes
    if spec.on is not None:
        if raw == spec.on:
            return True
        if raw == spec.off:
            return False
        raise MalformedPayloadError(f"{name} is neither {spec.on!r} nor {spec.off!r}")
    if not isinstance(raw, bool):
        raise MalformedPayloadError(f"{name} is a {type(raw).__name__}, not a boolean")
    return raw


@dataclass(frozen=True, slots=True)
class AckVerdict:
    """A reply that belongs to a command: whether it confirms it, and why not."""

    ok: bool
    error: str | None = None


def judge_ack(
    ack: AckSpec, expected: Mapping[tuple[str, ...], Any], payload: bytes, limits: PayloadLimits
) -> AckVerdict | None:
    """The verdict of a reply, or None when the reply is not for this command (or garbled)."""
    if ack.format is PayloadFormat.TEXT:
        try:
            text = decode_text(payload, limits)
        except MalformedPayloadError:
            return None
        return AckVerdict(ok=True) if text == ack.match_text else None
    try:
        document = decode_json(payload, limits)
    except MalformedPayloadError:
        return None
    if not isinstance(document, dict):
        return None
    if not all(_same(walk(document, path), value) for path, value in expected.items()):
        return None
    if ack.error_path:
        error = walk(document, ack.error_path)
        if error is not _MISSING and error is not None:
            return AckVerdict(ok=False, error=str(error)[:200])
    if all(_same(walk(document, path), value) for path, value in ack.success):
        return AckVerdict(ok=True)
    return AckVerdict(ok=False, error="refused by the device")


def _same(found: Any, wanted: Any) -> bool:
    # JSON `true` must not stand in for `1`, nor `1` for `true`.
    return type(found) is type(wanted) and found == wanted
