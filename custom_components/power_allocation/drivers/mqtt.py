"""The MQTT driver: one paho-mqtt 2.x client reading and commanding every configured device.

paho's network loop runs on its own thread (`loop_start`), never on the event loop, reading the
socket in large chunks (`mqtt_client.ChunkedClient`). Messages are parsed on that thread and
applied under a lock; `read()` copies the state out under the same lock, and command outcomes are
handed to the event loop with `call_soon_threadsafe`. paho reconnects with backoff by itself; every
(re)connection subscribes again, and while the broker is unreachable every device reads as
unavailable. A broker that refuses the credentials is one more unreachable broker (retried with the
same backoff, its devices unavailable), told apart: `auth_refused` says so, and `wait_connected`
raises `BrokerAuthError`, for the glue to ask the user for new credentials.

Every reading carries the time it arrived, on the driver's clock (`time.monotonic` unless a test
injects another): a device silent for longer than its profile's `stale_after_s` is unavailable,
and any value of it older than that is unknown, as NUT's upsd treats a driver past MAXAGE.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .command_auth import sign_command
from .interface import (
    Command,
    CommandKind,
    CommandResult,
    OutletReading,
    TelemetrySnapshot,
    UpsReading,
)
from .mqtt_client import ChunkedClient
from .mqtt_payload import (
    AckVerdict,
    DeviceParser,
    DeviceUpdate,
    MalformedPayloadError,
    PayloadLimits,
    judge_ack,
)
from .mqtt_profile import (
    AckSpec,
    Feeds,
    MqttDevice,
    MqttProfile,
    ProfileError,
    VariableValue,
    bind_variables,
    builtin_profiles,
    render,
    render_json,
)
from .mqtt_status import SiteStatus, encode_status
from .mqtt_tls import TlsOptions, tls_context
from .plausibility import ImplausibleReadings, mains_online

_LOGGER = logging.getLogger(__name__)

COMMAND_QOS = 1
UNKNOWN_TOPIC_SOURCE = "unknown topics"
ONLINE = "online"
OFFLINE = "offline"
# A device marked unavailable comes back on its own online word, or once `read()` has seen fresh
# readings from it in this many cycles: one stray message does not bring it back.
CYCLES_TO_COME_BACK = 2
# CONNACK codes that mean "wrong credentials": MQTT 3.1.1's (4 bad user name or password, 5 not
# authorised), and the MQTT 5 reason codes paho 2.x reports them as (134, 135).
AUTH_REFUSED_CODES = frozenset({4, 5, 134, 135})


class BrokerAuthError(Exception):
    """The broker refused the driver's credentials (the message names the broker, never them)."""


@dataclass(frozen=True, slots=True)
class MqttDriverConfig:
    """The broker, the devices on it and how strict to be with what they send."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: TlsOptions | None = None
    client_id: str = "power-allocation"
    keepalive_s: int = 30
    # Root of the project's own schema: status broadcast, availability, own-schema devices.
    base_topic: str = "power_allocation"
    # Publish `<base>/status` and the retained `<base>/availability` (with a last will).
    broadcast_status: bool = True
    devices: tuple[MqttDevice, ...] = ()
    limits: PayloadLimits = field(default_factory=PayloadLimits)
    command_timeout_s: float = 10.0
    # Agent target -> the secret its commands are signed with (`command_auth`).
    agent_secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30

    @property
    def status_topic(self) -> str:
        """Where the retained status broadcast goes."""
        return f"{self.base_topic}/status"

    @property
    def availability_topic(self) -> str:
        """The integration's own online/offline topic (its last will)."""
        return f"{self.base_topic}/availability"


@dataclass(frozen=True, slots=True)
class MessageCounts:
    """How many messages were applied, how many were dropped per source as malformed, and how
    many values per device were not plausible (reported unknown)."""

    applied: int
    malformed: Mapping[str, int]
    implausible: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _BoundDevice:
    device: MqttDevice
    profile: MqttProfile
    variables: Mapping[str, VariableValue]
    parser: DeviceParser


class _Presence(Enum):
    UNKNOWN = auto()  # not heard from since start, or since the broker came back
    PRESENT = auto()
    ABSENT = auto()  # said offline, or silent for longer than its stale age


class _Timed(NamedTuple):
    value: float | bool
    arrived_s: float


