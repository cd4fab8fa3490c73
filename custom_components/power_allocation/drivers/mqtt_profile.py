"""MQTT device profiles: declarations loaded from `mqtt_profiles/*.yaml`, bound to one device.

A profile is data: the topics a kind of device publishes and listens on, where each reading sits
in a payload, and what a command looks like. `MqttDriver` is the one engine that reads them, so a
new device family is a new YAML file, not new code. Every file is validated when it is loaded.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import voluptuous as vol

from .bounded_yaml import load_bounded_yaml
from .interface import CommandKind
from .plausibility import HOST_MAX_POWER_W, OUTLET_MAX_POWER_W, UPS_MAX_POWER_W

PROFILES_DIR = Path(__file__).parent / "mqtt_profiles"

# Filled in by the driver, never by a user: the device's configured target, the base topic of the
# project's own schema, the driver's MQTT client id (Shelly replies to `<src>/rpc`), and per command
# a request id for matching acknowledgements and the throttle cap.
BINDING_VARIABLES = frozenset({"target", "base", "client_id"})
COMMAND_VARIABLES = frozenset({"request_id", "cap_w"})

type VariableValue = str | int | float


class Feeds(StrEnum):
    """What a device of a profile reports on: one outlet, one UPS, or one service's host agent."""

    OUTLET = "outlet"
    UPS = "ups"
    AGENT = "agent"


class Quantity(StrEnum):
    """How a reading is validated."""

    WATTS = "watts"
    PERCENT = "percent"
    SECONDS = "seconds"
    VOLTS = "volts"
    SWITCH = "switch"


READINGS: Mapping[Feeds, Mapping[str, Quantity]] = {
    Feeds.OUTLET: {"power_w": Quantity.WATTS, "is_on": Quantity.SWITCH},
    Feeds.UPS: {
        "on_battery": Quantity.SWITCH,
        "online": Quantity.SWITCH,
        "low_battery": Quantity.SWITCH,
        "forced_shutdown": Quantity.SWITCH,
        "runtime_s": Quantity.SECONDS,
        "soc_pct": Quantity.PERCENT,
        "output_w": Quantity.WATTS,
        "output_voltage_v": Quantity.VOLTS,
    },
    Feeds.AGENT: {"power_w": Quantity.WATTS},
}

COMMANDS: Mapping[Feeds, frozenset[CommandKind]] = {
    Feeds.OUTLET: frozenset({CommandKind.OUTLET_ON, CommandKind.OUTLET_OFF}),
    Feeds.UPS: frozenset(),
    Feeds.AGENT: frozenset(
        {CommandKind.AGENT_THROTTLE, CommandKind.AGENT_SHUTDOWN, CommandKind.AGENT_START}
    ),
}


# What a device of each kind can draw when its profile does not say (`plausibility`).
DEFAULT_MAX_POWER_W: Mapping[Feeds, float] = {
    Feeds.OUTLET: OUTLET_MAX_POWER_W,
    Feeds.UPS: UPS_MAX_POWER_W,
    Feeds.AGENT: HOST_MAX_POWER_W,
}
# Three of the integration's 10 s cycles: a device silent for longer is unavailable, as NUT's upsd
# declares a driver's data stale after MAXAGE.
DEFAULT_STALE_AFTER_S = 30.0
MAX_STALE_AFTER_S = 86_400.0


class ProfileError(ValueError):
    """A profile file or a device binding that cannot work: names the problem."""


class PayloadFormat(StrEnum):
    """How a payload is encoded."""

    JSON = "json"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """Where one reading sits in a payload and how it is encoded.

    `path` walks a JSON document (empty for a text payload). A switch is a JSON boolean, one of the
    `on`/`off` words, or whether `flag` is among the space-separated NUT status codes.
    """

    reading: str
    quantity: Quantity
    path: tuple[str, ...] = ()
    on: str | None = None
    off: str | None = None
    flag: str | None = None
    optional: bool = False


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """One topic a device publishes readings on."""

    topic: str
    format: PayloadFormat
    fields: tuple[FieldSpec, ...]


@dataclass(frozen=True, slots=True)
class AvailabilitySpec:
    """The device's LWT / online topic and its two words."""

    topic: str
    online: str
    offline: str


