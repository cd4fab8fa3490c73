"""The site's retained status broadcast on `<base>/status` (docs/devices-mqtt.md): published by
the coordinator through the site's MQTT driver on a real Mosquitto, on change only, read back by
a second client; and, on a stand-in for the driver's connection, again after a reconnection and
a failure said once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from unittest.mock import AsyncMock, PropertyMock, patch

import pytest
from homeassistant.core import HomeAssistant

from custom_components.power_allocation.drivers.mqtt import MqttDriver, MqttDriverConfig
from custom_components.power_allocation.drivers.mqtt_status import STATUS_SCHEMA_VERSION
from custom_components.power_allocation.engine.controller import Mode
from custom_components.power_allocation.engine.model import Priority
from custom_components.power_allocation.site_control import ServiceView, SiteView, UpsView
from custom_components.power_allocation.status_broadcast import StatusBroadcast, site_status
from tests.fixtures.modbus_site import HOST
from tests.fixtures.mqtt_broker import Mosquitto, MqttPeer
from tests.site_entry import EPOCH_S, SiteRun
from tests.test_mqtt_site import mqtt_site_run

# A base topic of its own: nothing else on the session's broker retains a status there.
PREFIX = "status-rack"
STATUS = f"{PREFIX}/status"
MARKER = f"{PREFIX}/test-marker"
PeerFactory = Callable[..., MqttPeer]


@pytest.fixture
async def run(
    hass: HomeAssistant, socket_enabled: None, mqtt_broker: Mosquitto
) -> AsyncIterator[SiteRun]:
    """test_mqtt_site.py's site under its own base topic, on the bridge alone (not set up)."""
    async with mqtt_site_run(hass, mqtt_broker, title="Rack Status", prefix=PREFIX) as site_run:
        yield site_run


async def _cycle(run: SiteRun) -> None:
    """One cycle, and its status publish (a background task) done."""
    await run.cycle()
    await run.hass.async_block_till_done(wait_background_tasks=True)


async def _statuses(hass: HomeAssistant, peer: MqttPeer) -> list[dict[str, Any]]:
    """Every status the peer has received, once everything published before now reached it:
    the broker hands a subscriber its messages in order, so a marker it publishes now comes
    after them."""
    before = len(peer.messages_on(MARKER))
    await hass.async_add_executor_job(peer.publish, MARKER, b"x")
    await hass.async_add_executor_job(peer.wait_for, MARKER, before + 1)
    return [json.loads(payload) for payload in peer.messages_on(STATUS)]


async def test_the_site_broadcasts_its_status_retained_and_on_change_only(
    hass: HomeAssistant, run: SiteRun, mqtt_broker: Mosquitto, mqtt_peers: PeerFactory
) -> None:
    await run.set_up()
    await _cycle(run)
    await _cycle(run)

    # A newcomer gets the retained status at once, as mosquitto_sub -C 1 would.
    newcomer = mqtt_peers(mqtt_broker, "status-newcomer", [STATUS])
    retained = json.loads((await hass.async_add_executor_job(newcomer.wait_for, STATUS))[0])
    assert retained["schema"] == STATUS_SCHEMA_VERSION == 1
    assert retained["site"] == "Rack Status"
    assert retained["state"] == "normal"
    assert retained["on_battery"] is False
    assert retained["soc_pct"] == 100.0
    assert set(retained["services"]) == {"core", "render", "spare"}
    assert retained["services"]["core"]["decision"] == "on"
    assert retained["services"]["render"]["cap_w"] is None
    assert set(retained["tier_runtime_s"]) == {"critical", "medium", "low"}
    assert retained["updated"].startswith("20")  # the cycle's time, ISO 8601

    # At most one publish a cycle, and none once nothing changes: on mains the plan's runtimes
    # settle as the forecasts learn the constant loads.
    watcher = mqtt_peers(mqtt_broker, "status-watcher", [STATUS, MARKER], ignore_retained=True)
    seen = quiet = 0
    for _ in range(30):
        await _cycle(run)
        count = len(await _statuses(hass, watcher))
        assert count - seen <= 1, "at most one publish a cycle"
        quiet = quiet + 1 if count == seen else 0
        seen = count
        if quiet == 3:
            break
    assert quiet == 3, "three cycles in a row published nothing new"
    settled = len(await _statuses(hass, watcher))

    # Mains fails: the next cycles say so.
    run.simulated.set_mains(False)
    await _cycle(run)
    await _cycle(run)
    published = (await _statuses(hass, watcher))[settled:]
    assert published, "the outage was broadcast"
    latest = published[-1]
    assert latest["on_battery"] is True
    assert latest["state"] not in ("normal", "restoring")
    assert latest["state"] == run.coordinator.data.mode.value
    assert latest["updated"] > retained["updated"]
    # At most one publish per cycle.
    assert len(published) <= 2

    # And a newcomer now reads the outage from the retained message.
    late = mqtt_peers(mqtt_broker, "status-late", [STATUS])
    latest_retained = (await hass.async_add_executor_job(late.wait_for, STATUS))[-1]
    assert json.loads(latest_retained)["on_battery"] is True

    await run.unload()
    # Leave no retained status behind on the session's broker.
    await hass.async_add_executor_job(late.publish, STATUS, b"", True)


