"""Faults: a device that stops answering, a broken topology, a site where nothing answers.

A device drops off the network for real: its Modbus source points at a TCP relay in front of
the simulator's server, and stopping the relay closes its connections and refuses new ones, as
an unplugged network card does. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import patch

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.update_coordinator import UpdateFailed
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.power_allocation.const import DOMAIN, EVENT_DECISION, EVENT_FAULT
from custom_components.power_allocation.engine.controller import Mode
from custom_components.power_allocation.sources import SiteDrivers
from tests.fixtures.modbus_site import HOST, ModbusSite
from tests.site_entry import BATCH_OUTLET, CRITICAL_OUTLETS, SiteRun, small_site_entry

COORDINATOR_LOGGER = "custom_components.power_allocation.coordinator"
PDU_B_ENTITIES = (
    "sensor.rack_a_pdu_b_total_power",
    "sensor.rack_a_pdu_b_outlet_3_power",
    "switch.rack_a_pdu_b_outlet_3",
)


pytestmark = pytest.mark.usefixtures("small_site_clock")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class Relay:
    """A TCP relay in front of one device's server, on a port of its own that it keeps."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, HOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server is None:
            return
        self._server.close()
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        device_in, device_out = await asyncio.open_connection(HOST, self.target_port)
        self._writers |= {client_out, device_out}
        await asyncio.gather(_pipe(client_in, device_out), _pipe(device_in, client_out))


@pytest.fixture
async def pdu_b_relay(modbus_site: ModbusSite) -> AsyncIterator[Relay]:
    relay = Relay(modbus_site.server.ports["pdu-b"])
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


def _entry(modbus_site: ModbusSite, **changes: Any) -> MockConfigEntry:
    """The small site's entry with some of its PDUs and services replaced."""
    base = small_site_entry(modbus_site)
    pdus = [changes.get(p["id"], p) for p in base.options["pdus"]]
    services = [changes.get(s["id"], s) for s in base.options["services"]]
    return MockConfigEntry(
        domain=DOMAIN,
        title=base.title,
        unique_id=base.unique_id,
        data=dict(base.data),
        options={"pdus": pdus, "services": services},
    )


def _via_relay(modbus_site: ModbusSite, relay: Relay) -> MockConfigEntry:
    pdu_b = next(p for p in small_site_entry(modbus_site).options["pdus"] if p["id"] == "pdu-b")
    return _entry(
        modbus_site, **{"pdu-b": {**pdu_b, "source": {**pdu_b["source"], "port": relay.port}}}
    )


def _log_count(caplog: pytest.LogCaptureFixture, message: str) -> int:
    return sum(
        1 for r in caplog.records if r.name == COORDINATOR_LOGGER and r.getMessage() == message
    )


async def test_a_lost_pdu_raises_a_repair_and_comes_back(
    hass: HomeAssistant,
    modbus_site: ModbusSite,
    pdu_b_relay: Relay,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=COORDINATOR_LOGGER)
    run = SiteRun.small(hass, modbus_site, _via_relay(modbus_site, pdu_b_relay))
    await run.set_up()
    await run.cycle(2)
    assert all(run.state(e) != "unavailable" for e in PDU_B_ENTITIES)
    issue_id = f"device_unreachable_{run.entry.entry_id}_pdu-b"
    issues = ir.async_get(hass)
    assert issues.async_get_issue(DOMAIN, issue_id) is None

    await pdu_b_relay.stop()
    await run.cycle(5)
    assert {run.state(e) for e in PDU_B_ENTITIES} == {"unavailable"}
    assert run.state("sensor.rack_a_pdu_a_total_power") != "unavailable"
    assert run.state("sensor.rack_a_controller_state") == "normal"
    issue = issues.async_get_issue(DOMAIN, issue_id)
    assert issue is not None
    assert issue.translation_key == "device_unreachable"
    assert issue.translation_placeholders == {"site": "Rack A", "device": "pdu-b"}
    assert run.coordinator.unavailable_devices == frozenset({"pdu-b"})
    assert _log_count(caplog, "Rack A: pdu-b is unavailable") == 1, "logged once when lost"

    await pdu_b_relay.start()
    await run.cycle_until(lambda: run.coordinator.device_available("pdu-b"))
    await run.cycle(3)
    assert issues.async_get_issue(DOMAIN, issue_id) is None
    assert all(run.state(e) != "unavailable" for e in PDU_B_ENTITIES)
    assert run.state("switch.rack_a_pdu_b_outlet_3") == "on"
    assert _log_count(caplog, "Rack A: pdu-b is unavailable") == 1
    assert _log_count(caplog, "Rack A: pdu-b is available again") == 1, "logged once when back"
    await run.unload()


