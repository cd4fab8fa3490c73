"""Wake-on-LAN at a start: a service with a `mac` gets one magic packet each time it is started,
through Home Assistant's `wake_on_lan` action when it is there, else the project's own sender
over UDP; a service without one gets none, and a packet that cannot be sent is reported.

The small simulated site on Modbus TCP; batch is shed and restored through the actions, and the
packets are caught where they land: a UDP socket on loopback, or the action's calls.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any
from unittest.mock import patch

import pytest
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.exceptions import HomeAssistantError
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.power_allocation import coordinator as coordinator_module
from custom_components.power_allocation.const import DOMAIN, EVENT_DECISION
from custom_components.power_allocation.drivers.wake_on_lan import magic_packet
from custom_components.power_allocation.engine.controller import (
    OutageController,
    Phase,
    ServiceControl,
    StartService,
    initial_state,
)
from custom_components.power_allocation.engine.model import TopologyError
from custom_components.power_allocation.topology import WakeOnLan, parse_topology
from tests.engine.test_controller import IDLE_W, SITE, telemetry
from tests.fixtures.modbus_site import ModbusSite
from tests.site_entry import BATCH_OUTLET, SiteRun, small_site_entry
from tests.test_topology import DOCUMENT

MAC = "AA-BB-CC-00-11-22"
NORMALISED_MAC = "aa:bb:cc:00:11:22"
RECEIVE_TIMEOUT_S = 5.0


def _with_first_service(**fields: Any) -> dict[str, Any]:
    document = copy.deepcopy(DOCUMENT)
    document["services"][0].update(fields)
    return document


def test_a_mac_is_kept_normalised_with_where_it_is_sent() -> None:
    first = DOCUMENT["services"][0]["id"]
    default = parse_topology(_with_first_service(mac=MAC)).controls[first].wake
    assert default == WakeOnLan(NORMALISED_MAC, "255.255.255.255", 9)
    directed = (
        parse_topology(_with_first_service(mac=MAC, wol_broadcast="192.168.10.255", wol_port="7"))
        .controls[first]
        .wake
    )
    assert directed == WakeOnLan(NORMALISED_MAC, "192.168.10.255", 7)
    assert all(c.wake is None for c in parse_topology(DOCUMENT).controls.values())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mac": "aa:bb:cc:dd:ee"}, r"\.mac: not a MAC address"),
        ({"mac": "aa:bb:cc:dd:ee:gg"}, r"\.mac: not a MAC address"),
        ({"mac": "aa:bb-cc:dd:ee:ff"}, r"\.mac: not a MAC address"),
        ({"mac": 12}, r"\.mac: not a MAC address"),
        ({"mac": MAC, "wol_broadcast": "broadcast.lan"}, r"\.wol_broadcast: not an IPv4"),
        ({"mac": MAC, "wol_port": 0}, r"\.wol_port: "),
        ({"wol_broadcast": "10.0.0.255"}, r"\.wol_broadcast: only used with a mac"),
        ({"wol_port": 9}, r"\.wol_port: only used with a mac"),
    ],
)
def test_a_bad_wake_on_lan_field_is_named(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        parse_topology(_with_first_service(**fields))


class Packets(asyncio.DatagramProtocol):
    """What a UDP socket on loopback receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.append(data)
        self.arrived.set()


@pytest.fixture
async def listener(socket_enabled: None) -> AsyncIterator[tuple[Packets, int]]:
    """A UDP socket on 127.0.0.1 and a free port: what it receives, and its port."""
    loop = asyncio.get_running_loop()
    transport, packets = await loop.create_datagram_endpoint(Packets, local_addr=("127.0.0.1", 0))
    try:
        yield packets, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


def entry_with_batch(modbus_site: ModbusSite, **fields: Any) -> MockConfigEntry:
    """The small site, batch's service carrying `fields` (its mac, where it is sent)."""
    entry = small_site_entry(modbus_site)
    options = dict(entry.options)
    options["services"] = [
        {**s, **fields} if s["id"] == "batch" else s for s in options["services"]
    ]
    return MockConfigEntry(
        domain=DOMAIN,
        title=entry.title,
        unique_id=entry.unique_id,
        data=dict(entry.data),
        options=options,
    )


async def shed_and_restore_batch(run: SiteRun) -> None:
    """Set the site up, stop batch (its outlet cut), then start it again until it runs."""
    await run.set_up()
    await run.cycle(3)
    await run.call("shed_service", service="batch")
    await run.cycle_until(lambda: not run.outlet_on(BATCH_OUTLET))
    await run.cycle()
    await run.call("restore_service", service="batch")
    await run.cycle_until(lambda: run.state("sensor.rack_a_batch_allocation") == "on")
    await run.cycle(3)


def batch_starts(decisions: list[Any]) -> list[dict[str, Any]]:
    return [
        e.data for e in decisions if e.data["service"] == "batch" and e.data["action"] == "start"
    ]


@pytest.fixture
def own_sender_calls() -> Iterator[list[tuple[Any, ...]]]:
    """Every packet the project's own sender is asked for (and sends)."""
    calls: list[tuple[Any, ...]] = []
    send = coordinator_module.send_magic_packet

    async def recording(*args: Any) -> None:
        calls.append(args)
        await send(*args)

    with patch.object(coordinator_module, "send_magic_packet", recording):
        yield calls


