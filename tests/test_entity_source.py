"""`EntitySource` against real Home Assistant entities: a UPS as the NUT integration shows it, and
smart plugs (input_booleans and power sensors); then a site that is nothing but entities."""

from __future__ import annotations

from typing import Any

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import (
    EVENT_CALL_SERVICE,
    PERCENTAGE,
    STATE_OFF,
    STATE_ON,
    STATE_UNAVAILABLE,
    STATE_UNKNOWN,
    UnitOfPower,
    UnitOfTime,
)
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.power_allocation.const import CONF_SITE_NAME, CONF_TOPOLOGY, DOMAIN
from custom_components.power_allocation.drivers.interface import (
    Command,
    CommandKind,
    OutletReading,
    UpsReading,
)
from custom_components.power_allocation.entity_source import EntitySource

STATUS = "sensor.ups_status"
ON_BATTERY = "binary_sensor.ups_on_battery"
RUNTIME = "sensor.ups_battery_runtime"
CHARGE = "sensor.ups_battery_charge"
LOAD = "sensor.ups_load"
PLUG_1 = "input_boolean.plug_1"
PLUG_2 = "input_boolean.plug_2"
PLUG_1_POWER = "sensor.plug_1_power"
NUT_UPS = {"kind": "entities", "status": STATUS, "runtime": RUNTIME, "charge": CHARGE, "load": LOAD}
PLUGS = {
    "plugs/1": {"switch": PLUG_1, "power": PLUG_1_POWER},
    "plugs/2": {"switch": PLUG_2},
    "plugs/3": {"power": "sensor.plug_3_power"},
}


@pytest.fixture
async def plugs(hass: HomeAssistant) -> None:
    """Two input_booleans standing in for smart plugs, both on."""
    assert await async_setup_component(
        hass,
        "input_boolean",
        {"input_boolean": {"plug_1": {"initial": True}, "plug_2": {"initial": True}}},
    )
    await hass.async_block_till_done()


def _source(hass: HomeAssistant, ups: dict[str, Any] = NUT_UPS) -> EntitySource:
    return EntitySource(hass, {"ups1": ups}, PLUGS, {"ups1": 1000.0})


async def _ups(hass: HomeAssistant, ups: dict[str, Any] = NUT_UPS) -> UpsReading:
    return (await _source(hass, ups).read(0.0)).ups["ups1"]


def _set(hass: HomeAssistant, entity_id: str, state: str, unit: str | None = None) -> None:
    hass.states.async_set(entity_id, state, {} if unit is None else {"unit_of_measurement": unit})


@pytest.mark.parametrize(
    ("status", "on_battery", "online", "low_battery"),
    [
        ("OL", False, True, False),
        ("OL CHRG", False, True, False),
        ("OB", True, False, False),
        ("OB DISCHRG", True, False, False),
        ("OB LB", True, False, True),
        ("Online", False, True, False),
        ("On Battery", True, False, False),
        ("On Battery, Low Battery", True, False, True),
        # "LB" and "OB" are flags, not substrings: BOOST is not on battery.
        ("OL BOOST", False, True, False),
    ],
)
async def test_status_words(
    hass: HomeAssistant, status: str, on_battery: bool, online: bool, low_battery: bool
) -> None:
    _set(hass, STATUS, status)
    reading = await _ups(hass)
    assert reading.available
    assert (reading.on_battery, reading.online, reading.low_battery) == (
        on_battery,
        online,
        low_battery,
    )


@pytest.mark.parametrize("state", [STATE_UNAVAILABLE, STATE_UNKNOWN, None])
async def test_status_unusable_means_unavailable(hass: HomeAssistant, state: str | None) -> None:
    """Unavailable, unknown or missing: the UPS is unavailable, with no guess at its flags."""
    if state is not None:
        _set(hass, STATUS, state)
    _set(hass, CHARGE, "80", PERCENTAGE)
    reading = await _ups(hass)
    assert reading == UpsReading("ups1", available=False, soc_pct=80.0)


async def test_without_a_mains_entity_the_ups_is_unavailable(hass: HomeAssistant) -> None:
    """parse_topology refuses such a source; built by hand, it never guesses mains."""
    _set(hass, CHARGE, "80", PERCENTAGE)
    reading = await _ups(hass, {"kind": "entities", "charge": CHARGE})
    assert reading == UpsReading("ups1", available=False, soc_pct=80.0)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (STATE_ON, UpsReading("ups1", available=True, on_battery=True, online=False)),
        (STATE_OFF, UpsReading("ups1", available=True, on_battery=False, online=True)),
        (STATE_UNAVAILABLE, UpsReading("ups1", available=False)),
    ],
)
async def test_on_battery_binary_sensor(
    hass: HomeAssistant, state: str, expected: UpsReading
) -> None:
    _set(hass, ON_BATTERY, state)
    assert await _ups(hass, {"kind": "entities", "on_battery": ON_BATTERY}) == expected