@dataclass(frozen=True, slots=True)
class AckSpec:
    """The device's reply that confirms a command.

    JSON: a reply belongs to the command when every `match` path equals its rendered value; it is a
    refusal when `error_path` holds something, and a success when every `success` path matches.
    Text: the reply is the payload `match_text`.
    """

    topic: str
    format: PayloadFormat
    match: tuple[tuple[tuple[str, ...], Any], ...] = ()
    success: tuple[tuple[tuple[str, ...], Any], ...] = ()
    error_path: tuple[str, ...] = ()
    match_text: str | None = None


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command: topic, payload template (a string, or JSON with `{variable}` leaves), reply."""

    topic: str
    payload: Any
    ack: AckSpec | None = None


@dataclass(frozen=True, slots=True)
class MqttProfile:
    """One device family, as declared in its YAML file."""

    name: str
    title: str
    feeds: Feeds
    variables: Mapping[str, VariableValue | None]  # None: the user must give it
    availability: AvailabilitySpec | None
    messages: tuple[MessageSpec, ...]
    commands: Mapping[CommandKind, CommandSpec]
    # A power reading above this is not a reading (per outlet, UPS output or host).
    max_power_w: float
    # Silent (no valid message) for longer than this, the device is unavailable.
    stale_after_s: float = DEFAULT_STALE_AFTER_S


def _no_wildcards(value: str) -> str:
    if any(char in value for char in "+#\0"):
        raise vol.Invalid("MQTT topics must not contain '+', '#' or NUL")
    return value


_TOPIC = vol.All(str, vol.Length(min=1, max=512), _no_wildcards)
_PATH = [vol.Any(str, int)]
_FIELD = vol.Schema(
    {
        vol.Optional("path", default=list): _PATH,
        vol.Optional("on"): str,
        vol.Optional("off"): str,
        vol.Optional("flag"): vol.All(str, vol.Match(r"^[A-Z]+$")),
        vol.Optional("optional", default=False): bool,
    }
)
_ACK = vol.Schema(
    {
        vol.Required("topic"): _TOPIC,
        vol.Required("format"): vol.Coerce(PayloadFormat),
        vol.Optional("match"): vol.Any({str: object}, str),
        vol.Optional("success", default=dict): {str: object},
        vol.Optional("error_path", default=list): _PATH,
    }
)
_PROFILE = vol.Schema(
    {
        vol.Required("name"): vol.All(str, vol.Match(r"^[a-z0-9_]+$")),
        vol.Required("title"): str,
        vol.Required("feeds"): vol.Coerce(Feeds),
        vol.Optional("max_power_w"): vol.All(
            vol.Coerce(float), vol.Range(min=0, min_included=False, max=1e6)
        ),
        vol.Optional("stale_after_s", default=DEFAULT_STALE_AFTER_S): vol.All(
            vol.Coerce(float), vol.Range(min=1.0, max=MAX_STALE_AFTER_S)
        ),
        vol.Optional("variables", default=dict): {str: vol.Any(None, str, int)},
        vol.Optional("availability"): {
            vol.Required("topic"): _TOPIC,
            vol.Required("online"): str,
            vol.Required("offline"): str,
        },
        vol.Required("messages"): vol.All(
            [
                {
                    vol.Required("topic"): _TOPIC,
                    vol.Required("format"): vol.Coerce(PayloadFormat),
                    vol.Required("fields"): vol.All({str: _FIELD}, vol.Length(min=1)),
                }
            ],
            vol.Length(min=1),
        ),
        vol.Optional("commands", default=dict): {
            vol.Coerce(CommandKind): {
                vol.Required("topic"): _TOPIC,
                vol.Required("payload"): object,
                vol.Optional("ack"): _ACK,
            }
        },
    }
)


def placeholders(template: str) -> set[str]:
    """The `{variable}` names a template uses."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _json_placeholders(payload: Any) -> set[str]:
    if isinstance(payload, str):
        return placeholders(payload)
    if isinstance(payload, Mapping):
        return set().union(*(_json_placeholders(v) for v in payload.values()))
    if isinstance(payload, list):
        return set().union(*(_json_placeholders(v) for v in payload))
    return set()