@dataclass(slots=True)
class _DeviceState:
    """What one device said, when, and whether it counts as there (under the driver's lock)."""

    presence: _Presence = _Presence.UNKNOWN
    readings: dict[str, _Timed] = field(default_factory=dict)
    heard_s: float = -math.inf  # arrival of its last online word or plausible reading
    heard_since_read: bool = False
    cycles_heard: int = 0  # reads that saw fresh readings since it went absent

    def apply(self, update: DeviceUpdate, now_s: float) -> None:
        """Take one valid message that arrived at `now_s`."""
        if update.online is True:
            self.presence = _Presence.PRESENT
            self.heard_s = now_s
        elif update.online is False:
            self.withdraw()
        for reading in update.implausible:
            self.readings.pop(reading, None)
        if update.readings:
            for reading, value in update.readings.items():
                self.readings[reading] = _Timed(value, now_s)
            self.heard_s = now_s
            self.heard_since_read = True
            if self.presence is _Presence.UNKNOWN:
                self.presence = _Presence.PRESENT

    def withdraw(self) -> None:
        """Unavailable, and what it said before is forgotten."""
        self.presence = _Presence.ABSENT
        self.readings.clear()
        self.cycles_heard = 0

    def judge(self, now_s: float, stale_after_s: float) -> bool:
        """One read cycle's verdict; True when the device has just gone silent."""
        went_silent = False
        if now_s - self.heard_s > stale_after_s:
            # The evidence for coming back expires with the silence.
            self.cycles_heard = 0
            if self.presence is _Presence.PRESENT:
                self.withdraw()
                went_silent = True
        elif self.heard_since_read and self.presence is _Presence.ABSENT:
            self.cycles_heard += 1
            if self.cycles_heard >= CYCLES_TO_COME_BACK:
                self.presence = _Presence.PRESENT
        self.heard_since_read = False
        return went_silent

    def current(self, now_s: float, stale_after_s: float) -> dict[str, float | bool]:
        """The readings that are not older than the stale age."""
        return {
            reading: timed.value
            for reading, timed in self.readings.items()
            if now_s - timed.arrived_s <= stale_after_s
        }


@dataclass(slots=True)
class _PendingAck:
    spec: AckSpec
    expected: dict[tuple[str, ...], Any]
    future: asyncio.Future[AckVerdict]