async def test_critical_services_are_never_cut_for_lack_of_data(
    hass: HomeAssistant, modbus_site: ModbusSite, pdu_b_relay: Relay
) -> None:
    run = SiteRun.small(hass, modbus_site, _via_relay(modbus_site, pdu_b_relay))
    await run.set_up()
    await run.cycle(3)
    decisions = async_capture_events(hass, EVENT_DECISION)
    # db draws through both PDUs: without pdu-b its draw is unknown (I7).
    await pdu_b_relay.stop()
    modbus_site.site.set_mains(False)
    await run.cycle(30)
    assert run.coordinator.last_update_success, "the controller keeps running"
    assert run.coordinator.data.on_battery
    assert run.coordinator.data.mode is not Mode.NORMAL
    assert all(run.outlet_on(o) for o in CRITICAL_OUTLETS)
    assert not {e.data["service"] for e in decisions} & {"network", "db"}
    # The low service is still shed; cutting its outlet on the silent PDU fails, and says so.
    batch = [e.data for e in decisions if e.data["service"] == "batch"]
    assert batch
    assert batch[0]["action"] == "stop"
    failed = [d for d in batch if not d["ok"]]
    assert failed
    assert "pdu-b/3" in failed[0]["error"]
    assert run.outlet_on(BATCH_OUTLET)
    await run.unload()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"batch": {"id": "batch", "priority": "low", "outlets": ["pdu-z/1"]}},
            "unknown outlet 'pdu-z/1'",
        ),
        (
            {"network": {"id": "network", "priority": "vital", "outlets": ["pdu-a/1"]}},
            "services[0] (network).priority",
        ),
    ],
    ids=["unknown-outlet", "bad-priority"],
)
async def test_a_broken_topology_fails_setup_with_a_repair(
    hass: HomeAssistant, modbus_site: ModbusSite, change: dict[str, Any], problem: str
) -> None:
    entry = _entry(modbus_site, **change)
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_ERROR
    issue_id = f"broken_topology_{entry.entry_id}"
    issue = ir.async_get(hass).async_get_issue(DOMAIN, issue_id)
    assert issue is not None
    assert issue.severity is ir.IssueSeverity.ERROR
    assert problem in issue.translation_placeholders["error"]
    assert problem in entry.reason

    # Fixed in the options: the entry sets up and the repair goes.
    hass.config_entries.async_update_entry(
        entry, options=dict(small_site_entry(modbus_site).options)
    )
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is None
    assert await hass.config_entries.async_unload(entry.entry_id)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