@pytest.mark.parametrize(
    ("state", "unit", "runtime_s"),
    [
        ("600", UnitOfTime.SECONDS, 600.0),
        ("12.5", UnitOfTime.MINUTES, 750.0),
        ("1.5", UnitOfTime.HOURS, 5400.0),
        ("600", None, 600.0),  # NUT's battery.runtime is in seconds
        ("1", UnitOfTime.DAYS, None),  # a unit it does not know: no guess
        ("soon", UnitOfTime.SECONDS, None),
        ("nan", UnitOfTime.SECONDS, None),
        ("inf", UnitOfTime.SECONDS, None),
        (STATE_UNAVAILABLE, UnitOfTime.SECONDS, None),
        (STATE_UNKNOWN, UnitOfTime.SECONDS, None),
    ],
)
async def test_runtime(
    hass: HomeAssistant, state: str, unit: str | None, runtime_s: float | None
) -> None:
    _set(hass, STATUS, "OB")
    _set(hass, RUNTIME, state, unit)
    assert (await _ups(hass)).runtime_s == runtime_s


@pytest.mark.parametrize(
    ("state", "unit", "output_w"),
    [
        ("450", UnitOfPower.WATT, 450.0),
        ("0.45", UnitOfPower.KILO_WATT, 450.0),
        ("45", PERCENTAGE, 450.0),  # of the UPS's rated 1000 W
        ("450", None, 450.0),
        ("45", "VA", None),
        ("heavy", PERCENTAGE, None),
        ("heavy", UnitOfPower.WATT, None),
        (STATE_UNAVAILABLE, UnitOfPower.WATT, None),
    ],
)
async def test_load(
    hass: HomeAssistant, state: str, unit: str | None, output_w: float | None
) -> None:
    _set(hass, STATUS, "OL")
    _set(hass, LOAD, state, unit)
    assert (await _ups(hass)).output_w == output_w


@pytest.mark.parametrize(
    ("state", "unit", "soc_pct"),
    [("85", PERCENTAGE, 85.0), ("85", None, 85.0), ("0.85", "ratio", None), ("full", None, None)],
)
async def test_charge(
    hass: HomeAssistant, state: str, unit: str | None, soc_pct: float | None
) -> None:
    _set(hass, STATUS, "OL")
    _set(hass, CHARGE, state, unit)
    assert (await _ups(hass)).soc_pct == soc_pct


async def test_plugs(hass: HomeAssistant, plugs: None) -> None:
    """A plug reads its relay and its meter; either one unusable makes it unavailable."""
    source = _source(hass)
    _set(hass, PLUG_1_POWER, "0.12", UnitOfPower.KILO_WATT)
    _set(hass, "sensor.plug_3_power", "30", UnitOfPower.WATT)
    outlets = (await source.read(5.0)).outlets
    assert outlets == {
        "plugs/1": OutletReading("plugs/1", available=True, power_w=120.0, is_on=True),
        "plugs/2": OutletReading("plugs/2", available=True, power_w=None, is_on=True),
        "plugs/3": OutletReading("plugs/3", available=True, power_w=30.0, is_on=None),
    }
    _set(hass, PLUG_1_POWER, STATE_UNKNOWN, UnitOfPower.WATT)
    _set(hass, PLUG_2, STATE_UNAVAILABLE)
    _set(hass, "sensor.plug_3_power", "n/a", UnitOfPower.WATT)
    outlets = (await source.read(15.0)).outlets
    assert outlets == {
        "plugs/1": OutletReading("plugs/1", available=False, power_w=None, is_on=True),
        "plugs/2": OutletReading("plugs/2", available=False, power_w=None, is_on=None),
        # A meter that answers nonsense is there, but its value is not taken.
        "plugs/3": OutletReading("plugs/3", available=True, power_w=None, is_on=None),
    }


async def test_outlet_commands_switch_the_plug(hass: HomeAssistant, plugs: None) -> None:
    source = _source(hass)
    await source.start()
    result = await source.execute(Command(CommandKind.OUTLET_OFF, "plugs/1"))
    assert result.ok
    assert result.error is None
    assert hass.states.get(PLUG_1).state == STATE_OFF
    assert hass.states.get(PLUG_2).state == STATE_ON
    assert (await source.read(1.0)).outlets["plugs/1"].is_on is False
    assert (await source.execute(Command(CommandKind.OUTLET_ON, "plugs/1"))).ok
    assert hass.states.get(PLUG_1).state == STATE_ON
    await source.stop()


@pytest.mark.parametrize(
    "command",
    [
        Command(CommandKind.OUTLET_OFF, "plugs/9"),  # not configured
        Command(CommandKind.OUTLET_OFF, "plugs/3"),  # metered, no switch
        Command(CommandKind.OUTLET_OFF, "ups1"),
        Command(CommandKind.AGENT_SHUTDOWN, "plugs/1"),  # a configured plug, not an outlet command
        Command(CommandKind.UPS_GROUP_OFF, "plugs/1"),
    ],
)
async def test_refuses_what_it_was_not_configured_to_switch(
    hass: HomeAssistant, plugs: None, command: Command
) -> None:
    calls = async_capture_events(hass, EVENT_CALL_SERVICE)
    result = await _source(hass).execute(command)
    await hass.async_block_till_done()
    assert not result.ok
    assert result.error == f"no switch entity for {command.target}"
    assert calls == []
    assert hass.states.get(PLUG_1).state == STATE_ON