class MqttDriver:
    """Implements `Driver` over MQTT for every device of `config.devices`."""

    def __init__(
        self,
        config: MqttDriverConfig,
        profiles: Mapping[str, MqttProfile] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Bind every device to its profile; raises `ProfileError` for a device that cannot work.

        Without `profiles`, the built-in ones are loaded, which reads files the first time.
        `clock` stamps each message as it arrives (on paho's thread) and judges staleness.
        """
        self._config = config
        self._clock = clock
        profiles = builtin_profiles() if profiles is None else profiles
        self._devices: list[_BoundDevice] = []
        seen: set[tuple[Feeds, str]] = set()
        for device in config.devices:
            profile = profiles.get(device.profile)
            if profile is None:
                raise ProfileError(f"{device.describe()}: unknown profile {device.profile!r}")
            if (profile.feeds, device.target) in seen:
                raise ProfileError(f"{device.describe()}: {device.target!r} is configured twice")
            seen.add((profile.feeds, device.target))
            variables = bind_variables(
                profile, device, base=config.base_topic, client_id=config.client_id
            )
            parser = DeviceParser(
                profile, variables, config.limits, device.power_ceiling_w(profile)
            )
            self._devices.append(_BoundDevice(device, profile, variables, parser))

        self._states = [_DeviceState() for _ in self._devices]
        # Topic -> every device listening on it, with the state its messages update.
        routes: dict[str, list[tuple[_BoundDevice, _DeviceState]]] = {}
        for bound, state in zip(self._devices, self._states, strict=True):
            for topic in bound.parser.topics:
                routes.setdefault(topic, []).append((bound, state))
        self._routes = {topic: tuple(listeners) for topic, listeners in routes.items()}
        self._commands: dict[tuple[CommandKind, str], int] = {}
        ack_topics: set[str] = set()
        for index, bound in enumerate(self._devices):
            for kind, spec in bound.profile.commands.items():
                self._commands[kind, bound.device.target] = index
                if spec.ack is not None:
                    ack_topics.add(render(spec.ack.topic, bound.variables))
        self._ack_topics = frozenset(ack_topics)
        self._subscriptions = sorted(set(self._routes) | ack_topics)

        self._lock = threading.Lock()
        self._connected = False
        self._ready = asyncio.Event()  # set (on the loop) whenever the driver becomes connected
        self._applied = 0
        self._malformed: Counter[str] = Counter()
        self._implausible = ImplausibleReadings()
        self._pending_acks: dict[str, list[_PendingAck]] = {}
        self._request_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._stopping = False
        self._reported_unreachable = False
        self._connections = 0
        # The broker's last answer to CONNECT refused the credentials.
        self._auth_refused = False

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """Every topic the driver listens on (exact topics, no wildcards)."""
        return tuple(self._subscriptions)

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up and every subscription is in place."""
        with self._lock:
            return self._connected

    @property
    def auth_refused(self) -> bool:
        """Whether the broker refused the credentials when last asked, and has not accepted a
        connection since. While it holds, paho keeps retrying with its backoff."""
        with self._lock:
            return self._auth_refused

    @property
    def connections(self) -> int:
        """How many times the broker has accepted the connection since start: a reconnection
        shows even when it came back before anyone saw it gone."""
        with self._lock:
            return self._connections

    def counts(self) -> MessageCounts:
        """Messages applied, malformed ones per source and implausible values per device, since
        start."""
        with self._lock:
            return MessageCounts(self._applied, dict(self._malformed), self._implausible.counts())

    async def start(self) -> None:
        """Connect in the background; an unreachable broker is retried with backoff."""
        config = self._config
        self._loop = asyncio.get_running_loop()
        client = ChunkedClient(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        # A bug in a callback is logged by paho instead of killing the network thread.
        client.suppress_exceptions = True
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.tls is not None:
            # Reads certificate files: off the event loop.
            context = await self._loop.run_in_executor(None, tls_context, config.tls)
            client.tls_set_context(context)
        if config.broadcast_status:
            client.will_set(config.availability_topic, OFFLINE, qos=COMMAND_QOS, retain=True)
        client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        self._stopping = False
        client.connect_async(config.host, config.port, config.keepalive_s)
        client.loop_start()

    async def stop(self) -> None:
        """Say offline, disconnect and join paho's thread."""
        client = self._client
        if client is None:
            return
        if self._config.broadcast_status and self.connected:
            info = client.publish(
                self._config.availability_topic, OFFLINE, qos=COMMAND_QOS, retain=True
            )
            if info.rc is MQTTErrorCode.MQTT_ERR_SUCCESS:
                with contextlib.suppress(TimeoutError):
                    await self._wait_published(info, self._config.command_timeout_s)
        self._stopping = True
        client.disconnect()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, client.loop_stop)
        self._client = None
        self._fail_pending("driver stopped")

    async def read(self, monotonic_s: float) -> TelemetrySnapshot:
        """The latest readings; devices not heard from, offline, silent for longer than their
        stale age or behind a lost broker are unavailable. `monotonic_s` only dates the snapshot:
        staleness is judged on the driver's own clock, the one that stamped the messages."""
        outlets: dict[str, OutletReading] = {}
        ups: dict[str, UpsReading] = {}
        service_power_w: dict[str, float] = {}
        now_s = self._clock()
        silenced: list[str] = []
        with self._lock:
            for bound, state in zip(self._devices, self._states, strict=True):
                stale_after_s = bound.profile.stale_after_s
                if state.judge(now_s, stale_after_s):
                    silenced.append(bound.device.describe())
                available = self._connected and state.presence is _Presence.PRESENT
                readings = state.current(now_s, stale_after_s) if available else {}
                target = bound.device.target
                match bound.profile.feeds:
                    case Feeds.OUTLET:
                        outlets[target] = OutletReading(
                            outlet_id=target,
                            available=available,
                            power_w=_float(readings.get("power_w")),
                            is_on=_bool(readings.get("is_on")),
                        )
                    case Feeds.UPS:
                        on_battery = _bool(readings.get("on_battery"))
                        ups[target] = UpsReading(
                            ups_id=target,
                            available=available,
                            on_battery=on_battery,
                            online=mains_online(_bool(readings.get("online")), on_battery),
                            low_battery=_bool(readings.get("low_battery")),
                            forced_shutdown=_bool(readings.get("forced_shutdown")),
                            runtime_s=_float(readings.get("runtime_s")),
                            soc_pct=_float(readings.get("soc_pct")),
                            output_w=_float(readings.get("output_w")),
                            output_voltage_v=_float(readings.get("output_voltage_v")),
                        )
                    case Feeds.AGENT:
                        power_w = _float(readings.get("power_w"))
                        if power_w is not None:
                            service_power_w[target] = power_w
        for device in silenced:
            _LOGGER.warning(
                "MQTT device %s sent nothing for its stale age: unavailable until it says it is "
                "online or reports in %d cycles",
                device,
                CYCLES_TO_COME_BACK,
            )
        return TelemetrySnapshot(
            monotonic_s=monotonic_s, ups=ups, outlets=outlets, service_power_w=service_power_w
        )

    async def execute(self, command: Command) -> CommandResult:
        """Publish the command at QoS 1 and wait for the broker's PUBACK and, where the profile
        declares one, the device's acknowledgement, all within `command_timeout_s`."""
        index = self._commands.get((command.kind, command.target))
        if index is None:
            return _failed(command, f"no MQTT device takes {command.kind} for {command.target!r}")
        if command.kind is CommandKind.AGENT_THROTTLE and not (
            command.cap_w is not None and math.isfinite(command.cap_w) and command.cap_w > 0
        ):
            return _failed(command, f"throttle needs a positive cap_w, got {command.cap_w!r}")
        client, loop = self._client, self._loop
        if client is None or loop is None or not self.connected:
            # paho would queue it and deliver it whenever the broker is back: a command nobody
            # waits for any more. Refuse instead; the caller retries.
            return _failed(command, "MQTT broker not connected")
        bound = self._devices[index]
        spec = bound.profile.commands[command.kind]
        variables: dict[str, VariableValue] = {
            **bound.variables,
            "request_id": next(self._request_ids),
            "cap_w": command.cap_w if command.cap_w is not None else 0.0,
        }
        topic = render(spec.topic, variables)
        rendered = render_json(spec.payload, variables)
        if bound.profile.feeds is Feeds.AGENT and command.target in self._config.agent_secrets:
            secret = self._config.agent_secrets[command.target]
            rendered = sign_command(rendered, secret, time.time())
        payload = rendered if isinstance(rendered, str) else json.dumps(rendered)

        pending: _PendingAck | None = None
        if spec.ack is not None:
            pending = _PendingAck(
                spec=spec.ack,
                expected={path: render_json(value, variables) for path, value in spec.ack.match},
                future=loop.create_future(),
            )
            ack_topic = render(spec.ack.topic, variables)
            with self._lock:
                self._pending_acks.setdefault(ack_topic, []).append(pending)
        try:
            async with asyncio.timeout(self._config.command_timeout_s):
                info = client.publish(topic, payload, qos=COMMAND_QOS, retain=False)
                if info.rc is not MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return _failed(command, f"publish failed: {mqtt.error_string(info.rc)}")
                await self._wait_published(info, self._config.command_timeout_s)
                if pending is not None:
                    verdict = await pending.future
                    if not verdict.ok:
                        return _failed(command, verdict.error or "refused by the device")
        except TimeoutError:
            what = "acknowledgement" if pending is not None else "PUBACK"
            return _failed(command, f"no {what} within {self._config.command_timeout_s:g} s")
        except ConnectionError as err:
            return _failed(command, str(err))
        finally:
            if pending is not None:
                with self._lock:
                    waiting = self._pending_acks.get(ack_topic, [])
                    if pending in waiting:
                        waiting.remove(pending)
        return CommandResult(command=command, ok=True)

    async def publish_status(self, status: SiteStatus) -> bool:
        """Publish the retained status broadcast; False when it could not be delivered."""
        client = self._client
        if not self._config.broadcast_status or client is None or not self.connected:
            return False
        info = client.publish(
            self._config.status_topic, encode_status(status), qos=COMMAND_QOS, retain=True
        )
        if info.rc is not MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        try:
            await self._wait_published(info, self._config.command_timeout_s)
        except TimeoutError:
            return False
        return True

    async def _wait_published(self, info: mqtt.MQTTMessageInfo, timeout_s: float) -> None:
        """Wait for the broker's PUBACK without blocking the event loop; raises TimeoutError."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, info.wait_for_publish, timeout_s)
        if not info.is_published():
            raise TimeoutError

    # paho's network thread from here on.

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            auth = int(reason_code.value) in AUTH_REFUSED_CODES
            with self._lock:
                first, self._reported_unreachable = not self._reported_unreachable, True
                newly_refused = auth and not self._auth_refused
                self._auth_refused = auth
            if auth and (first or newly_refused):
                # The reason code only ("Not authorized"): never the username or password.
                _LOGGER.warning(
                    "MQTT broker %s:%s refused the connection (the credentials): %s; "
                    "retrying with backoff",
                    self._config.host,
                    self._config.port,
                    reason_code,
                )
            elif first:
                _LOGGER.warning(
                    "MQTT broker %s:%s refused the connection: %s; retrying with backoff",
                    self._config.host,
                    self._config.port,
                    reason_code,
                )
            if auth:
                self._mark_ready()  # wakes `wait_connected`, which raises
            return
        _LOGGER.info("Connected to MQTT broker %s:%s", self._config.host, self._config.port)
        with self._lock:
            self._reported_unreachable = False
            self._auth_refused = False
            self._connections += 1
            # Ready once the broker has acknowledged the subscriptions: a reading published
            # before that would be missed.
            self._connected = not self._subscriptions
        if not self._subscriptions:
            self._mark_ready()
        # A clean session forgets subscriptions: subscribe on every (re)connection.
        if self._subscriptions:
            client.subscribe([(topic, COMMAND_QOS) for topic in self._subscriptions])
        if self._config.broadcast_status:
            client.publish(self._config.availability_topic, ONLINE, qos=COMMAND_QOS, retain=True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # Refused TCP, failed TLS handshake, unknown host: paho retries with backoff; say it once.
        with self._lock:
            first, self._reported_unreachable = not self._reported_unreachable, True
        if first:
            _LOGGER.warning(
                "Cannot connect to MQTT broker %s:%s; retrying with backoff",
                self._config.host,
                self._config.port,
            )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            was_connected = self._connected
            self._connected = False
            for state in self._states:
                # Losing the broker says nothing against the device: back on its first message
                # (a retained one, on resubscribing). One already marked absent stays so.
                if state.presence is _Presence.PRESENT:
                    state.presence = _Presence.UNKNOWN
        if was_connected and not self._stopping:
            _LOGGER.warning("Lost the MQTT broker (%s); reconnecting", reason_code)
        self._fail_pending("MQTT broker connection lost")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic, payload = message.topic, message.payload
        if topic in self._pending_acks:
            self._match_ack(topic, payload)
        routes = self._routes.get(topic)
        if routes is None:
            if topic not in self._ack_topics:  # a late reply to a command is no fault
                self._count_malformed(
                    UNKNOWN_TOPIC_SOURCE, topic, MalformedPayloadError("unknown topic")
                )
            return
        now_s = self._clock()
        for bound, state in routes:
            try:
                update = bound.parser.parse(topic, payload)
            except MalformedPayloadError as err:
                self._count_malformed(bound.device.describe(), topic, err)
                continue
            with self._lock:
                state.apply(update, now_s)
                for reading, value in update.implausible.items():
                    self._implausible.record(bound.device.describe(), reading, value, now_s)
                self._applied += 1

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [code for code in reason_codes if code.is_failure]
        if refused:
            _LOGGER.warning("MQTT broker refused %d subscription(s): %s", len(refused), refused[0])
        with self._lock:
            self._connected = True
        self._mark_ready()

    def _mark_ready(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._ready.set)

    async def wait_connected(self) -> None:
        """Until the broker has taken every subscription (callers bound it with a timeout).
        Raises `BrokerAuthError` as soon as the broker refuses the credentials."""
        while not self.connected:
            self._ready.clear()
            if self.connected:
                return
            if self.auth_refused:
                raise BrokerAuthError(
                    f"MQTT broker {self._config.host}:{self._config.port} refused the credentials"
                )
            await self._ready.wait()

    def _match_ack(self, topic: str, payload: bytes) -> None:
        with self._lock:
            waiting = list(self._pending_acks.get(topic, ()))
        for pending in waiting:
            verdict = judge_ack(pending.spec, pending.expected, payload, self._config.limits)
            if verdict is not None:
                self._settle(pending.future, verdict)

    def _count_malformed(self, source: str, topic: str, err: MalformedPayloadError) -> None:
        with self._lock:
            self._malformed[source] += 1
            first = self._malformed[source] == 1
        if first:
            _LOGGER.warning(
                "Dropped a malformed MQTT payload from %s on %s: %s "
                "(further ones from this source are only counted)",
                source,
                topic,
                err,
            )

    def _fail_pending(self, reason: str) -> None:
        with self._lock:
            acks = [
                pending.future for waiting in self._pending_acks.values() for pending in waiting
            ]
        for future in acks:
            self._settle_error(future, ConnectionError(reason))

    def _settle(self, future: asyncio.Future[Any], value: Any) -> None:
        if self._loop is None or self._loop.is_closed():
            return

        def settle() -> None:
            if not future.done():
                future.set_result(value)

        self._loop.call_soon_threadsafe(settle)

    def _settle_error(self, future: asyncio.Future[Any], error: Exception) -> None:
        if self._loop is None or self._loop.is_closed():
            return

        def settle() -> None:
            if not future.done():
                future.set_exception(error)

        self._loop.call_soon_threadsafe(settle)


def _failed(command: Command, error: str) -> CommandResult:
    _LOGGER.warning("MQTT command %s for %s failed: %s", command.kind, command.target, error)
    return CommandResult(command=command, ok=False, error=error)


def _float(value: float | bool | None) -> float | None:
    return None if value is None or isinstance(value, bool) else float(value)


def _bool(value: float | bool | None) -> bool | None:
    return value if isinstance(value, bool) else None