def _path(items: list[str | int]) -> tuple[str, ...]:
    return tuple(str(item) for item in items)


def _pairs(mapping: Mapping[str, Any]) -> tuple[tuple[tuple[str, ...], Any], ...]:
    # A dotted key walks into nested objects: `params.id`.
    return tuple((tuple(key.split(".")), value) for key, value in mapping.items())


def profile_from_mapping(raw: Any) -> MqttProfile:
    """Validate one profile declaration; raises `ProfileError` naming what is wrong."""
    try:
        checked = _PROFILE(raw)
    except vol.Invalid as err:
        raise ProfileError(f"profile {_name_of(raw)}: {err}") from None
    name = checked["name"]
    feeds = Feeds(checked["feeds"])
    known = set(checked["variables"]) | BINDING_VARIABLES
    allowed_readings = READINGS[feeds]

    def check_template(where: str, used: set[str], extra: frozenset[str] = frozenset()) -> None:
        unknown = used - known - extra
        if unknown:
            raise ProfileError(f"profile {name}: {where} uses unknown {sorted(unknown)}")

    messages = []
    for message in checked["messages"]:
        fmt = PayloadFormat(message["format"])
        check_template(f"topic {message['topic']!r}", placeholders(message["topic"]))
        fields = []
        for reading, field in message["fields"].items():
            where = f"topic {message['topic']!r} field {reading!r}"
            if reading not in allowed_readings:
                raise ProfileError(
                    f"profile {name}: {where}: a {feeds} reports {sorted(allowed_readings)}"
                )
            quantity = allowed_readings[reading]
            if (fmt is PayloadFormat.JSON) != bool(field["path"]):
                raise ProfileError(f"profile {name}: {where}: a path is for JSON payloads only")
            for part in field["path"]:
                check_template(where, placeholders(str(part)))
            words = [key for key in ("on", "off", "flag") if key in field]
            if quantity is not Quantity.SWITCH and words:
                raise ProfileError(f"profile {name}: {where}: on/off/flag are for switches")
            if words and words not in (["on", "off"], ["flag"]):
                raise ProfileError(f"profile {name}: {where}: give both on and off, or a flag")
            if fmt is PayloadFormat.TEXT and quantity is Quantity.SWITCH and not words:
                raise ProfileError(f"profile {name}: {where}: a text switch needs on/off or flag")
            fields.append(
                FieldSpec(
                    reading=reading,
                    quantity=quantity,
                    path=_path(field["path"]),
                    on=field.get("on"),
                    off=field.get("off"),
                    flag=field.get("flag"),
                    optional=field["optional"],
                )
            )
        messages.append(MessageSpec(message["topic"], fmt, tuple(fields)))

    availability = None
    if "availability" in checked:
        spec = checked["availability"]
        check_template("availability topic", placeholders(spec["topic"]))
        availability = AvailabilitySpec(spec["topic"], spec["online"], spec["offline"])

    commands = {}
    for raw_kind, spec in checked["commands"].items():
        kind = CommandKind(raw_kind)
        if kind not in COMMANDS[feeds]:
            raise ProfileError(f"profile {name}: a {feeds} cannot take {kind}")
        check_template(f"command {kind}", placeholders(spec["topic"]))
        check_template(f"command {kind}", _json_placeholders(spec["payload"]), COMMAND_VARIABLES)
        if "ack" in spec:
            # The reply topic is subscribed up front, so only the match may use the request id.
            check_template(f"command {kind} ack topic", placeholders(spec["ack"]["topic"]))
            used = _json_placeholders(spec["ack"].get("match"))
            check_template(f"command {kind} ack match", used, COMMAND_VARIABLES)
        try:
            ack = _ack_from(spec.get("ack"))
        except ProfileError as err:
            raise ProfileError(f"profile {name}: command {kind}: {err}") from None
        commands[kind] = CommandSpec(spec["topic"], spec["payload"], ack)
    return MqttProfile(
        name=name,
        title=checked["title"],
        feeds=feeds,
        variables=checked["variables"],
        availability=availability,
        messages=tuple(messages),
        commands=commands,
        max_power_w=checked.get("max_power_w", DEFAULT_MAX_POWER_W[feeds]),
        stale_after_s=checked["stale_after_s"],
    )