async def test_a_failing_switch_is_reported(hass: HomeAssistant) -> None:
    """A switch whose domain has no turn_off: the error, not an exception."""
    source = EntitySource(hass, {}, {"plugs/1": {"switch": "sensor.not_a_switch"}}, {})
    result = await source.execute(Command(CommandKind.OUTLET_OFF, "plugs/1"))
    assert not result.ok
    assert result.error is not None
    assert result.error.startswith("sensor.not_a_switch: ")


def _entities_entry() -> MockConfigEntry:
    """A site read only from entities: the NUT-like UPS, and two plugs as its PDU."""
    ups = {
        "id": "ups1",
        "rated_w": 1000,
        "capacity_wh": 500,
        "runtime_full_load_s": 300,
        "source": NUT_UPS,
    }
    pdu = {
        "id": "plugs",
        "ups": "ups1",
        "limit_w": 1500,
        "outlets": 2,
        "source": {
            "kind": "entities",
            "outlets": {
                1: {"switch": PLUG_1, "power": PLUG_1_POWER},
                2: {"switch": PLUG_2, "power": "sensor.plug_2_power"},
            },
        },
    }
    services = [
        {"id": "nas", "priority": "critical", "outlets": ["plugs/1"]},
        {"id": "lab", "priority": "low", "outlets": ["plugs/2"], "shutdown_s": 10},
    ]
    return MockConfigEntry(
        domain=DOMAIN,
        title="Home",
        unique_id="home",
        data={CONF_SITE_NAME: "Home", CONF_TOPOLOGY: {"ups": [ups]}},
        options={"pdus": [pdu], "services": services},
    )


async def test_a_site_of_entities_loads_shows_and_switches(
    hass: HomeAssistant, plugs: None
) -> None:
    """The integration's entities show the NUT-like UPS and the plugs; the outlet switch holds
    its service off, and the input_boolean goes off once the service's draw shows it is down."""
    _set(hass, STATUS, "OL CHRG")
    _set(hass, RUNTIME, "30", UnitOfTime.MINUTES)
    _set(hass, CHARGE, "97", PERCENTAGE)
    _set(hass, LOAD, "18", PERCENTAGE)
    _set(hass, PLUG_1_POWER, "60", UnitOfPower.WATT)
    _set(hass, "sensor.plug_2_power", "0.12", UnitOfPower.KILO_WATT)
    entry = _entities_entry()
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED

    def state(entity_id: str) -> str:
        found = hass.states.get(entity_id)
        assert found is not None, entity_id
        return found.state

    assert state("binary_sensor.home_ups1_on_battery") == STATE_OFF
    assert state("binary_sensor.home_ups1_low_battery") == STATE_OFF
    assert state("sensor.home_ups1_state_of_charge") == "97.0"
    assert state("sensor.home_ups1_runtime_remaining") == "30.0"  # minutes, as suggested
    assert state("sensor.home_ups1_output_power") == "180.0"
    assert state("sensor.home_plugs_outlet_1_power") == "60.0"
    assert state("sensor.home_plugs_outlet_2_power") == "120.0"
    assert state("sensor.home_plugs_total_power") == "180.0"
    assert state("switch.home_plugs_outlet_2") == STATE_ON

    now = [1_800_000_000.0]
    coordinator = entry.runtime_data
    coordinator.clock = lambda: now[0]
    _set(hass, STATUS, "OB DISCHRG LB")
    await coordinator.async_refresh()
    await hass.async_block_till_done()
    assert state("binary_sensor.home_ups1_on_battery") == STATE_ON
    assert state("binary_sensor.home_ups1_low_battery") == STATE_ON

    _set(hass, STATUS, "OL")
    await hass.services.async_call(
        "switch", "turn_off", {"entity_id": "switch.home_plugs_outlet_2"}, blocking=True
    )

    async def cycles(count: int) -> None:
        for _ in range(count):
            now[0] += 10.0
            await coordinator.async_refresh()
            await hass.async_block_till_done()

    # Held off: nothing can ask lab's host to stop (no agent, no stop action), so its plug is
    # switched off once its shutdown_s (10 s) has run out, though it still draws (I3).
    assert state(PLUG_2) == STATE_ON
    for _ in range(6):
        await cycles(1)
        if state(PLUG_2) == STATE_OFF:
            break
    assert state(PLUG_2) == STATE_OFF
    assert state(PLUG_1) == STATE_ON
    # The outlet switch shows the relay as the next cycle reads it.
    await cycles(1)
    assert state("switch.home_plugs_outlet_2") == STATE_OFF

    _set(hass, STATUS, STATE_UNAVAILABLE)
    await coordinator.async_refresh()
    await hass.async_block_till_done()
    assert state("binary_sensor.home_ups1_on_battery") == STATE_UNAVAILABLE
    assert state("sensor.home_plugs_outlet_1_power") == "60.0"
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