async def test_a_site_where_nothing_answers_is_not_ready(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    base = small_site_entry(modbus_site)
    port = _closed_port()
    topology = dict(base.data["topology"])
    topology["ups"] = [{**u, "source": {**u["source"], "port": port}} for u in topology["ups"]]
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=base.title,
        data={**base.data, "topology": topology},
        options={
            "pdus": [{**p, "source": {**p["source"], "port": port}} for p in base.options["pdus"]],
            "services": list(base.options["services"]),
        },
    )
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert entry.reason == "No UPS or PDU of the site answered"
    issues = ir.async_get(hass)
    for device in ("ups1", "pdu-a", "pdu-b"):
        assert issues.async_get_issue(DOMAIN, f"device_unreachable_{entry.entry_id}_{device}")
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_when_every_device_goes_silent_the_update_fails(
    hass: HomeAssistant, modbus_site: ModbusSite, caplog: pytest.LogCaptureFixture
) -> None:
    run = SiteRun.small(hass, modbus_site)
    await run.set_up()
    await run.cycle(3)
    coordinator = run.coordinator
    registry = er.async_get(hass)
    entity_ids = [
        e.entity_id for e in er.async_entries_for_config_entry(registry, run.entry.entry_id)
    ]
    assert len(entity_ids) > 20
    assert not [e for e in entity_ids if run.state(e) == "unavailable"]
    phases = {sid: c.phase for sid, c in coordinator.control.decider.state.services.items()}
    decisions = async_capture_events(hass, EVENT_DECISION)
    sent: list[Any] = []
    execute = SiteDrivers.execute

    async def record(drivers: SiteDrivers, command: Any) -> Any:
        sent.append(command)
        return await execute(drivers, command)

    await modbus_site.server.stop()
    with patch.object(SiteDrivers, "execute", record):
        await run.cycle()

    # The failure is the update's, said as the integration says it.
    assert not coordinator.last_update_success
    assert isinstance(coordinator.last_exception, UpdateFailed)
    assert coordinator.last_exception.translation_key == "no_device_answered"
    assert "No UPS or PDU of the site answered" in caplog.text
    # Every entity of the site is unavailable, and every device has its repair issue.
    assert [e for e in entity_ids if run.state(e) != "unavailable"] == []
    assert coordinator.unavailable_devices == frozenset({"ups1", "pdu-a", "pdu-b"})
    issues = ir.async_get(hass)
    for device in ("ups1", "pdu-a", "pdu-b"):
        issue = issues.async_get_issue(DOMAIN, f"device_unreachable_{run.entry.entry_id}_{device}")
        assert issue is not None
        assert issue.translation_placeholders == {"site": "Rack A", "device": device}
    # The controller ran all the same, on mains, and cut nothing for lack of data (I7): no
    # command reached a device or a host, and no service changed phase.
    view = coordinator.control.view
    assert view is not None
    assert view.now_s == coordinator.clock()
    assert view.mode is Mode.NORMAL
    assert sent == []
    assert decisions == []
    assert {sid: c.phase for sid, c in coordinator.control.decider.state.services.items()} == phases
    assert all(run.outlet_on(o) for o in (*CRITICAL_OUTLETS, BATCH_OUTLET))
    await run.unload()


async def test_a_service_switched_off_by_someone_else_is_reported_and_held_off(
    hass: HomeAssistant, modbus_site: ModbusSite
) -> None:
    """A hand on the PDU (or a forged command) turns batch's outlet off on mains: reported
    (event, warning, repair), not started again behind whoever did it, until released."""
    run = SiteRun.small(hass, modbus_site)
    await run.set_up()
    await run.cycle(3)
    faults = async_capture_events(hass, EVENT_FAULT)
    decisions = async_capture_events(hass, EVENT_DECISION)
    modbus_site.site.set_outlet(BATCH_OUTLET, False)
    await run.cycle_until(lambda: any(e.data["kind"] == "found_stopped" for e in faults))
    found = next(e.data for e in faults if e.data["kind"] == "found_stopped")
    assert found["service"] == "batch"
    issue_id = f"service_found_stopped_{run.entry.entry_id}_batch"
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is not None
    await run.cycle(30)
    assert not run.outlet_on(BATCH_OUTLET)
    assert not [e for e in decisions if e.data["service"] == "batch"]
    # Released by an administrator: it is started again, and the repair goes.
    await run.call("restore_service", service="batch")
    await run.cycle_until(lambda: run.outlet_on(BATCH_OUTLET))
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is None
    await run.unload()
