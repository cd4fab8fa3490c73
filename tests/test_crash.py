"""A crash forgets nothing (issue 21): Home Assistant killed with SIGKILL, for real, twice.

The demo of scripts/develop runs here as it does there: a Mosquitto broker, the simulator
(simulator/scenarios/demo.yaml: its UPS and PDUs on Modbus TCP, its host agents on MQTT) and Home
Assistant as a process of its own, configured and set up through its API by scripts/demo.py. Home
Assistant alone is killed (SIGKILL: no unload, nothing saved on the way out) and started again on
the same config folder; the simulator and the broker run on, as the rack did not lose power.

1. On mains, the administrator holds `monitoring` off (`power_allocation.shed_service`). Home
   Assistant is killed as soon as the host has been asked to stop. Started again, the site still
   holds it off and cuts its outlet once it is down; it never starts it again, to the end of the
   test: through the outage, another crash and mains returning.
2. An outage, with the conservative plan switched on. Home Assistant is killed in the middle of
   shedding: a service shed, its outlet cut, others still stopping. Started again with mains still
   off, the site is still shedding with the conservative plan, what was shed is shown off and stays
   off with its outlets cut, what was stopping is not started again.
3. Mains returns: once the site starts the shed services again, `monitoring` is still held off.

The simulator's status is sampled all along, across each restart: a cut outlet switched on again
or a stopped host booting would be seen even for a moment. The site is the demo's, without the
two minutes a blip is ridden through before anything is shed (`planner.ride_through_s: 0`), so
that shedding starts with the outage and the test stays short (about four minutes, most of it
Home Assistant starting three times and mains being stable for a minute before restarts, I6).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
import yaml

from simulator.__main__ import send_control
from tests.fixtures.mqtt_broker import Mosquitto, free_port

REPOSITORY = Path(__file__).resolve().parents[1]
SCENARIO = REPOSITORY / "simulator" / "scenarios" / "demo.yaml"
TOPOLOGY = REPOSITORY / "docs" / "demo-topology.yaml"
# The Home Assistant of this virtual environment, as scripts/develop runs it.
HASS = Path(sys.executable).with_name("hass")
HOST = "127.0.0.1"
DOMAIN = "power_allocation"
SITE = "demo_rack"  # the entity id prefix of the demo's site
HELD = "monitoring"  # high tier: the plan keeps it on in an outage, the hold alone stops it
# Generous, for a slow runner: nothing waits for a fixed time, every wait is for a condition.
STARTUP_TIMEOUT_S = 120.0  # the simulator importing its packages
CYCLES_TIMEOUT_S = 90.0
SHED_TIMEOUT_S = 180.0
RESTORE_TIMEOUT_S = 240.0  # mains stable for a minute first (I6), then one start at a time
STOP_TIMEOUT_S = 60.0
POLL_S = 0.25
# Cycles (10 s each) a restarted site runs under watch before the test goes on.
CYCLES_WATCHED = 2
UP_MODES = ("running", "starting")
OFF_STATES = ("stopping", "off")


def _load_demo() -> ModuleType:
    """scripts/demo.py: the demo's configuration, and its set-up through Home Assistant's API."""
    spec = importlib.util.spec_from_file_location(
        "power_allocation_demo", REPOSITORY / "scripts" / "demo.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_demo()
_started = time.monotonic()


def _note(message: str) -> None:
    """A line of the test's journal (pytest shows it when the test fails)."""
    print(f"{time.monotonic() - _started:6.1f} s  {message}", flush=True)


