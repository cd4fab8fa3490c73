"""Config flow: a config entry is one site.

Setup asks for the site's name and its UPS: where it is read (Modbus TCP, MQTT, or entities Home
Assistant already has, such as the NUT integration's) and its published ratings; it tests the
connection before it creates anything. PDUs and services are added in the options flow, one by
one or as a whole YAML topology. Reconfiguration changes the UPS's connection; reauthentication
asks for new broker credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import voluptuous as vol
from homeassistant.config_entries import (
    ConfigEntry,
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlow,
)
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import selector
from homeassistant.util import slugify

from . import entry_topology
from .connection import (
    CannotConnectError,
    InvalidAuthError,
    TlsHandshakeError,
    async_test_modbus,
    async_test_mqtt,
)
from .const import CONF_SITE_NAME, CONF_TOPOLOGY, DOMAIN
from .drivers.mqtt_tls import CA_CERT, CLIENT_CERT, CLIENT_KEY, InvalidTlsPemError, check_tls_pem
from .engine.controller import MAX_RIDE_THROUGH_S
from .engine.model import TopologyError
from .engine.outage import OutagesSeen
from .mqtt_client_id import CONF_MQTT_CLIENT_ID, new_client_id
from .site_check import async_check_site
from .topology import (
    MAX_SUSTAINED_MEDIAN_S,
    MIN_SUSTAINED_MEDIAN_S,
    MODBUS_PDU_PROFILES,
    MODBUS_UPS_PROFILES,
    MQTT_OUTLET_PROFILES,
    MQTT_UPS_PROFILES,
    OPTION_KEYS,
    SOURCE_ENTITIES,
    SOURCE_MODBUS,
    SOURCE_MQTT,
    load_yaml_document,
    planner_settings,
)

UPS_ID = "ups"
# The MQTT profiles' one variable that says where a device publishes.
MQTT_UPS_VARIABLE = {"nut": "prefix", "power_allocation_ups": None}
MQTT_OUTLET_VARIABLE = {
    "tasmota": "topic",
    "shelly_gen2": "prefix",
    "power_allocation_outlet": None,
}

_NUMBER = selector.NumberSelector(
    selector.NumberSelectorConfig(min=0, step="any", mode=selector.NumberSelectorMode.BOX)
)


def _bounded(low: float, high: float, step: float, unit: str) -> selector.NumberSelector:
    return selector.NumberSelector(
        selector.NumberSelectorConfig(
            min=low,
            max=high,
            step=step,
            unit_of_measurement=unit,
            mode=selector.NumberSelectorMode.BOX,
        )
    )


def _choice(
    options: tuple[str, ...] | list[str], *, multiple: bool = False
) -> selector.SelectSelector:
    return selector.SelectSelector(
        selector.SelectSelectorConfig(
            options=list(options), multiple=multiple, mode=selector.SelectSelectorMode.DROPDOWN
        )
    )


def _entity(domain: str | list[str]) -> selector.EntitySelector:
    return selector.EntitySelector(selector.EntitySelectorConfig(domain=domain))


def _modbus_schema(profiles: tuple[str, ...], defaults: Mapping[str, Any]) -> vol.Schema:
    return vol.Schema(
        {
            vol.Required("host", default=defaults.get("host", vol.UNDEFINED)): str,
            vol.Required("port", default=defaults.get("port", 502)): vol.All(
                vol.Coerce(int), vol.Range(min=1, max=65535)
            ),
            vol.Required("unit_id", default=defaults.get("unit_id", 1)): vol.All(
                vol.Coerce(int), vol.Range(min=0, max=255)
            ),
            vol.Required("profile", default=defaults.get("profile", profiles[0])): _choice(
                profiles
            ),
        }
    )


_PEM = selector.TextSelector(selector.TextSelectorConfig(multiline=True))


def _broker_schema(defaults: Mapping[str, Any]) -> dict[vol.Marker, Any]:
    """The broker's fields; the client key is never shown again (left empty, it is kept)."""
    return {
        vol.Required("host", default=defaults.get("host", vol.UNDEFINED)): str,
        vol.Required("port", default=defaults.get("port", 1883)): vol.All(
            vol.Coerce(int), vol.Range(min=1, max=65535)
        ),
        vol.Optional("username", default=defaults.get("username", "")): str,
        vol.Optional("password", default=defaults.get("password", "")): selector.TextSelector(
            selector.TextSelectorConfig(type=selector.TextSelectorType.PASSWORD)
        ),
        vol.Required("tls", default=defaults.get("tls", False)): bool,
        vol.Optional(CA_CERT, default=defaults.get(CA_CERT, "")): _PEM,
        vol.Optional(CLIENT_CERT, default=defaults.get(CLIENT_CERT, "")): _PEM,
        vol.Optional(CLIENT_KEY, default=""): _PEM,
        vol.Required("base_topic", default=defaults.get("base_topic", "power_allocation")): str,
    }