def _ack_from(raw: Mapping[str, Any] | None) -> AckSpec | None:
    if raw is None:
        return None
    fmt = PayloadFormat(raw["format"])
    match = raw.get("match")
    if fmt is PayloadFormat.TEXT:
        if not isinstance(match, str):
            raise ProfileError("a text acknowledgement needs `match`: the expected payload")
        return AckSpec(raw["topic"], fmt, match_text=match)
    if not isinstance(match, Mapping) or not match:
        raise ProfileError(
            "a JSON acknowledgement needs `match`: fields that tie it to its command"
        )
    return AckSpec(
        raw["topic"],
        fmt,
        match=_pairs(match),
        success=_pairs(raw["success"]),
        error_path=_path(raw["error_path"]),
    )


def _name_of(raw: Any) -> str:
    return repr(raw.get("name")) if isinstance(raw, Mapping) else "(not a mapping)"


def load_profiles(directory: Path) -> dict[str, MqttProfile]:
    """Every `*.yaml` profile in a folder, keyed by name. Does file I/O: not on an event loop."""
    profiles: dict[str, MqttProfile] = {}
    for path in sorted(directory.glob("*.yaml")):
        with path.open(encoding="utf-8") as file:
            try:
                profile = profile_from_mapping(load_bounded_yaml(file.read()))
            except ProfileError as err:
                raise ProfileError(f"{path.name}: {err}") from None
        if profile.name in profiles:
            raise ProfileError(f"{path.name}: profile {profile.name!r} is declared twice")
        profiles[profile.name] = profile
    return profiles


@cache
def builtin_profiles() -> Mapping[str, MqttProfile]:
    """The profiles shipped with the integration (loaded once; the first call reads files)."""
    return load_profiles(PROFILES_DIR)


def render(template: str, variables: Mapping[str, VariableValue]) -> str:
    """Fill a topic or text template."""
    return template.format_map(variables)


def render_json(template: Any, variables: Mapping[str, VariableValue]) -> Any:
    """Fill a JSON template: a leaf that is exactly `{name}` takes the variable's own type."""
    if isinstance(template, str):
        names = placeholders(template)
        if len(names) == 1 and template == "{" + next(iter(names)) + "}":
            return variables[next(iter(names))]
        return render(template, variables)
    if isinstance(template, Mapping):
        return {key: render_json(value, variables) for key, value in template.items()}
    if isinstance(template, list):
        return [render_json(value, variables) for value in template]
    return template


@dataclass(frozen=True, slots=True)
class MqttDevice:
    """One configured device: a profile, the target it feeds and its profile variables."""

    profile: str
    target: str  # outlet id `<pdu>/<n>`, UPS id or service id
    variables: Mapping[str, VariableValue]
    # The site's own ceiling for this device's power readings, over the profile's (for a UPS,
    # `plausibility.ups_max_power_w` of its rating).
    max_power_w: float | None = None

    def describe(self) -> str:
        """How logs and counters name the device."""
        return f"{self.profile} {self.target}"

    def power_ceiling_w(self, profile: MqttProfile) -> float:
        """Above this, a power reading of this device is not a reading."""
        return profile.max_power_w if self.max_power_w is None else self.max_power_w


def bind_variables(
    profile: MqttProfile, device: MqttDevice, *, base: str, client_id: str
) -> dict[str, VariableValue]:
    """The full variable set of one device; raises `ProfileError` for a missing or bad value."""
    unknown = set(device.variables) - set(profile.variables)
    if unknown:
        raise ProfileError(f"{device.describe()}: unknown variable(s) {sorted(unknown)}")
    bound: dict[str, VariableValue] = {
        "target": device.target,
        "base": base,
        "client_id": client_id,
    }
    for name, default in profile.variables.items():
        value = device.variables.get(name, default)
        if value is None:
            raise ProfileError(f"{device.describe()}: variable {name!r} is required")
        bound[name] = value
    for name, value in bound.items():
        if isinstance(value, str):
            try:
                _no_wildcards(value)
            except vol.Invalid:
                raise ProfileError(
                    f"{device.describe()}: {name} {value!r} must not contain '+', '#' or NUL"
                ) from None
    return bound