# --- the broadcast's decisions, on a stand-in for the connection ------------------------------


def _view(mode: Mode = Mode.NORMAL, on_battery: bool | None = False, soc: float = 90.0) -> SiteView:
    service = ServiceView(
        priority=Priority.LOW,
        state="throttled",
        reason="buys runtime for critical",
        power_w=150.0,
        forecast_w=150.0,
        forecast_upper_w=160.0,
        cap_w=150.0,
        held=None,
        planned_shed_in_s=900.4,
    )
    critical = ServiceView(
        priority=Priority.CRITICAL,
        state="on",
        reason="",
        power_w=100.0,
        forecast_w=100.0,
        forecast_upper_w=110.0,
        cap_w=None,
        held=None,
        planned_shed_in_s=None,
    )
    ups = UpsView(
        available=True,
        on_battery=on_battery,
        low_battery=False,
        soc_pct=soc,
        runtime_s=1480.0,
        predicted_runtime_s=None,
        output_w=250.0,
        energy_left_wh=300.0,
    )
    return SiteView(
        now_s=EPOCH_S,
        mode=mode,
        on_battery=on_battery,
        critical_runtime_s=None,
        budget_w=None,
        plan=(),
        ups={"ups1": ups},
        pdus={},
        outlets={},
        services={"batch": service, "db": critical},
        risks={},
    )


def test_site_status_from_a_view() -> None:
    status = site_status("rack-a", _view(Mode.SHEDDING, on_battery=True, soc=71.5))
    assert status.state == "shedding"
    assert status.on_battery is True
    assert status.soc_pct == 71.5
    assert status.runtime_s == 1480.0
    assert status.updated == "2027-01-15T08:00:00+00:00"
    assert str(status.services["batch"].decision) == "throttled"
    assert status.services["batch"].cap_w == 150.0
    assert status.services["batch"].reason == "buys runtime for critical"
    assert str(status.services["db"].decision) == "on"
    assert status.services["db"].reason is None
    assert status.tier_runtime_s["low"] == 900.0
    assert status.tier_runtime_s["critical"] != status.tier_runtime_s["critical"]  # NaN: null
    # Mains unknown is not an outage.
    assert site_status("rack-a", _view(on_battery=None)).on_battery is False


async def test_published_on_change_again_after_a_reconnection_failure_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = MqttDriver(MqttDriverConfig(host=HOST), profiles={})
    broadcast = StatusBroadcast("rack-a")
    publish = AsyncMock(return_value=True)
    connections = PropertyMock(return_value=1)
    connected = PropertyMock(return_value=True)
    with (
        patch.object(MqttDriver, "publish_status", publish),
        patch.object(MqttDriver, "connections", connections),
        patch.object(MqttDriver, "connected", connected),
    ):

        async def cycle(view: SiteView) -> None:
            due = broadcast.publish_due(driver, view)
            if due is not None:
                await due

        await cycle(_view())
        assert publish.await_count == 1
        # The same state a cycle later (its time aside): nothing.
        await cycle(_view())
        assert publish.await_count == 1
        # A reconnection: the broker may have lost the retained message.
        connections.return_value = 2
        await cycle(_view())
        assert publish.await_count == 2
        # A change: published.
        await cycle(_view(soc=89.0))
        assert publish.await_count == 3
        # Disconnected: nothing tried.
        connected.return_value = False
        await cycle(_view(soc=88.0))
        assert publish.await_count == 3
        connected.return_value = True

        # Failing: said once, tried again each cycle, never raised.
        publish.return_value = False
        caplog.set_level(logging.WARNING)
        await cycle(_view(soc=88.0))
        publish.side_effect = OSError("boom")
        await cycle(_view(soc=88.0))
        assert publish.await_count == 5
        warnings = [r for r in caplog.records if "status broadcast" in r.getMessage()]
        assert len(warnings) == 1
        publish.side_effect = None
        publish.return_value = True
        await cycle(_view(soc=88.0))
        assert publish.await_count == 6
        await cycle(_view(soc=88.0))
        assert publish.await_count == 6

    # Not a site with a broker: nothing.
    assert broadcast.publish_due(None, _view(soc=1.0)) is None
