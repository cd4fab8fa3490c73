"""A site as the integration stores it: the engine's topology plus where each device is reached.

One document describes a site, in the config entry and in the YAML a large site is imported from:

- `mqtt` (optional): the broker every MQTT source of the site uses;
- `ups`: the engine's UPS fields plus a `source`;
- `pdus`: the engine's PDU fields plus a `source`;
- `services`: the engine's service fields plus how to ask the host to stop, throttle and start
  (`agent: true` and its `agent_secret` for the project's MQTT host agent, or Home Assistant
  actions), and optionally its host's `mac` to wake it with a Wake-on-LAN packet when it is
  started (sent to `wol_broadcast`, 255.255.255.255, port `wol_port`, 9);
- `planner` (optional): the site's own tunables of the plan: `ride_through_s`, how long a blip
  is ridden through before anything is stopped, and the outage prior — `momentary_ratio` (the
  share of outages that are blips), `sustained_median_s` and `sustained_sigma` (how long the
  others last: a lognormal's median and spread). What it leaves out keeps the defaults.

A source is `modbus` (host, port, unit id, profile), `mqtt` (a profile of `drivers/mqtt_profiles`
and its variables; a PDU gives them per outlet) or `entities` (entities Home Assistant already
has). `parse_topology` validates the lot and returns a `SiteTopology`; every problem is raised as
`TopologyError` with a message that names the item, so a user sees what to fix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import voluptuous as vol
import yaml  # type: ignore[import-untyped]

from .drivers.bounded_yaml import YamlBoundError, load_bounded_yaml
from .drivers.command_auth import MIN_SECRET_LENGTH
from .drivers.mqtt_tls import CA_CERT, CLIENT_CERT, CLIENT_KEY, InvalidTlsPemError, check_tls_pem
from .drivers.schema_errors import is_unknown_key
from .drivers.wake_on_lan import DEFAULT_BROADCAST, DEFAULT_PORT, normalise_mac
from .engine.controller import MAX_RIDE_THROUGH_S
from .engine.model import PDU_KEYS, SERVICE_KEYS, UPS_KEYS, Site, TopologyError
from .engine.outage import MOMENTARY_MAX_S, SITE_PRIOR_KEYS, OutagePrior
from .engine.planner import RIDE_THROUGH_S

MODBUS_UPS_PROFILES = ("apc_smart_ups",)
MODBUS_PDU_PROFILES = ("generic_pdu",)
MQTT_UPS_PROFILES = ("nut", "power_allocation_ups")
MQTT_OUTLET_PROFILES = ("tasmota", "shelly_gen2", "power_allocation_outlet")

SOURCE_MODBUS = "modbus"
SOURCE_MQTT = "mqtt"
SOURCE_ENTITIES = "entities"

# The parts of a site document an entry keeps in its options (the rest is in its data).
OPTION_KEYS = ("pdus", "services", "planner")

MIN_SUSTAINED_MEDIAN_S = MOMENTARY_MAX_S
MAX_SUSTAINED_MEDIAN_S = 7 * 86400.0
MIN_SUSTAINED_SIGMA = 0.2
MAX_SUSTAINED_SIGMA = 3.0

_TEXT = vol.All(str, vol.Length(min=1))
_ID = vol.All(str, vol.Match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", msg="letters, digits, _ . - only"))
_PORT = vol.All(vol.Coerce(int), vol.Range(min=1, max=65535))
_ENTITY_ID = vol.All(str, vol.Match(r"^[a-z0-9_]+\.[a-z0-9_]+$", msg="not an entity id"))
_VARIABLES = {str: vol.Any(str, int)}


def _mac(value: Any) -> str:
    try:
        return normalise_mac(value)
    except ValueError as error:
        raise vol.Invalid(str(error)) from None


def _ipv4(value: Any) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise vol.Invalid("not an IPv4 address") from None


_ACTION = vol.Schema(
    {
        vol.Required("action"): vol.All(str, vol.Match(r"^[a-z0-9_]+\.[a-z0-9_]+$")),
        vol.Optional("data", default=dict): dict,
    }
)

MQTT_BROKER_SCHEMA = vol.Schema(
    {
        vol.Required("host"): _TEXT,
        vol.Optional("port", default=1883): _PORT,
        vol.Optional("username"): _TEXT,
        vol.Optional("password"): str,
        vol.Optional("tls", default=False): bool,
        # With `tls`: a private CA to trust instead of the system's, and a client certificate
        # with its key for mutual TLS, as PEM text.
        vol.Optional(CA_CERT): _TEXT,
        vol.Optional(CLIENT_CERT): _TEXT,
        vol.Optional(CLIENT_KEY): _TEXT,
        vol.Optional("base_topic", default="power_allocation"): vol.All(
            str, vol.Match(r"^[^+#\0]+$", msg="must not contain + # or NUL")
        ),
        # Not the user's: setup puts the entry's own random id here (never stored).
        vol.Optional("client_id"): vol.All(str, vol.Length(min=1, max=64)),
    }
)


def _modbus_source(profiles: tuple[str, ...]) -> vol.Schema:
    return vol.Schema(
        {
            vol.Required("kind"): SOURCE_MODBUS,
            vol.Required("host"): _TEXT,
            vol.Optional("port", default=502): _PORT,
            vol.Optional("unit_id", default=1): vol.All(vol.Coerce(int), vol.Range(min=0, max=255)),
            vol.Optional("profile", default=profiles[0]): vol.In(profiles),
            vol.Optional("timeout_s", default=1.0): vol.All(
                vol.Coerce(float), vol.Range(min=0.1, max=30)
            ),
        }
    )


def _by_kind(**schemas: Callable[[Any], Any]) -> Any:
    """Validate a source with the schema of its `kind`, so errors name the right fields."""

    def validate(value: Any) -> Any:
        if not isinstance(value, Mapping) or value.get("kind") not in schemas:
            raise vol.Invalid(f"kind must be one of {', '.join(schemas)}", path=["kind"])
        return schemas[value["kind"]](dict(value))

    return validate


_ONE_MAINS_ENTITY = "give on_battery or status, not both"


def _has_mains_entity(source: dict[str, Any]) -> dict[str, Any]:
    """Without one, the UPS could never be read as available."""
    if "on_battery" not in source and "status" not in source:
        raise vol.Invalid(
            "needs on_battery or status, the entity that says whether it is on battery"
        )
    return source


_UPS_SOURCE = _by_kind(
    modbus=_modbus_source(MODBUS_UPS_PROFILES),
    mqtt=vol.Schema(
        {
            vol.Required("kind"): SOURCE_MQTT,
            vol.Required("profile"): vol.In(MQTT_UPS_PROFILES),
            vol.Optional("variables", default=dict): _VARIABLES,
        }
    ),
    entities=vol.All(
        vol.Schema(
            {
                vol.Required("kind"): SOURCE_ENTITIES,
                vol.Exclusive("on_battery", "mains", msg=_ONE_MAINS_ENTITY): _ENTITY_ID,
                vol.Exclusive("status", "mains", msg=_ONE_MAINS_ENTITY): _ENTITY_ID,
                vol.Optional("runtime"): _ENTITY_ID,
                vol.Optional("charge"): _ENTITY_ID,
                vol.Optional("load"): _ENTITY_ID,
            }
        ),
        _has_mains_entity,
    ),
)

_PDU_SOURCE = _by_kind(
    modbus=_modbus_source(MODBUS_PDU_PROFILES),
    mqtt=vol.Schema(
        {
            vol.Required("kind"): SOURCE_MQTT,
            vol.Required("profile"): vol.In(MQTT_OUTLET_PROFILES),
            vol.Optional("outlets", default=dict): {vol.Coerce(int): _VARIABLES},
        }
    ),
    entities=vol.Schema(
        {
            vol.Required("kind"): SOURCE_ENTITIES,
            vol.Required("outlets"): {
                vol.Coerce(int): {
                    vol.Optional("switch"): _ENTITY_ID,
                    vol.Optional("power"): _ENTITY_ID,
                }
            },
        }
    ),
)

_NUMBER = vol.All(vol.Coerce(float), vol.Range(min=0))

TOPOLOGY_SCHEMA = vol.Schema(
    {
        vol.Optional("name"): _TEXT,
        vol.Optional("mqtt"): MQTT_BROKER_SCHEMA,
        vol.Optional("ups", default=list): [
            {
                vol.Required("id"): _ID,
                vol.Required("rated_w"): _NUMBER,
                vol.Required("capacity_wh"): _NUMBER,
                vol.Required("runtime_full_load_s"): _NUMBER,
                vol.Optional("peukert_k"): _NUMBER,
                vol.Optional("efficiency"): _NUMBER,
                vol.Required("source"): _UPS_SOURCE,
            }
        ],
        vol.Optional("pdus", default=list): [
            {
                vol.Required("id"): _ID,
                vol.Required("ups"): _ID,
                vol.Required("limit_w"): _NUMBER,
                vol.Required("outlets"): vol.All(int, vol.Range(min=1, max=96)),
                vol.Optional("outlet_limits_w"): {vol.Coerce(int): _NUMBER},
                vol.Required("source"): _PDU_SOURCE,
            }
        ],
        vol.Optional("services", default=list): [
            {
                vol.Required("id"): _ID,
                vol.Required("priority"): vol.In(("critical", "high", "medium", "low")),
                vol.Required("outlets"): vol.All([_TEXT], vol.Length(min=1)),
                vol.Optional("depends_on", default=list): [_ID],
                vol.Optional("shutdown_s"): _NUMBER,
                vol.Optional("startup_s"): _NUMBER,
                vol.Optional("idle_w"): _NUMBER,
                vol.Optional("throttle"): {vol.Required("min_w"): _NUMBER},
                vol.Optional("agent", default=False): bool,
                vol.Optional("agent_secret"): vol.All(
                    str,
                    vol.Length(
                        min=MIN_SECRET_LENGTH,
                        msg=f"must be at least {MIN_SECRET_LENGTH} characters",
                    ),
                ),
                vol.Optional("stop_action"): _ACTION,
                vol.Optional("throttle_action"): _ACTION,
                vol.Optional("start_action"): _ACTION,
                vol.Optional("mac"): _mac,
                vol.Optional("wol_broadcast"): _ipv4,
                vol.Optional("wol_port"): _PORT,
            }
        ],
        vol.Optional("planner"): {
            vol.Optional("ride_through_s"): vol.All(
                vol.Coerce(float), vol.Range(min=0, max=MAX_RIDE_THROUGH_S)
            ),
            vol.Optional("momentary_ratio"): vol.All(vol.Coerce(float), vol.Range(min=0, max=1)),
            # A sustained outage is one of 5 minutes or more (IEEE 1366).
            vol.Optional("sustained_median_s"): vol.All(
                vol.Coerce(float),
                vol.Range(min=MIN_SUSTAINED_MEDIAN_S, max=MAX_SUSTAINED_MEDIAN_S),
            ),
            vol.Optional("sustained_sigma"): vol.All(
                vol.Coerce(float), vol.Range(min=MIN_SUSTAINED_SIGMA, max=MAX_SUSTAINED_SIGMA)
            ),
        },
    }
)


@dataclass(frozen=True, slots=True)
class HaAction:
    """A Home Assistant action to call, e.g. `script.stop_db` with its data."""

    domain: str
    service: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class WakeOnLan:
    """Where a service's host is woken: its MAC, and the broadcast address and port."""

    mac: str  # aa:bb:cc:dd:ee:ff
    broadcast: str = DEFAULT_BROADCAST
    port: int = DEFAULT_PORT