async def _until[T](what: str, check: Callable[[], Awaitable[T | None]], timeout_s: float) -> T:
    """Poll `check` until it gives something (not None, not False); fail after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"no {what} after {timeout_s:.0f} s")
        await asyncio.sleep(POLL_S)


@dataclass
class Simulator:
    """`python -m simulator run` on the demo scenario, and what it went through."""

    process: asyncio.subprocess.Process
    ports: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)

    async def command(self, *words: str) -> str:
        """One line on its control channel; its reply."""
        return await send_control(HOST, self.ports["control"], " ".join(words))

    async def status(self) -> dict[str, Any]:
        """The rack as the simulator has it now."""
        status: dict[str, Any] = json.loads(await self.command("status"))
        return status

    async def watch(self) -> None:
        """Sample its status until cancelled."""
        while True:
            self.samples.append(await self.status())
            await asyncio.sleep(POLL_S)


class HomeAssistant:
    """Home Assistant as scripts/develop runs it, with its pid, and its API as the demo user."""

    def __init__(self, config_dir: Path, session: aiohttp.ClientSession) -> None:
        self.config_dir = config_dir
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.session = session
        self.process: asyncio.subprocess.Process | None = None
        self.api: Any = None
        self.starts = 0
        self._shown: dict[str, str] = {}

    async def start(self) -> None:
        """A new Home Assistant process on the config folder."""
        self.starts += 1
        _note(f"Home Assistant starts ({self.starts})")
        with (self.config_dir.parent / f"hass-{self.starts}.out").open("wb") as output:
            self.process = await asyncio.create_subprocess_exec(
                str(HASS),
                *("--config", str(self.config_dir), "--skip-pip"),
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                cwd=REPOSITORY,
            )
        self.api = demo.HomeAssistantApi(self.session, self.url, self.process.pid)

    async def kill(self) -> None:
        """SIGKILL: the process ends where it is, with nothing saved or unloaded."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert await self.process.wait() == -signal.SIGKILL
        _note("Home Assistant killed")

    async def stop(self) -> None:
        """End it as scripts/develop does (SIGTERM); SIGKILL if it does not end."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def set_up(self, topology: dict[str, Any]) -> str:
        """What scripts/demo.py's `setup` does, with this topology; the site's entry id."""
        api = self.api
        await api.wait_started()
        await api.log_in()
        await api.wait_running()
        entry_id: str = await api.demo_site(topology["ups"][0])
        await api.wait_loaded(entry_id)
        await self.call(
            DOMAIN,
            "load_topology",
            config_entry_id=entry_id,
            topology=yaml.safe_dump(topology, sort_keys=False),
        )
        await api.wait_services(entry_id, [s["id"] for s in topology["services"]])
        await api.remove_onboarding_extras()
        # Home Assistant writes its config entries a second after their last change: killed
        # sooner, it would start again without the site, whatever the integration does.
        path = self.config_dir / ".storage" / "core.config_entries"

        async def stored() -> bool:
            try:
                entries = json.loads(path.read_text())["data"]["entries"]
            except (FileNotFoundError, json.JSONDecodeError):
                return False
            return any(
                e["entry_id"] == entry_id and e["options"].get("planner") == topology["planner"]
                for e in entries
            ) and not {e["domain"] for e in entries} & set(demo.ONBOARDING_EXTRAS)

        await _until("site in Home Assistant's storage", stored, CYCLES_TIMEOUT_S)
        _note("Home Assistant set up")
        return entry_id

    async def ready(self, entry_id: str, services: list[str]) -> None:
        """Started again: answering, logged in, the site set up and reporting every service."""
        api = self.api
        await api.wait_started()
        await api.log_in()
        await api.wait_running()
        assert [e["entry_id"] for e in await api.site_entries()] == [entry_id]
        await api.wait_loaded(entry_id)
        await api.wait_services(entry_id, services)
        _note("Home Assistant ready")

    async def states(self) -> dict[str, dict[str, Any]]:
        """Every entity's state, by entity id (the site's, in the journal when they change)."""
        states = await self.api.request("GET", "/api/states")
        by_id: dict[str, dict[str, Any]] = {state["entity_id"]: state for state in states}
        shown = {
            entity_id.removeprefix(f"sensor.{SITE}_").removesuffix("_allocation"): state["state"]
            for entity_id, state in by_id.items()
            if entity_id.startswith(f"sensor.{SITE}_")
            and entity_id.endswith(("_allocation", "_controller_state"))
        }
        if shown != self._shown:
            self._shown = shown
            _note(f"site: {shown}")
        return by_id

    async def call(self, domain: str, action: str, **data: Any) -> None:
        """An action, as a dashboard or an automation calls it."""
        await self.api.request("POST", f"/api/services/{domain}/{action}", json=data)

    async def cycles(self, count: int) -> None:
        """Wait until the site has run `count` more cycles (each writes its controller state)."""
        seen: set[str] = set()
        # Through a template: the REST API's copy of a state keeps its first `last_reported`
        # while the state stays the same.
        template = f"{{{{ states.sensor.{SITE}_controller_state.last_reported.timestamp() }}}}"

        async def enough() -> bool:
            seen.add(await self.api.request("POST", "/api/template", json={"template": template}))
            return len(seen) > count

        await _until(f"{count} cycles of the site", enough, CYCLES_TIMEOUT_S)

    def log_tail(self, lines: int = 80) -> str:
        """The end of Home Assistant's log."""
        log = self.config_dir / "home-assistant.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Rack:
    """The running demo: the simulator, Home Assistant, the site's entry and its services."""

    simulator: Simulator
    hass: HomeAssistant
    entry_id: str
    services: dict[str, list[str]]  # service id -> its outlets