def _broker(
    user_input: Mapping[str, Any], stored: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The broker as typed; an empty client key keeps the stored one for the same certificate."""
    broker = {k: user_input[k] for k in ("host", "port", "tls", "base_topic")}
    if user_input.get("username"):
        broker["username"] = user_input["username"]
        broker["password"] = user_input.get("password", "")
    for key in (CA_CERT, CLIENT_CERT, CLIENT_KEY):
        if user_input.get(key, "").strip():
            broker[key] = user_input[key].strip() + "\n"
    stored = stored or {}
    same_certificate = CLIENT_CERT in broker and stored.get(CLIENT_CERT) == broker[CLIENT_CERT]
    if same_certificate and CLIENT_KEY not in broker and CLIENT_KEY in stored:
        broker[CLIENT_KEY] = stored[CLIENT_KEY]
    return broker


def _broker_tls_errors(broker: Mapping[str, Any]) -> dict[str, str]:
    """Form errors for certificates given without TLS, or not usable."""
    if not broker["tls"]:
        given = [key for key in (CA_CERT, CLIENT_CERT, CLIENT_KEY) if key in broker]
        return {"tls": "certificates_need_tls"} if given else {}
    try:
        check_tls_pem(broker.get(CA_CERT), broker.get(CLIENT_CERT), broker.get(CLIENT_KEY))
    except InvalidTlsPemError as error:
        return {error.field: error.error}
    return {}


def _one_mains_entity(source: Mapping[str, Any]) -> bool:
    """Exactly one of the entities that say whether the UPS is on battery."""
    return bool(source.get("on_battery")) != bool(source.get("status"))


async def _topology_error(hass: HomeAssistant, document: Mapping[str, Any]) -> str | None:
    """Why setup would refuse the site document, or None."""
    try:
        await async_check_site(hass, document)
    except TopologyError as error:
        return str(error)
    return None


async def _test_source(flow: Any, kind: str, source: Mapping[str, Any], broker: Any) -> str | None:
    """The error key of a failed connection test, or None."""
    try:
        if kind == SOURCE_MODBUS:
            await async_test_modbus(flow.hass, UPS_ID, source)
        elif kind == SOURCE_MQTT:
            await async_test_mqtt(flow.hass, broker)
        elif flow.hass.states.get(source.get("on_battery") or source.get("status")) is None:
            return "entity_not_found"
    except InvalidAuthError:
        return "invalid_auth"
    except TlsHandshakeError:
        return "tls_handshake_failed"
    except CannotConnectError:
        return "cannot_connect"
    return None


class PowerAllocationConfigFlow(ConfigFlow, domain=DOMAIN):
    """Creates a site."""

    VERSION = 1
    # 1.2: the entry keeps its own random MQTT client id.
    MINOR_VERSION = 2

    def __init__(self) -> None:
        self._name = ""
        self._source: dict[str, Any] = {}
        self._broker: dict[str, Any] | None = None
        self._error = ""

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> PowerAllocationOptionsFlow:
        """PDUs and services."""
        return PowerAllocationOptionsFlow()

    def _save_topology(
        self, entry: ConfigEntry, topology: dict[str, Any], reason: str
    ) -> ConfigFlowResult:
        """Store the new topology and reload the site once.

        A loaded entry whose data changed is reloaded by its update listener; otherwise (a site
        that failed to set up, as when its broker refused the old credentials, or nothing
        changed) it is reloaded here. `async_update_reload_and_abort` would reload a loaded entry
        a second time, which Home Assistant 2026.11 warns is going away.
        """
        changed = self.hass.config_entries.async_update_entry(
            entry, data={**entry.data, CONF_TOPOLOGY: topology}
        )
        if not changed or entry.state is not ConfigEntryState.LOADED:
            self.hass.config_entries.async_schedule_reload(entry.entry_id)
        return self.async_abort(reason=reason)

    def _mqtt_defaults(self) -> dict[str, Any]:
        """Home Assistant's own MQTT broker settings, when that integration is set up."""
        for entry in self.hass.config_entries.async_entries("mqtt"):
            data = entry.data
            if "broker" in data:
                return {
                    "host": data["broker"],
                    "port": data.get("port", 1883),
                    "username": data.get("username", ""),
                    "password": data.get("password", ""),
                }
        return {}

    def _source_identity(self, source: Mapping[str, Any], broker: Mapping[str, Any] | None) -> str:
        if source["kind"] == SOURCE_MODBUS:
            return f"modbus:{source['host']}:{source['port']}:{source['unit_id']}"
        if source["kind"] == SOURCE_MQTT and broker is not None:
            return f"mqtt:{broker['host']}:{broker['port']}:{sorted(source['variables'].items())}"
        return f"entities:{source.get('on_battery') or source.get('status')}"

    def _already_used(self, identity: str, ignore: ConfigEntry | None = None) -> bool:
        for entry in self._async_current_entries(include_ignore=False):
            if entry is ignore:
                continue
            topology = entry.data.get(CONF_TOPOLOGY, {})
            for ups in topology.get("ups", []):
                if self._source_identity(ups["source"], topology.get("mqtt")) == identity:
                    return True
        return False

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The site's name and where its UPS is read."""
        errors: dict[str, str] = {}
        if user_input is not None:
            name = user_input[CONF_SITE_NAME].strip()
            if not any(ch.isalnum() for ch in name):
                errors[CONF_SITE_NAME] = "invalid_name"
            else:
                await self.async_set_unique_id(slugify(name))
                self._abort_if_unique_id_configured()
                self._name = name
                step = getattr(self, f"async_step_ups_{user_input['source']}")
                result: ConfigFlowResult = await step()
                return result
        return self.async_show_form(
            step_id="user",
            data_schema=vol.Schema(
                {
                    vol.Required(CONF_SITE_NAME): str,
                    vol.Required("source", default=SOURCE_MODBUS): selector.SelectSelector(
                        selector.SelectSelectorConfig(
                            options=[SOURCE_MODBUS, SOURCE_MQTT, SOURCE_ENTITIES],
                            translation_key="source",
                        )
                    ),
                }
            ),
            errors=errors,
        )

    async def _check_and_continue(
        self, source: dict[str, Any], broker: dict[str, Any] | None
    ) -> dict[str, str]:
        """Test the source; on success remember it for the ratings step."""
        if self._already_used(self._source_identity(source, broker)):
            return {"base": "already_used"}
        if broker is not None and (tls_errors := _broker_tls_errors(broker)):
            return tls_errors
        error = await _test_source(self, source["kind"], source, broker)
        if error is not None:
            return {"base": error}
        self._source, self._broker = source, broker
        return {}

    async def async_step_ups_modbus(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A UPS on Modbus TCP (an APC network card)."""
        errors: dict[str, str] = {}
        if user_input is not None:
            source = {"kind": SOURCE_MODBUS, **user_input, "timeout_s": 1.0}
            errors = await self._check_and_continue(source, None)
            if not errors:
                return await self.async_step_ratings()
        return self.async_show_form(
            step_id="ups_modbus",
            data_schema=self.add_suggested_values_to_schema(
                _modbus_schema(MODBUS_UPS_PROFILES, {}), user_input or {}
            ),
            errors=errors,
        )

    async def async_step_ups_mqtt(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A UPS publishing on MQTT (NUT-style topics or the project's own schema)."""
        errors: dict[str, str] = {}
        if user_input is not None:
            profile = user_input["profile"]
            variable = MQTT_UPS_VARIABLE[profile]
            variables = {}
            if variable is not None:
                if not user_input.get("topic_prefix"):
                    errors["topic_prefix"] = "topic_required"
                variables[variable] = user_input.get("topic_prefix", "")
            if not errors:
                source = {"kind": SOURCE_MQTT, "profile": profile, "variables": variables}
                errors = await self._check_and_continue(source, _broker(user_input))
                if not errors:
                    return await self.async_step_ratings()
        defaults = {**self._mqtt_defaults(), **(user_input or {})}
        return self.async_show_form(
            step_id="ups_mqtt",
            data_schema=vol.Schema(
                {
                    **_broker_schema(defaults),
                    vol.Required("profile", default=defaults.get("profile", "nut")): _choice(
                        MQTT_UPS_PROFILES
                    ),
                    vol.Optional("topic_prefix", default=defaults.get("topic_prefix", "")): str,
                }
            ),
            errors=errors,
        )

    async def async_step_ups_entities(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A UPS Home Assistant already has, e.g. through the NUT integration."""
        errors: dict[str, str] = {}
        if user_input is not None:
            if not _one_mains_entity(user_input):
                errors["base"] = "one_mains_entity"
            else:
                source = {"kind": SOURCE_ENTITIES, **{k: v for k, v in user_input.items() if v}}
                errors = await self._check_and_continue(source, None)
                if not errors:
                    return await self.async_step_ratings()
        return self.async_show_form(
            step_id="ups_entities",
            data_schema=vol.Schema(
                {
                    vol.Optional("on_battery"): _entity("binary_sensor"),
                    vol.Optional("status"): _entity("sensor"),
                    vol.Optional("runtime"): _entity("sensor"),
                    vol.Optional("charge"): _entity("sensor"),
                    vol.Optional("load"): _entity("sensor"),
                }
            ),
            errors=errors,
        )

    async def async_step_ratings(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The UPS's published ratings, which fix its battery curve until it is learnt."""
        errors: dict[str, str] = {}
        if user_input is not None:
            ups = {"id": UPS_ID, **user_input, "source": self._source}
            document: dict[str, Any] = {"ups": [ups]}
            if self._broker is not None:
                document["mqtt"] = self._broker
            problem = await _topology_error(self.hass, document)
            if problem is not None:
                errors["base"] = "invalid_topology"
                self._error = problem
            else:
                return self.async_create_entry(
                    title=self._name,
                    data={
                        CONF_SITE_NAME: self._name,
                        CONF_TOPOLOGY: document,
                        CONF_MQTT_CLIENT_ID: new_client_id(),
                    },
                    options={"pdus": [], "services": []},
                )
        return self.async_show_form(
            step_id="ratings",
            data_schema=vol.Schema(
                {
                    vol.Required("rated_w", default=1000): _NUMBER,
                    vol.Required("capacity_wh", default=864): _NUMBER,
                    vol.Required("runtime_full_load_s", default=360): _NUMBER,
                    vol.Required("peukert_k", default=1.4): _NUMBER,
                    vol.Required("efficiency", default=0.9): _NUMBER,
                }
            ),
            errors=errors,
            description_placeholders={"error": self._error},
        )

    # --- reconfigure and reauth -------------------------------------------------------------

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change where the UPS is read (host, port, broker...), tested before it is saved."""
        entry = self._get_reconfigure_entry()
        topology = entry.data[CONF_TOPOLOGY]
        ups = topology["ups"][0]
        kind = ups["source"]["kind"]
        errors: dict[str, str] = {}
        if user_input is not None:
            broker = topology.get("mqtt")
            if kind == SOURCE_MODBUS:
                source = {**ups["source"], **user_input}
            elif kind == SOURCE_MQTT:
                broker = _broker(user_input, topology.get("mqtt"))
                source = ups["source"]
            else:
                source = {"kind": SOURCE_ENTITIES, **{k: v for k, v in user_input.items() if v}}
            new_topology = {**topology, "ups": [{**ups, "source": source}, *topology["ups"][1:]]}
            if broker is not None:
                new_topology["mqtt"] = broker
            # What is saved must still be a site the integration can set up.
            problem = await _topology_error(self.hass, new_topology)
            if kind == SOURCE_ENTITIES and not _one_mains_entity(source):
                errors["base"] = "one_mains_entity"
            elif broker is not None and (tls_errors := _broker_tls_errors(broker)):
                errors = tls_errors
            elif problem is not None:
                errors["base"] = "invalid_topology"
                self._error = problem
            elif self._already_used(self._source_identity(source, broker), ignore=entry):
                errors["base"] = "already_used"
            else:
                error = await _test_source(self, kind, source, broker)
                if error is not None:
                    errors["base"] = error
            if not errors:
                return self._save_topology(entry, new_topology, "reconfigure_successful")
        if kind == SOURCE_MODBUS:
            schema = _modbus_schema(MODBUS_UPS_PROFILES, ups["source"])
        elif kind == SOURCE_MQTT:
            schema = vol.Schema(_broker_schema(topology.get("mqtt", {})))
        else:
            schema = self.add_suggested_values_to_schema(
                vol.Schema(
                    {
                        vol.Optional("on_battery"): _entity("binary_sensor"),
                        vol.Optional("status"): _entity("sensor"),
                        vol.Optional("runtime"): _entity("sensor"),
                        vol.Optional("charge"): _entity("sensor"),
                        vol.Optional("load"): _entity("sensor"),
                    }
                ),
                ups["source"],
            )
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=schema,
            errors=errors,
            description_placeholders={"error": self._error},
        )

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """The broker refused the stored credentials (at setup, or while the site ran)."""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """New broker credentials, tested against the broker before they are saved; then the
        site reloads with them. Refused, nothing is saved and the form asks again."""
        entry = self._get_reauth_entry()
        topology = entry.data[CONF_TOPOLOGY]
        stored = topology.get("mqtt", {})
        errors: dict[str, str] = {}
        if user_input is not None:
            new_topology = {**topology, "mqtt": {**topology.get("mqtt", {}), **user_input}}
            problem = await _topology_error(self.hass, new_topology)
            if problem is not None:
                errors["base"] = "invalid_topology"
                self._error = problem
            else:
                error = await _test_source(self, SOURCE_MQTT, {}, new_topology["mqtt"])
                if error is None:
                    return self._save_topology(entry, new_topology, "reauth_successful")
                errors["base"] = error
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=vol.Schema(
                {
                    # The stored username is suggested; the password never is.
                    vol.Required(
                        "username", description={"suggested_value": stored.get("username")}
                    ): str,
                    vol.Required("password"): selector.TextSelector(
                        selector.TextSelectorConfig(type=selector.TextSelectorType.PASSWORD)
                    ),
                }
            ),
            errors=errors,
            description_placeholders={
                "error": self._error,
                "site": entry.title,
                "broker": f"{stored.get('host')}:{stored.get('port')}",
            },
        )


class PowerAllocationOptionsFlow(OptionsFlow):
    """Adds and removes PDUs and services, imports them as YAML, or sets the plan's tunables."""

    def __init__(self) -> None:
        self._pdu: dict[str, Any] = {}
        self._error = ""

    def _document(self) -> dict[str, Any]:
        return entry_topology(self.config_entry)

    async def _save(self, document: dict[str, Any]) -> ConfigFlowResult | None:
        """Check the whole site as setup would; None (with the error kept) when it is not valid:
        a site stored that setup then refuses could not be set up again to repair it."""
        try:
            checked = (await async_check_site(self.hass, document))[0].document
        except TopologyError as error:
            self._error = str(error)
            return None
        return self.async_create_entry(data={k: checked[k] for k in OPTION_KEYS if k in checked})

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """What to change."""
        return self.async_show_menu(
            step_id="init",
            menu_options=["add_pdu", "add_service", "remove", "import_topology", "planner"],
        )

    async def async_step_planner(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The plan's tunables: the ride-through, and how long this site's outages tend to last.

        The form speaks in percent and minutes; the options keep the topology's ratio and seconds.
        """
        options = self.config_entry.options
        planner = options.get("planner", {})
        if user_input is not None:
            # The selectors keep each value in range; nothing else of the site changes.
            planner = {
                **planner,
                "ride_through_s": float(user_input["ride_through_s"]),
                "momentary_ratio": float(user_input["momentary_pct"]) / 100.0,
                "sustained_median_s": float(user_input["sustained_median_min"]) * 60.0,
            }
            return self.async_create_entry(data={**options, "planner": planner})
        ride_through_s, prior = planner_settings(planner)
        return self.async_show_form(
            step_id="planner",
            description_placeholders=self._outages_seen(),
            data_schema=vol.Schema(
                {
                    vol.Required("ride_through_s", default=ride_through_s): _bounded(
                        0, MAX_RIDE_THROUGH_S, 10, "s"
                    ),
                    vol.Required(
                        "momentary_pct", default=round(prior.momentary_ratio * 100.0, 1)
                    ): _bounded(0, 100, 1, "%"),
                    vol.Required(
                        "sustained_median_min", default=round(prior.sustained_median_s / 60.0, 1)
                    ): _bounded(
                        MIN_SUSTAINED_MEDIAN_S / 60.0, MAX_SUSTAINED_MEDIAN_S / 60.0, 1, "min"
                    ),
                }
            ),
        )

    def _outages_seen(self) -> dict[str, str]:
        """The site's own outages so far, beside the settings they inform (none when unloaded)."""
        coordinator = getattr(self.config_entry, "runtime_data", None)
        seen = OutagesSeen.of(coordinator.control.decider.outages_s if coordinator else [])
        median = seen.sustained_median_s
        return {
            "outages": str(seen.count),
            "momentary": str(seen.momentary),
            "sustained_median_min": "-" if median is None else f"{median / 60.0:.0f}",
        }

    async def async_step_add_pdu(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A PDU: its id, limit, outlet count, and where it is read."""
        errors: dict[str, str] = {}
        document = self._document()
        if user_input is not None:
            if any(p["id"] == user_input["id"] for p in document["pdus"]):
                errors["id"] = "duplicate_id"
            else:
                self._pdu = {
                    "id": user_input["id"],
                    "ups": user_input["ups"],
                    "limit_w": user_input["limit_w"],
                    "outlets": int(user_input["outlets"]),
                }
                step = getattr(self, f"async_step_pdu_{user_input['source']}")
                result: ConfigFlowResult = await step()
                return result
        return self.async_show_form(
            step_id="add_pdu",
            data_schema=vol.Schema(
                {
                    vol.Required("id"): str,
                    vol.Required("ups", default=document["ups"][0]["id"]): _choice(
                        [u["id"] for u in document["ups"]]
                    ),
                    vol.Required("limit_w", default=1800): _NUMBER,
                    vol.Required("outlets", default=8): vol.All(
                        vol.Coerce(int), vol.Range(min=1, max=96)
                    ),
                    vol.Required("source", default=SOURCE_MODBUS): selector.SelectSelector(
                        selector.SelectSelectorConfig(
                            options=[SOURCE_MODBUS, SOURCE_MQTT, SOURCE_ENTITIES],
                            translation_key="source",
                        )
                    ),
                }
            ),
            errors=errors,
        )

    async def _add_pdu(self, source: dict[str, Any]) -> ConfigFlowResult | None:
        document = self._document()
        document["pdus"].append({**self._pdu, "source": source})
        return await self._save(document)

    async def async_step_pdu_modbus(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A switched, metered PDU on Modbus TCP, tested before it is added."""
        errors: dict[str, str] = {}
        if user_input is not None:
            source = {"kind": SOURCE_MODBUS, **user_input, "timeout_s": 1.0}
            try:
                await async_test_modbus(
                    self.hass, self._pdu["id"], {**source, "outlet_count": self._pdu["outlets"]}
                )
            except CannotConnectError:
                errors["base"] = "cannot_connect"
            else:
                result = await self._add_pdu(source)
                if result is not None:
                    return result
                errors["base"] = "invalid_topology"
        return self.async_show_form(
            step_id="pdu_modbus",
            data_schema=self.add_suggested_values_to_schema(
                _modbus_schema(MODBUS_PDU_PROFILES, {}), user_input or {}
            ),
            errors=errors,
            description_placeholders={"error": self._error},
        )

    async def async_step_pdu_mqtt(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Smart plugs on MQTT: one device (topic or prefix) per outlet, in outlet order."""
        errors: dict[str, str] = {}
        if user_input is not None:
            profile = user_input["profile"]
            names = [n.strip() for n in user_input.get("devices", "").split(",") if n.strip()]
            variable = MQTT_OUTLET_VARIABLE[profile]
            if variable is not None and len(names) != self._pdu["outlets"]:
                errors["devices"] = "device_count"
            else:
                outlets = {
                    n: ({variable: names[n - 1]} if variable is not None else {})
                    for n in range(1, self._pdu["outlets"] + 1)
                }
                if profile == "shelly_gen2":
                    outlets = {n: {"prefix": names[n - 1], "switch": 0} for n in outlets}
                result = await self._add_pdu(
                    {"kind": SOURCE_MQTT, "profile": profile, "outlets": outlets}
                )
                if result is not None:
                    return result
                errors["base"] = "invalid_topology"
        return self.async_show_form(
            step_id="pdu_mqtt",
            data_schema=vol.Schema(
                {
                    vol.Required("profile", default="tasmota"): _choice(MQTT_OUTLET_PROFILES),
                    vol.Optional("devices", default=""): str,
                }
            ),
            errors=errors,
            description_placeholders={"error": self._error, "outlets": str(self._pdu["outlets"])},
        )

    async def async_step_pdu_entities(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Smart plugs Home Assistant already has: switches and power sensors, in outlet order."""
        errors: dict[str, str] = {}
        if user_input is not None:
            switches = user_input.get("switches", [])
            sensors = user_input.get("power_sensors", [])
            count = self._pdu["outlets"]
            if len(switches) > count or len(sensors) > count or not (switches or sensors):
                errors["base"] = "entity_count"
            else:
                outlets: dict[int, dict[str, str]] = {}
                for n, entity_id in enumerate(switches, start=1):
                    outlets.setdefault(n, {})["switch"] = entity_id
                for n, entity_id in enumerate(sensors, start=1):
                    outlets.setdefault(n, {})["power"] = entity_id
                result = await self._add_pdu({"kind": SOURCE_ENTITIES, "outlets": outlets})
                if result is not None:
                    return result
                errors["base"] = "invalid_topology"
        return self.async_show_form(
            step_id="pdu_entities",
            data_schema=vol.Schema(
                {
                    vol.Optional("switches"): selector.EntitySelector(
                        selector.EntitySelectorConfig(
                            domain=["switch", "light", "input_boolean"], multiple=True
                        )
                    ),
                    vol.Optional("power_sensors"): selector.EntitySelector(
                        selector.EntitySelectorConfig(
                            domain="sensor", device_class="power", multiple=True
                        )
                    ),
                }
            ),
            errors=errors,
            description_placeholders={"error": self._error, "outlets": str(self._pdu["outlets"])},
        )

    async def async_step_add_service(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A service: priority, outlets, dependencies, timings and how to stop and start it."""
        errors: dict[str, str] = {}
        document = self._document()
        if user_input is not None:
            service: dict[str, Any] = {
                "id": user_input["id"],
                "priority": user_input["priority"],
                "outlets": user_input["outlets"],
                "depends_on": user_input.get("depends_on", []),
                "shutdown_s": user_input["shutdown_s"],
                "startup_s": user_input["startup_s"],
                "idle_w": user_input["idle_w"],
                "agent": user_input["agent"],
            }
            if user_input.get("agent_secret"):
                service["agent_secret"] = user_input["agent_secret"]
            if user_input.get("mac"):
                service["mac"] = user_input["mac"]
            if user_input.get("throttle_min_w"):
                service["throttle"] = {"min_w": user_input["throttle_min_w"]}
            for key in ("stop_action", "throttle_action", "start_action"):
                if user_input.get(key):
                    service[key] = {"action": user_input[key]}
            document["services"].append(service)
            result = await self._save(document)
            if result is not None:
                return result
            errors["base"] = "invalid_topology"
        outlets = [f"{p['id']}/{n}" for p in document["pdus"] for n in range(1, p["outlets"] + 1)]
        if not outlets:
            return self.async_abort(reason="no_pdus")
        return self.async_show_form(
            step_id="add_service",
            data_schema=vol.Schema(
                {
                    vol.Required("id"): str,
                    vol.Required("priority", default="medium"): selector.SelectSelector(
                        selector.SelectSelectorConfig(
                            options=["critical", "high", "medium", "low"],
                            translation_key="priority",
                        )
                    ),
                    vol.Required("outlets"): _choice(outlets, multiple=True),
                    vol.Optional("depends_on"): _choice(
                        [s["id"] for s in document["services"]] or [""], multiple=True
                    ),
                    vol.Required("shutdown_s", default=60): _NUMBER,
                    vol.Required("startup_s", default=60): _NUMBER,
                    vol.Required("idle_w", default=0): _NUMBER,
                    vol.Optional("throttle_min_w"): _NUMBER,
                    vol.Required("agent", default=False): bool,
                    vol.Optional("agent_secret"): selector.TextSelector(
                        selector.TextSelectorConfig(type=selector.TextSelectorType.PASSWORD)
                    ),
                    vol.Optional("stop_action"): str,
                    vol.Optional("throttle_action"): str,
                    vol.Optional("start_action"): str,
                    vol.Optional("mac"): str,
                }
            ),
            errors=errors,
            description_placeholders={"error": self._error},
        )

    async def async_step_remove(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Remove PDUs and services; what is left must still be a valid site."""
        errors: dict[str, str] = {}
        document = self._document()
        if user_input is not None:
            gone = set(user_input.get("items", []))
            document["pdus"] = [p for p in document["pdus"] if f"pdu:{p['id']}" not in gone]
            document["services"] = [
                s for s in document["services"] if f"service:{s['id']}" not in gone
            ]
            result = await self._save(document)
            if result is not None:
                return result
            errors["base"] = "invalid_topology"
        items = [f"pdu:{p['id']}" for p in document["pdus"]] + [
            f"service:{s['id']}" for s in document["services"]
        ]
        if not items:
            return self.async_abort(reason="nothing_to_remove")
        return self.async_show_form(
            step_id="remove",
            data_schema=vol.Schema({vol.Optional("items"): _choice(items, multiple=True)}),
            errors=errors,
            description_placeholders={"error": self._error},
        )

    async def async_step_import_topology(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """PDUs and services as YAML, the planner's settings too: replaces what it gives."""
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                imported = load_yaml_document(user_input["topology"])
            except TopologyError as error:
                self._error = str(error)
                errors["base"] = "invalid_topology"
            else:
                if set(imported) - set(OPTION_KEYS):
                    # UPS units and the broker are the entry's: changed by reconfiguring it
                    # or by the load_topology action.
                    errors["base"] = "only_pdus_and_services"
                else:
                    document = self._document()
                    document["pdus"] = imported.get("pdus", [])
                    document["services"] = imported.get("services", [])
                    # Left out, the planner's settings stay as they are.
                    if "planner" in imported:
                        document["planner"] = imported["planner"]
                    result = await self._save(document)
                    if result is not None:
                        return result
                    errors["base"] = "invalid_topology"
        return self.async_show_form(
            step_id="import_topology",
            data_schema=vol.Schema(
                {
                    vol.Required("topology"): selector.TextSelector(
                        selector.TextSelectorConfig(multiline=True)
                    )
                }
            ),
            errors=errors,
            description_placeholders={"error": self._error},
        )