@dataclass(frozen=True, slots=True)
class ServiceControls:
    """How the integration asks one service's host to stop, throttle and start."""

    agent: bool = False
    # What the agent's commands are signed with (drivers/command_auth.py).
    agent_secret: str | None = field(default=None, repr=False)
    stop: HaAction | None = None
    throttle: HaAction | None = None
    start: HaAction | None = None
    # A start also sends its host a Wake-on-LAN packet.
    wake: WakeOnLan | None = None


@dataclass(frozen=True, slots=True)
class SiteTopology:
    """A validated site document: the engine's `Site` and the glue's view of its devices."""

    site: Site
    mqtt: Mapping[str, Any] | None
    ups_sources: Mapping[str, Mapping[str, Any]]
    pdu_sources: Mapping[str, Mapping[str, Any]]
    controls: Mapping[str, ServiceControls]
    document: Mapping[str, Any]  # the validated document, as stored
    ride_through_s: float = RIDE_THROUGH_S
    outage_prior: OutagePrior = field(default_factory=OutagePrior)


def _explain(error: vol.Invalid, document: Any) -> str:
    """`services[3] (db).outlets: ...`: the path, with the id of each list item on it."""
    where = ""
    node = document
    for key in error.path:
        if isinstance(key, int):
            item = node[key] if isinstance(node, list) and 0 <= key < len(node) else None
            item_id = item.get("id") if isinstance(item, Mapping) else None
            where += f"[{key}]" + (f" ({item_id})" if item_id else "")
        else:
            where += f".{key}" if where else str(key)
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
    message = UNKNOWN_KEY if is_unknown_key(error) else error.msg
    return f"{where}: {message}" if where else str(message)