def allocation(states: dict[str, dict[str, Any]], service_id: str) -> str:
    """A service's allocation as Home Assistant shows it: on, throttled, stopping, off..."""
    state: str = states[f"sensor.{SITE}_{service_id.replace('-', '_')}_allocation"]["state"]
    return state


def hold(states: dict[str, dict[str, Any]], service_id: str) -> str:
    """A service's hold: auto, held_on or held_off."""
    state: str = states[f"select.{SITE}_{service_id.replace('-', '_')}_hold"]["state"]
    return state


def came_back(samples: list[dict[str, Any]], service_ids: set[str], outlets: set[str]) -> list[str]:
    """What, in the simulator's samples, came back up after it was seen down: a host booting
    or running again after it was seen stopping or stopped, an outlet on again after it was seen
    off."""
    down: set[str] = set()
    back: list[str] = []
    for sample in samples:
        for sid in sorted(service_ids):
            mode = sample["services"][sid]["mode"]
            if mode not in UP_MODES:
                down.add(sid)
            elif sid in down:
                back.append(f"{sid} {mode} at {sample['time_s']:.0f} s")
        for outlet in sorted(outlets):
            if not sample["outlets"][outlet]["is_on"]:
                down.add(outlet)
            elif outlet in down:
                back.append(f"outlet {outlet} on at {sample['time_s']:.0f} s")
    return back


@pytest.fixture
async def rack(
    socket_enabled: None, restartable_mqtt_broker: Mosquitto, tmp_path: Path
) -> AsyncIterator[Rack]:
    """The demo of scripts/develop on free ports, in a new folder, with a broker of its own."""
    global _started  # noqa: PLW0603 - the journal's times count from here
    _started = time.monotonic()
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    with (tmp_path / "simulator.log").open("wb") as simulator_log:
        simulator_process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "simulator", "run", str(SCENARIO)),
            *("--modbus-port", "0", "--control-port", "0"),
            *("--mqtt-host", HOST, "--mqtt-port", str(restartable_mqtt_broker.port)),
            *("--mqtt-profile", "nut", "--mqtt-prefix", "sim"),
            # The host agents check each command's signature with the demo's agent secrets.
            *("--agent-secrets", str(TOPOLOGY)),
            stdout=asyncio.subprocess.PIPE,
            stderr=simulator_log,
            cwd=REPOSITORY,
        )
    watcher: asyncio.Task[None] | None = None
    async with aiohttp.ClientSession() as session:
        hass = HomeAssistant(config_dir, session)
        try:
            assert simulator_process.stdout is not None
            line = await asyncio.wait_for(simulator_process.stdout.readline(), STARTUP_TIMEOUT_S)
            assert line, "the simulator ended before it listened"
            simulator = Simulator(simulator_process, json.loads(line))
            demo.write_config(config_dir, simulator.ports, HOST, hass.port, sys.executable)
            # Home Assistant looks for custom integrations in <config>/custom_components.
            (config_dir / "custom_components").symlink_to(REPOSITORY / "custom_components")
            topology = demo.demo_topology(simulator.ports, restartable_mqtt_broker.port)
            topology["planner"] = {"ride_through_s": 0.0}
            await hass.start()
            entry_id = await hass.set_up(topology)
            watcher = asyncio.create_task(simulator.watch())
            yield Rack(
                simulator, hass, entry_id, {s["id"]: s["outlets"] for s in topology["services"]}
            )
        finally:
            print(f"Home Assistant's log ends:\n{hass.log_tail()}")
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await hass.stop()
            if simulator_process.returncode is None:
                simulator_process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(simulator_process.wait(), STOP_TIMEOUT_S)


