"""The coordinator of one site: read every device, decide, carry out, persist, every cycle."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import voluptuous as vol
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryAuthFailed, HomeAssistantError
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers import storage
from homeassistant.helpers.storage import Store
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed
from homeassistant.util import dt as dt_util

from .const import (
    DOMAIN,
    EVENT_DECISION,
    EVENT_FAULT,
    EVENT_OVERLOAD_PREDICTED,
    EVENT_STATE_CHANGED,
    ISSUE_FOUND_STOPPED,
    ISSUE_UNREACHABLE,
    STORAGE_SAVE_DELAY_S,
    STORAGE_VERSION,
    UPDATE_INTERVAL,
)
from .drivers.interface import Command as DeviceCommand
from .drivers.interface import CommandKind, TelemetrySnapshot
from .drivers.mqtt import BrokerAuthError, MqttDriver
from .drivers.native_stdout import run_with_native_stdout_on_stderr
from .drivers.wake_on_lan import send_magic_packet
from .engine.controller import Command, StartService, StopService, SwitchOutlets, Throttle
from .site_control import CycleOutcome, SiteControl, SiteView
from .sources import SiteDrivers
from .status_broadcast import StatusBroadcast
from .stored_state import clean_stored_state
from .topology import SOURCE_MQTT, HaAction, SiteTopology, WakeOnLan

if TYPE_CHECKING:
    from . import PowerAllocationConfigEntry

_LOGGER = logging.getLogger(__name__)
# What `Store` raises for a file of a newer major version: NotImplementedError up to Home
# Assistant 2026.x, its own UnsupportedStorageVersionError since.
_STORE_VERSION_ERRORS: tuple[type[Exception], ...] = (
    NotImplementedError,
    *((error,) if (error := getattr(storage, "UnsupportedStorageVersionError", None)) else ()),
)
# MQTT devices report when they have something to say: once the broker has taken the
# subscriptions, a site with nothing heard from yet is set up, its devices unavailable until
# they speak.
MQTT_CONNECT_WAIT_S = 10.0
# Home Assistant's own Wake-on-LAN action, used when its integration is loaded.
WAKE_ON_LAN_ACTION = ("wake_on_lan", "send_magic_packet")
# A packet sent through it is sent at once; the cycle never waits longer for it.
WAKE_TIMEOUT_S = 5.0
# A repair issue: parts of the stored state were not valid and started afresh.
ISSUE_STORED_STATE = "stored_state_reset"
# The controller's faults an operator is told of (an event and a warning); the rest (a switch
# retried, an estimate used for a missing reading) are in the debug log and the decisions.
REPORTED_FAULTS = frozenset(
    {
        "found_running",
        "found_stopped",
        "low_battery_alarm",
        "reading_implausible",
        "reading_unconfirmed",
    }
)


class PowerAllocationCoordinator(DataUpdateCoordinator[SiteView]):
    """Polls the site's drivers and runs its controller."""

    config_entry: PowerAllocationConfigEntry

    def __init__(
        self,
        hass: HomeAssistant,
        entry: PowerAllocationConfigEntry,
        topology: SiteTopology,
        drivers: SiteDrivers,
    ) -> None:
        super().__init__(
            hass,
            _LOGGER,
            config_entry=entry,
            name=f"{DOMAIN} {entry.title}",
            update_interval=UPDATE_INTERVAL,
            always_update=True,
        )
        self.topology = topology
        self.drivers = drivers
        self.store: Store[dict[str, Any]] = Store(
            hass, STORAGE_VERSION, f"{DOMAIN}.{entry.entry_id}"
        )
        self.control = SiteControl(topology)
        self.snapshot: TelemetrySnapshot | None = None
        self._unavailable: set[str] = set()
        # Services whose stop could not be delivered: the next cycle asks again at once.
        self._stops_undelivered: frozenset[str] = frozenset()
        self._found_off_reported: frozenset[str] = frozenset()
        # The cycle runs in an executor thread; actions that change the site's state wait for it.
        self.lock = asyncio.Lock()
        self._restored = False
        # What was last written, and when: see `_save`.
        self._saved_powered: tuple[Any, ...] | None = None
        self._saved_at_s = -math.inf
        # Epoch seconds: the controller's stored state must mean the same after a reboot.
        self.clock: Callable[[], float] = lambda: dt_util.utcnow().timestamp()
        # The retained `<base>/status` on the site's broker, if it has one.
        self._status = StatusBroadcast(entry.title)
        # The site's broker refused the credentials in the last cycle (a reauth flow was started).
        self._credentials_refused = False

    @property
    def site_name(self) -> str:
        """The site's title, as events name it."""
        return self.config_entry.title

    async def _async_setup(self) -> None:
        """Restore what was learnt and decided before the restart, then connect."""
        try:
            stored = await self.store.async_load()
        except _STORE_VERSION_ERRORS:
            # Saved by another version of the store, which `Store` cannot migrate: start afresh
            # rather than never set up.
            _LOGGER.warning("%s: ignoring a stored state of another version", self.site_name)
            stored = None
        stored, reset = clean_stored_state(stored)
        if reset:
            self._report_reset(reset)
        self.control = SiteControl(self.topology, stored)
        self._restored = True
        await self.drivers.start()
        try:
            await self.drivers.async_wait_connected(MQTT_CONNECT_WAIT_S)
        except BrokerAuthError as error:
            # Setup fails, its drivers are stopped, and Home Assistant asks for new credentials.
            raise self._credentials_error() from error

    def _credentials_error(self) -> ConfigEntryAuthFailed:
        """The broker refused the stored credentials (named by its host and port, never them)."""
        broker = self.topology.mqtt or {}
        return ConfigEntryAuthFailed(
            translation_domain=DOMAIN,
            translation_key="broker_refused_credentials",
            translation_placeholders={
                "site": self.site_name,
                "broker": f"{broker.get('host')}:{broker.get('port')}",
            },
        )

    def _report_reset(self, reset: list[str]) -> None:
        """What of the stored state was not valid: started afresh, said once, never retried."""
        for part in reset:
            _LOGGER.warning(
                "%s: the stored %s was not valid and starts afresh", self.site_name, part
            )
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            f"{ISSUE_STORED_STATE}_{self.config_entry.entry_id}",
            is_fixable=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key=ISSUE_STORED_STATE,
            translation_placeholders={"site": self.site_name, "reset": ", ".join(reset)},
        )

    async def async_shutdown(self) -> None:
        """Save, then disconnect every device (runs when the entry unloads)."""
        await super().async_shutdown()
        # Before the stored state was read, there is nothing of ours to save: saving would
        # replace what a restart in the middle of an outage must resume from.
        if self._restored:
            await self.store.async_save(self.control.decider.to_state())
        await self.drivers.stop()

    async def _save(self, now_s: float) -> None:
        """Write the site's state at once when what decides what is powered changed, and what
        was learnt every `STORAGE_SAVE_DELAY_S`. A write at once, not `Store`'s delayed save: a
        delayed save asked for every cycle is pushed back by the next request and never comes."""
        powered = self.control.decider.powered_state()
        if powered == self._saved_powered and now_s - self._saved_at_s < STORAGE_SAVE_DELAY_S:
            return
        await self.store.async_save(self.control.decider.to_state())
        self._saved_powered, self._saved_at_s = powered, now_s

    async def async_run_engine[T](self, job: Callable[..., T], *args: Any) -> T:
        """`job(*args)` in the executor, one at a time (the engine's state is not shared), with
        what the solver prints natively kept off Home Assistant's standard output."""
        async with self.lock:
            return await self.hass.async_add_executor_job(
                run_with_native_stdout_on_stderr, job, *args
            )

    async def _async_update_data(self) -> SiteView:
        now_s = self.clock()
        snapshot = await self.drivers.read(now_s)
        self.snapshot = snapshot
        self._watch_credentials()
        self._track_availability(snapshot)
        outcome = await self.async_run_engine(
            self.control.cycle, snapshot, now_s, self._stops_undelivered
        )
        # Written ahead of the commands it ordered: killed while carrying them out, the site
        # restarts knowing what it asked for (I10).
        await self._save(now_s)
        await self._carry_out(outcome)
        self._broadcast_status(outcome.view)
        if (
            not any(r.available for r in snapshot.ups.values())
            and not any(r.available for r in snapshot.outlets.values())
            and not self.drivers.broker_connected
        ):
            # The controller ran all the same (I7: missing telemetry never stalls it); the
            # entities go unavailable.
            raise UpdateFailed(translation_domain=DOMAIN, translation_key="no_device_answered")
        return outcome.view

    def _watch_credentials(self) -> None:
        """The broker refused the credentials while the site runs: Home Assistant asks for new
        ones (a reauth flow), once each time it starts refusing.

        Not by raising `ConfigEntryAuthFailed`: after one, `DataUpdateCoordinator` schedules no
        further refresh, and the controller would stop for the whole site (I7). A refused broker
        is a failing device instead: its readings are missing, its devices unavailable, and the
        cycle runs on with what the other drivers read; the driver retries with its backoff.
        """
        driver = self.drivers.drivers.get(SOURCE_MQTT)
        refused = isinstance(driver, MqttDriver) and driver.auth_refused
        if refused and not self._credentials_refused:
            _LOGGER.warning(
                "%s: the MQTT broker refused the stored credentials; asking for new ones",
                self.site_name,
            )
            self.config_entry.async_start_reauth(self.hass)
        self._credentials_refused = refused

    def _broadcast_status(self, view: SiteView) -> None:
        """Publish the cycle's status if it changed, in the background: a slow broker never holds
        up the cycle, and a failure is logged, never raised."""
        publish = self._status.publish_due(self.drivers.drivers.get(SOURCE_MQTT), view)
        if publish is not None:
            self.config_entry.async_create_background_task(
                self.hass, publish, f"{DOMAIN} {self.site_name} status broadcast"
            )

    def _track_availability(self, snapshot: TelemetrySnapshot) -> None:
        """Log a device once when it is lost and once when it is back; a repair while lost."""
        devices: dict[str, bool] = {u: r.available for u, r in snapshot.ups.items()}
        for pdu in self.control.site.pdus:
            readings = [snapshot.outlets.get(o.id) for o in pdu.outlets]
            devices[pdu.id] = any(r is not None and r.available for r in readings)
        for device_id, available in devices.items():
            issue_id = f"{ISSUE_UNREACHABLE}_{self.config_entry.entry_id}_{device_id}"
            if not available and device_id not in self._unavailable:
                self._unavailable.add(device_id)
                _LOGGER.warning("%s: %s is unavailable", self.site_name, device_id)
                ir.async_create_issue(
                    self.hass,
                    DOMAIN,
                    issue_id,
                    is_fixable=False,
                    severity=ir.IssueSeverity.ERROR,
                    translation_key=ISSUE_UNREACHABLE,
                    translation_placeholders={"site": self.site_name, "device": device_id},
                )
            elif available and device_id in self._unavailable:
                self._unavailable.discard(device_id)
                _LOGGER.info("%s: %s is available again", self.site_name, device_id)
                ir.async_delete_issue(self.hass, DOMAIN, issue_id)

    @property
    def unavailable_devices(self) -> frozenset[str]:
        """UPS units and PDUs that did not answer in the last cycle."""
        return frozenset(self._unavailable)

    def device_available(self, device_id: str) -> bool:
        """Whether a UPS or PDU answered in the last cycle."""
        return device_id not in self._unavailable

    async def _carry_out(self, outcome: CycleOutcome) -> None:
        undelivered: set[str] = set()
        for command in outcome.commands:
            ok, error = await self._execute(command)
            if not ok and isinstance(command, StopService):
                undelivered.add(command.service_id)
            self.hass.bus.async_fire(
                EVENT_DECISION,
                {
                    "site": self.site_name,
                    "service": command.service_id,
                    "action": _action_name(command),
                    "cap_w": getattr(command, "cap_w", None),
                    "reason": command.reason,
                    "ok": ok,
                    "error": error,
                },
            )
            if not ok:
                _LOGGER.warning(
                    "%s: %s %s failed: %s",
                    self.site_name,
                    _action_name(command),
                    command.service_id,
                    error,
                )
        self._stops_undelivered = frozenset(undelivered)
        self._report(outcome)
        if outcome.mode_changed:
            self.hass.bus.async_fire(
                EVENT_STATE_CHANGED,
                {"site": self.site_name, "state": outcome.view.mode.value},
            )
        for risk in outcome.overloads_predicted:
            self.hass.bus.async_fire(
                EVENT_OVERLOAD_PREDICTED,
                {
                    "site": self.site_name,
                    "node": risk.node_id,
                    "level": risk.level.value,
                    "probability": round(risk.exceed_probability, 3),
                    "draw_w": round(risk.draw_w, 1),
                    "upper_w": round(risk.upper_w, 1),
                    "limit_w": risk.limit_w,
                },
            )

    def _report(self, outcome: CycleOutcome) -> None:
        """The cycle's faults: what an operator must know of as an event and a warning, and a
        repair issue for each service found stopped while it stays held off for it."""
        for fault in outcome.faults:
            if fault.kind not in REPORTED_FAULTS:
                _LOGGER.debug("%s: %s", self.site_name, fault.message)
                continue
            _LOGGER.warning("%s: %s", self.site_name, fault.message)
            self.hass.bus.async_fire(
                EVENT_FAULT,
                {
                    "site": self.site_name,
                    "service": fault.service_id,
                    "kind": fault.kind,
                    "message": fault.message,
                },
            )
        found_off = self.control.decider.state.found_off
        for sid in found_off - self._found_off_reported:
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                self._found_off_issue(sid),
                is_fixable=False,
                severity=ir.IssueSeverity.WARNING,
                translation_key=ISSUE_FOUND_STOPPED,
                translation_placeholders={"site": self.site_name, "service": sid},
            )
        for sid in self._found_off_reported - found_off:
            ir.async_delete_issue(self.hass, DOMAIN, self._found_off_issue(sid))
        self._found_off_reported = found_off

    def _found_off_issue(self, service_id: str) -> str:
        return f"{ISSUE_FOUND_STOPPED}_{self.config_entry.entry_id}_{service_id}"

    async def _execute(self, command: Command) -> tuple[bool, str | None]:
        """Carry out one controller command on the devices and hosts it names."""
        controls = self.topology.controls[command.service_id]
        errors: list[str] = []
        device_commands: list[DeviceCommand] = []
        action: HaAction | None = None
        data: dict[str, Any] = {}
        wake: WakeOnLan | None = None
        match command:
            case StopService(service_id=sid):
                if controls.agent:
                    device_commands.append(DeviceCommand(CommandKind.AGENT_SHUTDOWN, sid))
                action = controls.stop
            case Throttle(service_id=sid, cap_w=cap_w):
                if controls.agent:
                    if cap_w is None:
                        device_commands.append(DeviceCommand(CommandKind.AGENT_START, sid))
                    else:
                        device_commands.append(
                            DeviceCommand(CommandKind.AGENT_THROTTLE, sid, cap_w=cap_w)
                        )
                action = controls.throttle
                data = {"cap_w": cap_w}
            case SwitchOutlets(outlet_ids=outlets, on=on):
                kind = CommandKind.OUTLET_ON if on else CommandKind.OUTLET_OFF
                device_commands.extend(DeviceCommand(kind, o) for o in outlets)
            case StartService(service_id=sid, outlet_ids=outlets):
                device_commands.extend(DeviceCommand(CommandKind.OUTLET_ON, o) for o in outlets)
                if controls.agent:
                    device_commands.append(DeviceCommand(CommandKind.AGENT_START, sid))
                action = controls.start
                wake = controls.wake
        for device_command in device_commands:
            result = await self.drivers.execute(device_command)
            if not result.ok:
                errors.append(f"{device_command.target}: {result.error}")
        if wake is not None:
            error = await self._wake(wake)
            if error is not None:
                errors.append(f"wake-on-lan {wake.mac}: {error}")
        if action is not None:
            try:
                # Not blocking: a script that shuts a host down may run for minutes, and the
                # cycle must not wait for it. A missing action or bad data still raises here.
                await self.hass.services.async_call(
                    action.domain, action.service, {**action.data, **data}, blocking=False
                )
            except (HomeAssistantError, vol.Invalid) as error:
                errors.append(f"{action.domain}.{action.service}: {error}")
        return not errors, "; ".join(errors) or None

    async def _wake(self, wake: WakeOnLan) -> str | None:
        """Send a host its Wake-on-LAN packet: through Home Assistant's `wake_on_lan` action
        when that integration is loaded, else with the project's own sender; why it failed, if
        it did (never raised into the cycle)."""
        try:
            if self.hass.services.has_service(*WAKE_ON_LAN_ACTION):
                async with asyncio.timeout(WAKE_TIMEOUT_S):  # TimeoutError is an OSError
                    await self.hass.services.async_call(
                        *WAKE_ON_LAN_ACTION,
                        {
                            "mac": wake.mac,
                            "broadcast_address": wake.broadcast,
                            "broadcast_port": wake.port,
                        },
                        blocking=True,
                    )
            else:
                await send_magic_packet(wake.mac, wake.broadcast, wake.port)
        except (HomeAssistantError, vol.Invalid, OSError, ValueError) as error:
            return str(error) or type(error).__name__
        return None

    def snapshot_data(self) -> Mapping[str, Any]:
        """The last telemetry, for diagnostics."""
        snapshot = self.snapshot
        if snapshot is None:
            return {}
        return {
            "ups": {k: _plain(v) for k, v in snapshot.ups.items()},
            "outlets": {k: _plain(v) for k, v in snapshot.outlets.items()},
            "service_power_w": dict(snapshot.service_power_w),
        }


def _plain(reading: Any) -> dict[str, Any]:
    return {name: getattr(reading, name) for name in reading.__slots__}


def _action_name(command: Command) -> str:
    match command:
        case StopService():
            return "stop"
        case Throttle(cap_w=None):
            return "release_cap"
        case Throttle():
            return "throttle"
        case SwitchOutlets(on=True):
            return "outlets_on"
        case SwitchOutlets():
            return "outlets_off"
        case StartService():
            return "start"
    raise ValueError(command)  # pragma: no cover - Command is a closed union