# The message of a key the schema does not know, whichever validation library Home Assistant
# provides as `voluptuous`.
UNKNOWN_KEY = "extra keys not allowed"


def _action(config: Mapping[str, Any] | None) -> HaAction | None:
    if config is None:
        return None
    domain, service = config["action"].split(".", 1)
    return HaAction(domain, service, dict(config["data"]))


def _wake(service: Mapping[str, Any]) -> WakeOnLan | None:
    if "mac" not in service:
        return None
    return WakeOnLan(
        service["mac"],
        service.get("wol_broadcast", DEFAULT_BROADCAST),
        service.get("wol_port", DEFAULT_PORT),
    )


def parse_topology(document: Any) -> SiteTopology:
    """Validate a site document; raises `TopologyError` naming the first problem."""
    if not isinstance(document, Mapping):
        raise TopologyError("a topology must be a mapping with ups, pdus and services")
    try:
        checked = TOPOLOGY_SCHEMA(dict(document))
    except vol.MultipleInvalid as error:  # a Schema wraps every error in one
        raise TopologyError(_explain(error.errors[0], document)) from None
    site = Site.from_mapping(
        {
            "ups": [_pick(u, UPS_KEYS) for u in checked["ups"]],
            "pdus": [_pick(p, PDU_KEYS) for p in checked["pdus"]],
            "services": [_pick(s, SERVICE_KEYS) for s in checked["services"]],
        }
    )
    uses_mqtt = any(
        item["source"]["kind"] == SOURCE_MQTT for item in (*checked["ups"], *checked["pdus"])
    ) or any(s["agent"] for s in checked["services"])
    if uses_mqtt and "mqtt" not in checked:
        raise TopologyError("mqtt: a source or an agent uses MQTT, but no broker is configured")
    for index, service in enumerate(checked["services"]):
        if service["agent"] and "agent_secret" not in service:
            raise TopologyError(
                f"services[{index}] ({service['id']}).agent_secret: a host agent needs its "
                f"secret (at least {MIN_SECRET_LENGTH} characters), which signs its commands"
            )
        for key in ("wol_broadcast", "wol_port"):
            if key in service and "mac" not in service:
                raise TopologyError(
                    f"services[{index}] ({service['id']}).{key}: only used with a mac"
                )
    if "mqtt" in checked:
        _check_broker_tls(checked["mqtt"])
    for pdu in checked["pdus"]:
        source = pdu["source"]
        if source["kind"] != SOURCE_MODBUS:
            extra = sorted(n for n in source["outlets"] if not 1 <= n <= pdu["outlets"])
            if extra:
                raise TopologyError(
                    f"PDU {pdu['id']!r}: source names outlet(s) {extra} beyond its "
                    f"{pdu['outlets']} outlets"
                )
    ride_through_s, prior = planner_settings(checked.get("planner", {}))
    return SiteTopology(
        site=site,
        mqtt=checked.get("mqtt"),
        ups_sources={u["id"]: u["source"] for u in checked["ups"]},
        pdu_sources={p["id"]: p["source"] for p in checked["pdus"]},
        controls={
            s["id"]: ServiceControls(
                agent=s["agent"],
                agent_secret=s.get("agent_secret"),
                stop=_action(s.get("stop_action")),
                throttle=_action(s.get("throttle_action")),
                start=_action(s.get("start_action")),
                wake=_wake(s),
            )
            for s in checked["services"]
        },
        document=checked,
        ride_through_s=ride_through_s,
        outage_prior=prior,
    )


