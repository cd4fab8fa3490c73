"""The simulated site on MQTT: its telemetry in one profile, and that profile's commands obeyed.

What each bridge profile speaks (`P` is the prefix; see docs/devices-mqtt.md for every payload):

| profile            | outlets                                  | UPS units          | services  |
| ------------------ | ---------------------------------------- | ------------------ | --------- |
| `tasmota`          | a Tasmota plug each, topic `P_<pdu>_<n>` | NUT, `P/nut/<ups>` | own agent |
| `shelly_gen2`      | a Shelly per PDU, prefix `P/<pdu>`, switch `<n>-1` | NUT      | own agent |
| `nut`              | own schema, base `P`                     | NUT, `P/nut/<ups>` | own agent |
| `power_allocation` | own schema, base `P`                     | own schema         | own agent |

Every service gets an own-schema host agent at `P/agent/<service>`: it reports the service's draw
and carries out throttle / shutdown / start, signed with the agent's secret (`agent_secrets`, as
in the site topology: `agent_secrets_from_topology`); it is offline while its host has no power.
Like a real agent it checks each command with `command_auth.CommandVerifier` and refuses, with an
`ok: false` acknowledgement and without acting, one that is unsigned, forged, stale or replayed;
an agent given no secret refuses every command. NUT topics are read only. `devices_for` gives the
`MqttDevice`s an `MqttDriver` (with `base_topic=P`) needs to read this bridge.

paho's network thread only receives; every command is handed to the event loop, which owns the
`SimulatedSite`, and is answered from there.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from custom_components.power_allocation.drivers.bounded_yaml import load_bounded_yaml
from custom_components.power_allocation.drivers.command_auth import (
    CommandRejectedError,
    CommandVerifier,
)
from custom_components.power_allocation.drivers.mqtt_profile import MqttDevice
from custom_components.power_allocation.engine.model import Site

from .site import ServiceMode, SimulatedSite, SiteSnapshot, UpsState

BRIDGE_PROFILES = ("tasmota", "shelly_gen2", "nut", "power_allocation")
CONNECT_TIMEOUT_S = 10.0
NOMINAL_VOLTAGE_V = 230.0

type Handler = Callable[[bytes], None]


def tasmota_topic(prefix: str, outlet_id: str) -> str:
    """A plug's Tasmota topic: Tasmota topics are one level, so `/` becomes `_`."""
    return f"{prefix}_{outlet_id.replace('/', '_')}"


def devices_for(site: Site, profile: str, prefix: str) -> tuple[MqttDevice, ...]:
    """The driver configuration that reads and commands a bridge speaking `profile`."""
    if profile not in BRIDGE_PROFILES:
        raise ValueError(f"unknown bridge profile {profile!r}; one of {BRIDGE_PROFILES}")
    devices: list[MqttDevice] = []
    for outlet_id, outlet in site.outlet_by_id.items():
        match profile:
            case "tasmota":
                variables: dict[str, str | int] = {"topic": tasmota_topic(prefix, outlet_id)}
                devices.append(MqttDevice("tasmota", outlet_id, variables))
            case "shelly_gen2":
                variables = {"prefix": f"{prefix}/{outlet.pdu}", "switch": outlet.number - 1}
                devices.append(MqttDevice("shelly_gen2", outlet_id, variables))
            case _:
                devices.append(MqttDevice("power_allocation_outlet", outlet_id, {}))
    for ups in site.ups:
        if profile == "power_allocation":
            devices.append(MqttDevice("power_allocation_ups", ups.id, {}))
        else:
            devices.append(MqttDevice("nut", ups.id, {"prefix": f"{prefix}/nut/{ups.id}"}))
    devices.extend(MqttDevice("power_allocation_agent", s.id, {}) for s in site.services)
    return tuple(devices)


def agent_secrets_from_topology(path: Path) -> dict[str, str]:
    """Each host agent's secret, as a site topology file (docs/demo-topology.yaml) gives it to
    the integration: service id -> `agent_secret`."""
    document = load_bounded_yaml(path.read_text(encoding="utf-8"))
    if not isinstance(document, Mapping):
        raise ValueError(f"{path}: a topology must be a mapping")
    return {
        service["id"]: service["agent_secret"]
        for service in document.get("services", [])
        if isinstance(service, Mapping) and "agent_secret" in service
    }


