"""Config entries for the small simulated site (tests/fixtures/modbus_site.py)."""

from __future__ import annotations

import time
from typing import Any

from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.power_allocation.const import CONF_SITE_NAME, CONF_TOPOLOGY, DOMAIN
from custom_components.power_allocation.drivers.mqtt import MqttDriver
from tests.fixtures.modbus_site import HOST, SMALL_SITE, ModbusSite


def modbus_source(modbus_site: ModbusSite, device_id: str, profile: str) -> dict[str, Any]:
    """A Modbus source pointing at one of the simulator's servers."""
    return {
        "kind": "modbus",
        "host": HOST,
        "port": modbus_site.server.ports[device_id],
        "unit_id": 1,
        "profile": profile,
        "timeout_s": 1.0,
    }


def small_site_entry(
    modbus_site: ModbusSite, *, mqtt: dict[str, Any] | None = None, agents: bool = False
) -> MockConfigEntry:
    """The small site, every device on Modbus TCP; with `mqtt`, services have host agents."""
    ups = [
        {
            **{k: u[k] for k in ("id", "rated_w", "capacity_wh", "runtime_full_load_s")},
            "source": modbus_source(modbus_site, u["id"], "apc_smart_ups"),
        }
        for u in SMALL_SITE["ups"]
    ]
    pdus = [
        {**p, "source": modbus_source(modbus_site, p["id"], "generic_pdu")}
        for p in SMALL_SITE["pdus"]
    ]
    services = [
        {**{k: v for k, v in s.items() if k != "load"}, "agent": agents}
        for s in SMALL_SITE["services"]
    ]
    topology: dict[str, Any] = {"ups": ups}
    if mqtt is not None:
        topology["mqtt"] = mqtt
    return MockConfigEntry(
        domain=DOMAIN,
        title="Rack A",
        unique_id="rack_a",
        data={CONF_SITE_NAME: "Rack A", CONF_TOPOLOGY: topology},
        options={"pdus": pdus, "services": services},
    )


APPLY_TIMEOUT_S = 10.0


def wait_applied(driver: MqttDriver, topics: list[str], before: int) -> None:
    """Until the driver has applied the round a bridge just published on `topics` (blocking:
    run it in an executor); `before` is its applied count from before the round."""
    count = before + sum(1 for topic in topics if topic in driver.subscriptions)
    deadline = time.monotonic() + APPLY_TIMEOUT_S
    while driver.counts().applied < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"applied {driver.counts().applied} of {count} messages")
        time.sleep(0.005)