def _check_broker_tls(broker: Mapping[str, Any]) -> None:
    """Certificates only with TLS on, and each of them usable."""
    given = [key for key in (CA_CERT, CLIENT_CERT, CLIENT_KEY) if key in broker]
    if given and not broker["tls"]:
        raise TopologyError(f"mqtt.{given[0]}: only used with tls: true")
    try:
        check_tls_pem(broker.get(CA_CERT), broker.get(CLIENT_CERT), broker.get(CLIENT_KEY))
    except InvalidTlsPemError as error:
        raise TopologyError(f"mqtt.{error}") from None


def planner_settings(planner: Mapping[str, Any]) -> tuple[float, OutagePrior]:
    """The ride-through and the prior of a validated `planner` section; what it leaves out
    keeps the default."""
    return planner.get("ride_through_s", RIDE_THROUGH_S), OutagePrior(
        **{key: planner[key] for key in SITE_PRIOR_KEYS if key in planner}
    )


def _pick(item: Mapping[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    picked = {k: item[k] for k in keys if k in item}
    for key in ("outlets", "depends_on"):
        if isinstance(picked.get(key), list):
            picked[key] = list(picked[key])
    return picked


def load_yaml_document(text: str) -> dict[str, Any]:
    """A site document from YAML text (the bulk import), not yet validated; text past the
    bounds of `load_bounded_yaml` is refused."""
    try:
        document = load_bounded_yaml(text)
    except YamlBoundError as error:
        raise TopologyError(f"refused: {error}") from None
    except yaml.YAMLError as error:
        raise TopologyError(f"not valid YAML: {error}") from None
    if not isinstance(document, Mapping):
        raise TopologyError("a topology must be a mapping with ups, pdus and services")
    return dict(document)