def nut_status(ups: UpsState, mains_on: bool) -> str:
    """`ups.status` as NUT writes it: OL/OB, LB, CHRG/DISCHRG."""
    codes = ["OL" if ups.online else "OB"]
    if ups.low_battery:
        codes.append("LB")
    if ups.on_battery:
        codes.append("DISCHRG")
    elif mains_on and ups.soc_pct < 100.0:
        codes.append("CHRG")
    return " ".join(codes)


class MqttBridge:
    """Publishes a `SimulatedSite` on an MQTT broker and obeys commands sent to it."""

    def __init__(
        self,
        site: SimulatedSite,
        host: str,
        port: int,
        profile: str,
        prefix: str,
        interval_s: float = 1.0,
        *,
        agent_secrets: Mapping[str, str],
    ) -> None:
        """`interval_s`: least wall-clock time between two telemetry rounds (0: every call);
        `agent_secrets`: service id -> the secret its agent checks commands with."""
        if profile not in BRIDGE_PROFILES:
            raise ValueError(f"unknown bridge profile {profile!r}; one of {BRIDGE_PROFILES}")
        self._verifiers = {
            service_id: CommandVerifier(secret) for service_id, secret in agent_secrets.items()
        }
        self.site = site
        self.host = host
        self.port = port
        self.profile = profile
        self.prefix = prefix
        self.interval_s = interval_s
        self._handlers: dict[str, Handler] = {}
        self._register_handlers()
        self._subscribed = threading.Event()
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_round_s = -math.inf

    @property
    def command_topics(self) -> tuple[str, ...]:
        """Every topic the bridge obeys."""
        return tuple(self._handlers)

    async def start(self) -> None:
        """Connect, subscribe to the command topics and announce every device online."""
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"simulator-{self.prefix}")
        client.suppress_exceptions = True
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 10)
        self._client = client
        client.connect_async(self.host, self.port)
        client.loop_start()
        subscribed = await self._loop.run_in_executor(
            None, self._subscribed.wait, CONNECT_TIMEOUT_S
        )
        if not subscribed:
            await self.stop()
            raise ConnectionError(f"no MQTT broker at {self.host}:{self.port}")

    async def stop(self) -> None:
        """Announce every device offline (retained), disconnect and join paho's thread."""
        client, self._client = self._client, None
        if client is None:
            return
        if client.is_connected():
            infos = [
                client.publish(topic, offline, qos=1, retain=True)
                for topic, _, offline in self._availability()
            ]
            await asyncio.get_running_loop().run_in_executor(
                None, _wait_published, infos, CONNECT_TIMEOUT_S
            )
        client.disconnect()
        await asyncio.get_running_loop().run_in_executor(None, client.loop_stop)

    def publish(self) -> list[str]:
        """One telemetry round, unless the last one was less than `interval_s` ago; the topics
        it published (so that a reader can tell when it has had the whole round)."""
        now_s = time.monotonic()
        client = self._client
        if client is None or now_s - self._last_round_s < self.interval_s:
            return []
        self._last_round_s = now_s
        snapshot = self.site.snapshot()
        topics = []
        for topic, payload in self._telemetry(snapshot):
            client.publish(topic, payload, qos=0)
            topics.append(topic)
        return topics

    # --- what is published ------------------------------------------------------------------

    def _availability(self) -> list[tuple[str, str, str]]:
        """(topic, online word, offline word) of every device."""
        site = self.site.scenario.site
        words: list[tuple[str, str, str]] = []
        match self.profile:
            case "tasmota":
                words += [
                    (f"tele/{tasmota_topic(self.prefix, o)}/LWT", "Online", "Offline")
                    for o in site.outlet_by_id
                ]
            case "shelly_gen2":
                words += [(f"{self.prefix}/{p.id}/online", "true", "false") for p in site.pdus]
            case _:
                words += [
                    (f"{self.prefix}/outlet/{o}/availability", "online", "offline")
                    for o in site.outlet_by_id
                ]
        for ups in site.ups:
            words.append((f"{self._ups_root(ups.id)}/availability", "online", "offline"))
        return words

    def _ups_root(self, ups_id: str) -> str:
        if self.profile == "power_allocation":
            return f"{self.prefix}/ups/{ups_id}"
        return f"{self.prefix}/nut/{ups_id}"

    def _telemetry(self, snapshot: SiteSnapshot) -> list[tuple[str, str]]:
        messages: list[tuple[str, str]] = []
        for outlet_id, outlet in snapshot.outlets.items():
            power_w = round(outlet.power_w, 1)
            match self.profile:
                case "tasmota":
                    topic = tasmota_topic(self.prefix, outlet_id)
                    energy = {"Power": power_w, "Voltage": NOMINAL_VOLTAGE_V}
                    messages.append((f"tele/{topic}/SENSOR", json.dumps({"ENERGY": energy})))
                    state = {"POWER": "ON" if outlet.is_on else "OFF"}
                    messages.append((f"tele/{topic}/STATE", json.dumps(state)))
                case "shelly_gen2":
                    pdu, number = outlet_id.split("/")
                    status = {
                        "id": int(number) - 1,
                        "source": "timer",
                        "output": outlet.is_on,
                        "apower": power_w,
                        "voltage": NOMINAL_VOLTAGE_V,
                    }
                    topic = f"{self.prefix}/{pdu}/status/switch:{int(number) - 1}"
                    messages.append((topic, json.dumps(status)))
                case _:
                    telemetry = {"power_w": power_w, "on": outlet.is_on}
                    topic = f"{self.prefix}/outlet/{outlet_id}/telemetry"
                    messages.append((topic, json.dumps(telemetry)))
        for ups_id, ups in snapshot.ups.items():
            root = self._ups_root(ups_id)
            messages.append(
                (f"{root}/availability", "online" if ups.alive else "offline")
            )  # a dead UPS takes its network card with it
            if not ups.alive:
                continue
            if self.profile == "power_allocation":
                telemetry = {
                    "on_battery": ups.on_battery,
                    "online": ups.online,
                    "low_battery": ups.low_battery,
                    "runtime_s": round(ups.runtime_s),
                    "soc_pct": round(ups.soc_pct, 1),
                    "output_w": round(ups.output_w, 1),
                    "output_voltage_v": ups.output_voltage_v,
                }
                messages.append((f"{root}/telemetry", json.dumps(telemetry)))
            else:
                messages += [
                    (f"{root}/ups.status", nut_status(ups, snapshot.mains_on)),
                    (f"{root}/battery.charge", f"{ups.soc_pct:.1f}"),
                    (f"{root}/battery.runtime", f"{ups.runtime_s:.0f}"),
                    (f"{root}/ups.realpower", f"{ups.output_w:.1f}"),
                    (f"{root}/output.voltage", f"{ups.output_voltage_v:.1f}"),
                ]
        for service_id, service in snapshot.services.items():
            root = f"{self.prefix}/agent/{service_id}"
            has_power = service.mode is not ServiceMode.UNPOWERED
            messages.append((f"{root}/availability", "online" if has_power else "offline"))
            if has_power:
                messages.append(
                    (f"{root}/telemetry", json.dumps({"power_w": round(service.power_w, 1)}))
                )
        return messages

    # --- what is obeyed ---------------------------------------------------------------------

    def _register_handlers(self) -> None:
        site = self.site.scenario.site
        match self.profile:
            case "tasmota":
                for outlet_id in site.outlet_by_id:
                    topic = tasmota_topic(self.prefix, outlet_id)
                    handler = self._tasmota_handler(topic, outlet_id)
                    self._handlers[f"cmnd/{topic}/POWER"] = handler
            case "shelly_gen2":
                for pdu in site.pdus:
                    self._handlers[f"{self.prefix}/{pdu.id}/rpc"] = self._shelly_handler(pdu.id)
            case _:
                for outlet_id in site.outlet_by_id:
                    root = f"{self.prefix}/outlet/{outlet_id}"
                    self._handlers[f"{root}/command"] = self._own_outlet_handler(root, outlet_id)
        for service in site.services:
            root = f"{self.prefix}/agent/{service.id}"
            self._handlers[f"{root}/command"] = self._agent_handler(root, service.id)

    def _reply(self, topic: str, payload: str) -> None:
        if self._client is not None:
            self._client.publish(topic, payload, qos=1)

    def _tasmota_handler(self, topic: str, outlet_id: str) -> Handler:
        def handle(payload: bytes) -> None:
            word = payload.decode(errors="replace").strip().upper()
            is_on = self.site.snapshot().outlets[outlet_id].is_on
            wanted = {"ON": True, "1": True, "OFF": False, "0": False, "TOGGLE": not is_on}
            if word in wanted:
                self.site.set_outlet(outlet_id, wanted[word])
            elif word:
                return  # Tasmota answers an unknown word with an error on RESULT, not POWER
            state = "ON" if self.site.snapshot().outlets[outlet_id].is_on else "OFF"
            self._reply(f"stat/{topic}/RESULT", json.dumps({"POWER": state}))
            self._reply(f"stat/{topic}/POWER", state)

        return handle

    def _shelly_handler(self, pdu_id: str) -> Handler:
        source = f"{self.prefix}/{pdu_id}"
        outlets = self.site.scenario.site.pdu_by_id[pdu_id].outlets

        def handle(payload: bytes) -> None:
            request = _json_object(payload)
            if request is None or not isinstance(request.get("src"), str):
                return  # nobody to answer
            reply: dict[str, Any] = {"id": request.get("id"), "src": source, "dst": request["src"]}
            params = request.get("params")
            channel = params.get("id") if isinstance(params, dict) else None
            on = params.get("on") if isinstance(params, dict) else None
            if request.get("method") != "Switch.Set":
                reply["error"] = {"code": 404, "message": f"No handler for {request.get('method')}"}
            elif not (isinstance(channel, int) and 0 <= channel < len(outlets)) or not isinstance(
                on, bool
            ):
                reply["error"] = {"code": -103, "message": "Invalid argument"}
            else:
                outlet_id = outlets[channel].id
                was_on = self.site.snapshot().outlets[outlet_id].is_on
                self.site.set_outlet(outlet_id, on)
                reply["result"] = {"was_on": was_on}
            self._reply(f"{request['src']}/rpc", json.dumps(reply))

        return handle

    def _own_outlet_handler(self, root: str, outlet_id: str) -> Handler:
        def handle(payload: bytes) -> None:
            request = _json_object(payload)
            if request is None:
                return
            action = request.get("action")
            if action in ("on", "off"):
                self.site.set_outlet(outlet_id, action == "on")
                ack: dict[str, Any] = {"id": request.get("id"), "ok": True}
            else:
                ack = {"id": request.get("id"), "ok": False, "error": f"unknown action {action!r}"}
            self._reply(f"{root}/ack", json.dumps(ack))

        return handle

    def _agent_handler(self, root: str, service_id: str) -> Handler:
        def handle(payload: bytes) -> None:
            if self.site.snapshot().services[service_id].mode is ServiceMode.UNPOWERED:
                return  # the host is dark: its agent hears nothing
            request = _json_object(payload)
            if request is None:
                return
            error = self._agent_refusal(service_id, request)
            if error is None:
                error = self._agent_action(service_id, request)
            ack: dict[str, Any] = {"id": request.get("id"), "ok": error is None}
            if error is not None:
                ack["error"] = error
            self._reply(f"{root}/ack", json.dumps(ack))

        return handle

    def _agent_refusal(self, service_id: str, request: dict[str, Any]) -> str | None:
        """Why the agent must not act on the command, or None: it is signed with its secret,
        recent and new. Checked on the agent's own wall clock, as a host's."""
        verifier = self._verifiers.get(service_id)
        if verifier is None:
            return "refused: the agent has no secret to check commands with"
        try:
            verifier.verify(request, time.time())
        except CommandRejectedError as err:
            return f"refused: {err}"
        return None

    def _agent_action(self, service_id: str, request: dict[str, Any]) -> str | None:
        match request.get("action"):
            case "throttle":
                cap_w = request.get("cap_w")
                if isinstance(cap_w, bool) or not isinstance(cap_w, int | float):
                    return "throttle needs cap_w in watts"
                if not math.isfinite(cap_w) or cap_w <= 0:
                    return "throttle needs a positive cap_w"
                self.site.throttle(service_id, float(cap_w))
            case "shutdown":
                self.site.request_shutdown(service_id)
            case "start":
                # Start means run normally: release any cap, boot if the OS is down.
                self.site.throttle(service_id, None)
                self.site.request_start(service_id)
            case action:
                return f"unknown action {action!r}"
        return None

    # --- paho's network thread --------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([(topic, 1) for topic in self._handlers])
        for topic, online, _offline in self._availability():
            client.publish(topic, online, qos=1, retain=True)

    def _on_subscribe(self, *_: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        handler = self._handlers.get(message.topic)
        loop = self._loop
        if handler is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(handler, message.payload)


def _json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(payload)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _wait_published(infos: list[mqtt.MQTTMessageInfo], timeout_s: float) -> None:
    """Until every message is out, or `timeout_s` for them all: a broker that has gone (not yet
    noticed) must not hold a shutdown up for a timeout per device."""
    deadline_s = time.monotonic() + timeout_s
    for info in infos:
        info.wait_for_publish(max(0.0, deadline_s - time.monotonic()))
