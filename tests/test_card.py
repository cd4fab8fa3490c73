"""The dashboard card: served by Home Assistant and loaded by its frontend; and docs/dashboard.md,
whose YAML must load and whose entity ids and templates must fit what the demo site produces."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.template import Template
from homeassistant.loader import async_get_integration
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.power_allocation.card import CARD_FILE, CARD_PATH
from custom_components.power_allocation.const import CONF_SITE_NAME, CONF_TOPOLOGY, DOMAIN
from custom_components.power_allocation.drivers.scenario_file import load_scenario
from custom_components.power_allocation.site_control import AllocationState
from tests.fixtures.modbus_site import HOST, serving
from tests.site_entry import SiteRun, site_clock

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DOC = ROOT / "docs" / "dashboard.md"


async def test_the_frontend_loads_the_card_and_http_serves_it(
    hass: HomeAssistant, hass_client: ClientSessionGenerator
) -> None:
    # The frontend's assets are a development requirement (requirements_dev.txt), not a test one.
    pytest.importorskip("hass_frontend")
    from homeassistant.components.frontend import DATA_EXTRA_MODULE_URL

    assert await async_setup_component(hass, "frontend", {})
    assert await async_setup_component(hass, DOMAIN, {})
    version = (await async_get_integration(hass, DOMAIN)).version
    url = f"{CARD_PATH}?v={version}"
    assert url in hass.data[DATA_EXTRA_MODULE_URL].urls
    response = await (await hass_client()).get(url)
    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert await response.text() == CARD_FILE.read_text()


async def test_http_alone_serves_the_card(
    hass: HomeAssistant, hass_client: ClientSessionGenerator
) -> None:
    """For a resource added by hand where the frontend integration is not loaded."""
    assert await async_setup_component(hass, "http", {})
    assert await async_setup_component(hass, DOMAIN, {})
    assert "frontend" not in hass.config.components
    response = await (await hass_client()).get(CARD_PATH)
    assert response.status == 200
    assert 'customElements.define("power-allocation-card"' in await response.text()


async def test_set_up_without_http(hass: HomeAssistant) -> None:
    assert await async_setup_component(hass, DOMAIN, {})
    assert "http" not in hass.config.components


def _dashboard_yaml() -> list[Any]:
    blocks = re.findall(r"```yaml\n(.*?)```", DASHBOARD_DOC.read_text(), re.DOTALL)
    assert len(blocks) == 2
    return [yaml.safe_load(block) for block in blocks]


def test_the_documented_configurations_are_yaml() -> None:
    card, built_in = _dashboard_yaml()
    assert card["type"] == "custom:power-allocation-card"
    assert built_in["type"] == "vertical-stack"


def _cards(card: dict[str, Any]) -> list[dict[str, Any]]:
    """A card and every card inside it."""
    inner = [*card.get("cards", []), *([card["card"]] if "card" in card else [])]
    return [card, *(c for child in inner for c in _cards(child))]


@pytest.fixture
async def demo_site(hass: HomeAssistant, socket_enabled: None) -> AsyncIterator[SiteRun]:
    """The demo rack of scripts/develop, named as docs/dashboard.md has it ("Demo rack"), its
    devices the simulator's Modbus servers; no host agents (they need the MQTT bridge)."""
    scenario = await hass.async_add_executor_job(
        load_scenario, ROOT / "simulator/scenarios/demo.yaml"
    )
    topology = yaml.safe_load((ROOT / "docs/demo-topology.yaml").read_text())
    async with serving(scenario) as served:
        # The same devices in the same order; the topology calls its UPS "ups", the scenario "ups1".
        ports = dict(
            zip(
                [d["id"] for d in (*topology["ups"], *topology["pdus"])],
                served.server.ports.values(),
                strict=True,
            )
        )
        for device in (*topology["ups"], *topology["pdus"]):
            device["source"] = {**device["source"], "host": HOST, "port": ports[device["id"]]}
        entry = MockConfigEntry(
            domain=DOMAIN,
            title="Demo rack",
            unique_id="demo_rack",
            data={CONF_SITE_NAME: "Demo rack", CONF_TOPOLOGY: {"ups": topology["ups"]}},
            options={
                "pdus": topology["pdus"],
                "services": [{**s, "agent": False} for s in topology["services"]],
            },
        )
        run = SiteRun(hass, entry, served.site, server=served.server)
        run.advance(1.0)
        with site_clock(served.site):
            await run.set_up()
            yield run
            await run.unload()


async def test_the_documented_dashboard_fits_the_demo_site(
    hass: HomeAssistant, demo_site: SiteRun
) -> None:
    _, built_in = _dashboard_yaml()
    await demo_site.cycle(2)
    entity_ids = set(hass.states.async_entity_ids())
    doc = DASHBOARD_DOC.read_text()
    named = set(re.findall(r"\b(?:sensor|binary_sensor|switch|select)\.demo_rack_\w+", doc))
    assert named, "the doc names the demo site's entities"
    assert named <= entity_ids, named - entity_ids
    markdown = {
        c["title"]: c["content"]
        for c in _cards(built_in)
        if c.get("title") and c["type"] == "markdown"
    }

    # The services table: one row per service, each with a real allocation state.
    rows = [
        line.split("|")[1:-1]
        for line in Template(markdown["Services"], hass)
        .async_render(parse_result=False)
        .splitlines()
        if line.startswith("| ") and not line.startswith("| Service")
    ]
    assert len(rows) == len(demo_site.simulated.scenario.site.services)
    assert all(row[2].strip() in AllocationState.OPTIONS for row in rows), rows

    # On battery the plan has steps: the template lists each of them.
    demo_site.simulated.set_mains(False)
    await demo_site.cycle(3)
    assert hass.states.get("binary_sensor.demo_rack_ups_on_battery").state == "on"
    plan = hass.states.get("sensor.demo_rack_next_planned_action").attributes["plan"]
    assert plan
    steps = Template(markdown["Plan"], hass).async_render(parse_result=False).splitlines()
    listed = [re.fullmatch(r"- in \d+ min: (\w+) \*\*(.+)\*\*", line) for line in steps if line]
    verbs = {"shutdown": "stop", "throttle": "throttle"}
    assert [(m[1], m[2]) if m else None for m in listed] == [
        (verbs[s["action"]], s["service"]) for s in plan
    ]


async def test_the_registries_have_what_the_card_reads(
    hass: HomeAssistant, demo_site: SiteRun
) -> None:
    """The card finds a site's items by device identifier, their entities by translation key,
    and an outlet by the number in its entity id."""
    entry = demo_site.entry
    topology = {**entry.data[CONF_TOPOLOGY], **entry.options}
    devices = dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id)
    identifiers = {i for d in devices for (domain, i) in d.identifiers if domain == DOMAIN}
    assert identifiers == {
        entry.entry_id,
        *(
            f"{entry.entry_id}_{kind}_{item['id']}"
            for kind in ("ups", "pdu", "service")
            for item in topology[f"{kind}s" if kind != "ups" else "ups"]
        ),
    }
    entities = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    assert all(e.translation_key for e in entities)
    outlets = {
        (e.device_id, match[1])
        for e in entities
        if e.translation_key in ("power", "forecast_power", "outlet")
        and (match := re.search(r"_outlet_(\d+)(?:_|$)", e.entity_id))
    }
    assert len(outlets) == sum(p["outlets"] for p in topology["pdus"])