async def test_a_killed_home_assistant_neither_repowers_nor_forgets(rack: Rack) -> None:
    hass, simulator = rack.hass, rack.simulator
    held_outlets = set(rack.services[HELD])

    async def all_on() -> bool:
        states = await hass.states()
        return all(allocation(states, sid) == "on" for sid in rack.services)

    await _until("every service on", all_on, CYCLES_TIMEOUT_S)

    # --- 1. The administrator's hold, on mains ------------------------------------------------
    await hass.call(DOMAIN, "shed_service", config_entry_id=rack.entry_id, service=HELD)

    async def held_stopping() -> bool:
        return (await simulator.status())["services"][HELD]["mode"] == "stopping"

    await _until(f"{HELD} stopping", held_stopping, CYCLES_TIMEOUT_S)
    held_killed_at = len(simulator.samples)
    await hass.kill()
    await hass.start()
    await hass.ready(rack.entry_id, list(rack.services))
    states = await hass.states()
    assert hold(states, HELD) == "held_off"
    assert allocation(states, HELD) in OFF_STATES

    async def held_down() -> bool:
        states = await hass.states()
        status = await simulator.status()
        return allocation(states, HELD) == "off" and not any(
            status["outlets"][o]["is_on"] for o in held_outlets
        )

    # Watched on to the end, through the outage, another crash and mains returning.
    await _until(f"{HELD} off with its outlets cut", held_down, CYCLES_TIMEOUT_S)

    # --- 2. Killed in the middle of shedding, mains off ---------------------------------------
    conservative = f"switch.{SITE}_conservative_plan"
    await hass.call("switch", "turn_on", entity_id=conservative)
    assert await simulator.command("outage", "start") == "ok"
    _note("outage")

    async def mid_shedding() -> tuple[set[str], set[str]] | None:
        states = await hass.states()
        shed = {s for s in rack.services if s != HELD and allocation(states, s) == "off"}
        stopping = {s for s in rack.services if allocation(states, s) == "stopping"}
        return (shed, stopping) if shed and stopping else None

    shed, stopping = await _until("services shed and stopping", mid_shedding, SHED_TIMEOUT_S)
    killed_at = len(simulator.samples)
    await hass.kill()
    status = await simulator.status()
    assert not status["mains_on"]
    shed_outlets = {o for sid in shed for o in rack.services[sid]}
    assert not any(status["outlets"][o]["is_on"] for o in shed_outlets), status["outlets"]
    for sid in shed | stopping:
        assert status["services"][sid]["mode"] not in UP_MODES, (sid, status["services"][sid])

    await hass.start()
    await hass.ready(rack.entry_id, list(rack.services))
    states = await hass.states()
    assert states[f"sensor.{SITE}_controller_state"]["state"] in ("shedding", "critical_only")
    assert states[conservative]["state"] == "on"
    assert {s: allocation(states, s) for s in shed} == dict.fromkeys(shed, "off")
    assert {s for s in stopping if allocation(states, s) not in OFF_STATES} == set()
    assert (hold(states, HELD), allocation(states, HELD)) == ("held_off", "off")
    await hass.cycles(CYCLES_WATCHED)
    states = await hass.states()
    assert {s: allocation(states, s) for s in shed} == dict.fromkeys(shed, "off")
    assert {s for s in stopping if allocation(states, s) not in OFF_STATES} == set()
    went_down = shed | stopping | {HELD}
    assert came_back(simulator.samples[killed_at:], went_down, shed_outlets | held_outlets) == []

    # --- 3. Mains returns: the shed services start again, the held one does not ---------------
    assert await simulator.command("outage", "end") == "ok"
    _note("mains back")

    async def restarted() -> set[str] | None:
        states = await hass.states()
        return {s for s in shed | stopping if allocation(states, s) in ("starting", "on")} or None

    await _until("a shed service started again", restarted, RESTORE_TIMEOUT_S)
    states = await hass.states()
    assert (hold(states, HELD), allocation(states, HELD)) == ("held_off", "off")
    assert came_back(simulator.samples[held_killed_at:], {HELD}, held_outlets) == []
    assert simulator.samples[-1]["services"][HELD]["mode"] not in UP_MODES
