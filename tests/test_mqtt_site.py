"""A site read entirely over MQTT: the UPS on NUT-style topics, the outlets as Tasmota plugs, the
services' host agents on the project's schema, all through the simulator's bridge on a real
Mosquitto. Mains fails: a throttle-capable service is capped through its agent; a load step
pushes a PDU towards its breaker and the overload guard predicts it before it trips.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.power_allocation.const import (
    EVENT_DECISION,
    EVENT_OVERLOAD_PREDICTED,
)
from custom_components.power_allocation.engine.scenario import build_scenario
from simulator.mqtt_bridge import tasmota_topic
from simulator.site import SimulatedSite
from tests.fixtures.modbus_site import HOST
from tests.fixtures.mqtt_broker import Mosquitto
from tests.site_entry import SiteRun, agents_bridge, site_clock, site_entry, ups_item

PREFIX = "mq"
SITE: dict[str, Any] = {
    "name": "mqtt-rack",
    "seed": 5,
    "step_s": 1,
    "ups": [
        {"id": "ups1", "capacity_wh": 600, "rated_w": 1500, "runtime_full_load_s": 300,
         "peukert_k": 1.3, "efficiency": 0.9, "soc_start_pct": 100}
    ],
    "pdus": [{"id": "pdu-a", "ups": "ups1", "limit_w": 900, "outlets": 3}],
    "services": [
        {"id": "core", "priority": "critical", "outlets": ["pdu-a/1"], "shutdown_s": 10,
         "startup_s": 10, "load": {"constant_w": 120}},
        {"id": "render", "priority": "low", "outlets": ["pdu-a/2"], "shutdown_s": 10,
         "startup_s": 10, "idle_w": 5, "throttle": {"min_w": 100}, "load": {"constant_w": 300}},
        {"id": "spare", "priority": "medium", "outlets": ["pdu-a/3"], "shutdown_s": 10,
         "startup_s": 10, "idle_w": 5, "load": {"constant_w": 150}},
    ],
    "timeline": {"history_s": 0, "outage_at_s": 3600, "outage_duration_s": 600},
}  # fmt: skip


def mqtt_site_entry(
    broker_port: int, *, title: str = "Rack MQTT", prefix: str = PREFIX
) -> MockConfigEntry:
    """The site, every device and agent on the broker under the base topic `prefix`."""
    ups_source = {"kind": "mqtt", "profile": "nut", "variables": {"prefix": f"{prefix}/nut/ups1"}}
    pdu = {
        **SITE["pdus"][0],
        "source": {
            "kind": "mqtt",
            "profile": "tasmota",
            "outlets": {n: {"topic": tasmota_topic(prefix, f"pdu-a/{n}")} for n in (1, 2, 3)},
        },
    }
    return site_entry(
        title,
        SITE,
        ups=[ups_item(SITE["ups"][0], ups_source)],
        pdus=[pdu],
        mqtt={"host": HOST, "port": broker_port, "base_topic": prefix},
        agents=True,
    )


@asynccontextmanager
async def mqtt_site_run(
    hass: HomeAssistant, broker: Mosquitto, *, title: str = "Rack MQTT", prefix: str = PREFIX
) -> AsyncIterator[SiteRun]:
    """The site on the bridge alone, in Home Assistant (not set up)."""
    site = SimulatedSite(build_scenario(SITE, {}), follow_timeline=False)
    async with agents_bridge(site, broker, "tasmota", prefix) as bridge:
        with site_clock(site):
            yield SiteRun(
                hass, mqtt_site_entry(broker.port, title=title, prefix=prefix), site, bridge=bridge
            )


@pytest.fixture
async def run(
    hass: HomeAssistant, socket_enabled: None, mqtt_broker: Mosquitto
) -> AsyncIterator[SiteRun]:
    """The site on the bridge alone, in Home Assistant (not set up)."""
    async with mqtt_site_run(hass, mqtt_broker) as site_run:
        yield site_run


async def test_mqtt_site_throttles_through_its_agent_and_predicts_an_overload(
    hass: HomeAssistant, run: SiteRun
) -> None:
    site = run.simulated
    # The broker connection is up before the first refresh; the devices speak when they publish.
    await run.set_up()
    decisions = async_capture_events(hass, EVENT_DECISION)
    overloads = async_capture_events(hass, EVENT_OVERLOAD_PREDICTED)

    for _ in range(3):
        await run.cycle()
    assert run.state("sensor.rack_mqtt_ups1_state_of_charge") == "100.0"
    assert float(run.state("sensor.rack_mqtt_pdu_a_total_power")) > 500
    assert run.state("switch.rack_mqtt_pdu_a_outlet_2") == "on"

    # The load steps up towards the breaker: the guard warns before anything trips.
    site.step_load("render", 450.0, 600.0)
    for _ in range(12):
        await run.cycle()
        if overloads:
            break
    assert overloads, "the guard predicted the PDU's overload"
    assert overloads[0].data["node"] == "pdu-a"

    site.set_mains(False)
    for _ in range(30):
        await run.cycle()
        if any(e.data["action"] == "throttle" for e in decisions):
            break
    throttles = [e.data for e in decisions if e.data["action"] == "throttle"]
    assert throttles, [e.data for e in decisions]
    assert throttles[0]["service"] == "render"
    assert throttles[0]["ok"], throttles[0]
    assert site.snapshot().services["render"].cap_w == throttles[0]["cap_w"]
    assert run.state("switch.rack_mqtt_pdu_a_outlet_1") == "on"
    await run.unload()