@pytest.mark.usefixtures("small_site_clock")
async def test_a_start_sends_one_packet_with_the_own_sender(
    hass: HomeAssistant,
    modbus_site: ModbusSite,
    listener: tuple[Packets, int],
    own_sender_calls: list[tuple[Any, ...]],
) -> None:
    """No `wake_on_lan` integration: the packet goes out over UDP, once, as batch starts."""
    packets, port = listener
    entry = entry_with_batch(modbus_site, mac=MAC, wol_broadcast="127.0.0.1", wol_port=port)
    run = SiteRun.small(hass, modbus_site, entry)
    decisions = async_capture_events(hass, EVENT_DECISION)
    await shed_and_restore_batch(run)
    await asyncio.wait_for(packets.arrived.wait(), RECEIVE_TIMEOUT_S)
    assert packets.received == [magic_packet(NORMALISED_MAC)]
    assert own_sender_calls == [(NORMALISED_MAC, "127.0.0.1", port)]
    (start,) = batch_starts(decisions)
    assert start["ok"] is True
    assert start["error"] is None
    assert run.outlet_on(BATCH_OUTLET), "the packet is in addition to the outlet"
    await run.unload()


@pytest.mark.usefixtures("small_site_clock")
async def test_a_start_sends_one_packet_through_home_assistants_action(
    hass: HomeAssistant,
    modbus_site: ModbusSite,
    listener: tuple[Packets, int],
    own_sender_calls: list[tuple[Any, ...]],
) -> None:
    """With `wake_on_lan.send_magic_packet` registered, it is called (once) instead."""
    packets, port = listener
    calls: list[ServiceCall] = []

    async def send(call: ServiceCall) -> None:
        calls.append(call)

    hass.services.async_register("wake_on_lan", "send_magic_packet", send)
    entry = entry_with_batch(modbus_site, mac=MAC, wol_broadcast="127.0.0.1", wol_port=port)
    run = SiteRun.small(hass, modbus_site, entry)
    await shed_and_restore_batch(run)
    assert [dict(c.data) for c in calls] == [
        {"mac": NORMALISED_MAC, "broadcast_address": "127.0.0.1", "broadcast_port": port}
    ]
    assert own_sender_calls == []
    assert packets.received == []
    await run.unload()


@pytest.mark.usefixtures("small_site_clock")
async def test_a_service_without_a_mac_gets_no_packet(
    hass: HomeAssistant, modbus_site: ModbusSite, own_sender_calls: list[tuple[Any, ...]]
) -> None:
    """Neither way: nothing is sent to a MAC the user did not configure."""
    calls: list[ServiceCall] = []

    async def send(call: ServiceCall) -> None:
        calls.append(call)

    run = SiteRun.small(hass, modbus_site)
    decisions = async_capture_events(hass, EVENT_DECISION)
    await shed_and_restore_batch(run)
    assert batch_starts(decisions), "batch was started"
    assert own_sender_calls == []
    hass.services.async_register("wake_on_lan", "send_magic_packet", send)
    await run.call("shed_service", service="batch")
    await run.cycle_until(lambda: not run.outlet_on(BATCH_OUTLET))
    await run.cycle()
    await run.call("restore_service", service="batch")
    await run.cycle_until(lambda: run.state("sensor.rack_a_batch_allocation") == "on")
    assert len(batch_starts(decisions)) == 2
    assert calls == []
    assert own_sender_calls == []
    await run.unload()


@pytest.mark.usefixtures("small_site_clock")
async def test_a_packet_that_cannot_be_sent_is_reported_and_the_start_goes_on(
    hass: HomeAssistant, modbus_site: ModbusSite, caplog: pytest.LogCaptureFixture
) -> None:
    async def refuse(call: ServiceCall) -> None:
        raise HomeAssistantError("no route to the broadcast address")

    hass.services.async_register("wake_on_lan", "send_magic_packet", refuse)
    entry = entry_with_batch(modbus_site, mac=MAC)
    run = SiteRun.small(hass, modbus_site, entry)
    decisions = async_capture_events(hass, EVENT_DECISION)
    await shed_and_restore_batch(run)
    (start,) = batch_starts(decisions)
    assert start["ok"] is False
    assert start["error"] == (f"wake-on-lan {NORMALISED_MAC}: no route to the broadcast address")
    assert f"start batch failed: wake-on-lan {NORMALISED_MAC}" in caplog.text
    assert run.outlet_on(BATCH_OUTLET)
    assert run.state("sensor.rack_a_batch_allocation") == "on"
    await run.unload()


def test_what_depends_on_a_woken_host_waits_until_its_draw_shows_it_running() -> None:
    """A restore: network is powered (and woken) but only draws idle, as a host that never
    booted does. Its start is asked again (each time with another packet), and storage, which
    needs it, is not started until network's draw shows it up (I1, I6)."""
    controller = OutageController(SITE)
    state = replace(
        initial_state(SITE),
        services={sid: ServiceControl(phase=Phase.OFF) for sid in SITE.service_by_id},
    )
    starts: list[tuple[float, str]] = []
    booted_s = 600.0
    for now_s in range(0, 1200, 10):
        down = {"network": IDLE_W["network"]} if now_s < booted_s else {}
        reading = telemetry(now_s, state, mains_on=True, soc_ratio=1.0, draw_w=down)
        result = controller.step(state, reading)
        state = result.state
        starts += [(now_s, c.service_id) for c in result.commands if isinstance(c, StartService)]
    network = [t for t, sid in starts if sid == "network"]
    storage = [t for t, sid in starts if sid == "storage"]
    assert len([t for t in network if t < booted_s]) > 1, "the start was asked again"
    assert storage
    assert min(storage) > booted_s
