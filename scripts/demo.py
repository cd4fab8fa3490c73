"""The demo of scripts/develop: its Home Assistant configuration, and its setup through the API.

    python scripts/demo.py config DIR --ports PORTS.json --ha-host H --ha-port N --mqtt-port N
    python scripts/demo.py setup --ports PORTS.json --mqtt-port N --url URL [--ha-pid PID]

`config` writes DIR/configuration.yaml and DIR/ui-lovelace.yaml (the dashboard: the card and the
buttons that start and end a simulated outage), again at every start: the ports may change.
PORTS.json is the line the simulator printed once listening.

`setup` waits for Home Assistant, then does what a newcomer would do in its UI, through the same
public API: onboarding with the demo user (once), the integration's config flow for the UPS (only
when there is no site yet, so a second start keeps the first one), then the
`power_allocation.load_topology` action with docs/demo-topology.yaml on the simulator's ports.
It prints `demo ready: URL` once every service of the site is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import yaml  # type: ignore[import-untyped]

REPOSITORY = Path(__file__).resolve().parents[1]
TOPOLOGY = REPOSITORY / "docs" / "demo-topology.yaml"
DOMAIN = "power_allocation"
SITE_NAME = "Demo rack"
USERNAME = "demo"
PASSWORD = "demo"
UPS_PROFILE = "apc_smart_ups"
# A first start on a slow machine builds Home Assistant's storage and loads its frontend.
START_TIMEOUT_S = 300.0
SITE_TIMEOUT_S = 120.0
POLL_S = 0.5
# Config entry states on the way to set up or unloaded.
UNSETTLED_STATES = ("not_loaded", "setup_in_progress", "unload_in_progress")
# Home Assistant's onboarding, in its order.
ONBOARDING_STEPS = ("user", "core_config", "analytics", "integration")
# What onboarding's core_config step sets up by itself (homeassistant/components/onboarding).
ONBOARDING_EXTRAS = ("google_translate", "met", "radio_browser", "shopping_list")

CONFIGURATION = """\
# Written by scripts/develop at every start (edits are lost): the demo's Home Assistant.
# Only what the demo needs, not default_config: nothing is installed at run time.
http:
  server_host: {ha_host}
  server_port: {ha_port}
frontend:
config:
# The default dashboard is ui-lovelace.yaml beside this file.
lovelace:
  mode: yaml
# The dashboard's outage buttons: mains off and on at the simulator, on its control channel.
shell_command:
  outage_start: {control} outage start
  outage_end: {control} outage end
logger:
  default: info
  logs:
    custom_components.power_allocation: debug
"""

DASHBOARD = """\
# Written by scripts/develop at every start (edits are lost): the demo's dashboard.
title: {site}
views:
  - title: Rack
    path: rack
    # One column the width of the page: the outage buttons above the card.
    panel: true
    cards:
      - type: vertical-stack
        cards:
          - type: horizontal-stack
            cards:
              - type: button
                name: Start outage
                icon: mdi:power-plug-off
                icon_height: 40px
                tap_action:
                  action: perform-action
                  perform_action: shell_command.outage_start
              - type: button
                name: End outage
                icon: mdi:power-plug
                icon_height: 40px
                tap_action:
                  action: perform-action
                  perform_action: shell_command.outage_end
              # Grid trouble ahead: plan for a long outage (the lower tiers go sooner).
              - type: button
                entity: switch.{site_slug}_conservative_plan
                name: Conservative plan
                icon_height: 40px
                tap_action:
                  action: toggle
          - type: custom:power-allocation-card
            site: {site}
"""


def write_config(
    config_dir: Path, ports: dict[str, Any], ha_host: str, ha_port: int, python: str
) -> None:
    """The demo's configuration.yaml and dashboard."""
    # Home Assistant runs shell commands from its own working folder, not this repository's.
    control = (
        f"cd {shlex.quote(str(REPOSITORY))} && "
        f"{shlex.quote(python)} -m simulator control --port {ports['control']}"
    )
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text(
        CONFIGURATION.format(ha_host=ha_host, ha_port=ha_port, control=control)
    )
    (config_dir / "ui-lovelace.yaml").write_text(
        DASHBOARD.format(site=SITE_NAME, site_slug=SITE_NAME.lower().replace(" ", "_"))
    )


def demo_topology(ports: dict[str, Any], mqtt_port: int) -> dict[str, Any]:
    """docs/demo-topology.yaml on the ports the simulator and the broker listen on."""
    document: dict[str, Any] = yaml.safe_load(TOPOLOGY.read_text())
    document["mqtt"]["port"] = mqtt_port
    modbus: dict[str, int] = ports["modbus"]
    for pdu in document["pdus"]:
        pdu["source"]["port"] = modbus[pdu["id"]]
    # The simulator names its UPS after the scenario (ups1), the site after the config flow (ups).
    pdu_ids = {pdu["id"] for pdu in document["pdus"]}
    ups_ports = [port for device, port in modbus.items() if device not in pdu_ids]
    for ups, port in zip(document["ups"], ups_ports, strict=True):
        ups["source"]["port"] = port
    return document


class SetupError(Exception):
    """The demo could not be set up; the message says why."""


class HomeAssistantApi:
    """Home Assistant's HTTP API, as the demo user."""

    def __init__(self, session: aiohttp.ClientSession, url: str, ha_pid: int | None) -> None:
        self.session = session
        self.url = url
        self.client_id = f"{url}/"
        self.ha_pid = ha_pid
        self.token = ""

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call; its JSON reply (or text), raising `SetupError` on a failed status."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(method, self.url + path, headers=headers, **kwargs) as r:
            body = await r.text()
            if r.status >= 400:
                raise SetupError(f"{method} {path}: {r.status} {body}")
            return json.loads(body) if r.content_type == "application/json" else body

    async def until[T](
        self, what: str, check: Callable[[], Awaitable[T | None]], timeout_s: float
    ) -> T:
        """Poll `check` until it gives something, while Home Assistant runs."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if self.ha_pid is not None and not _running(self.ha_pid):
                raise SetupError(f"Home Assistant stopped while waiting for {what}")
            result = await check()
            if result is not None:
                return result
            if loop.time() > deadline:
                raise SetupError(f"no {what} after {timeout_s:.0f} s")
            await asyncio.sleep(POLL_S)

    async def wait_started(self) -> None:
        """Home Assistant answering on its login page's API: with the providers once a user is
        onboarded, or with "onboarding_required" before."""

        async def answering() -> bool | None:
            try:
                async with self.session.get(f"{self.url}/auth/providers") as reply:
                    if reply.status == HTTPStatus.OK:
                        return True
                    if reply.status == HTTPStatus.BAD_REQUEST:
                        body = await reply.json()
                        return True if body.get("code") == "onboarding_required" else None
                    return None
            except aiohttp.ClientError:
                return None

        await self.until("answer from Home Assistant", answering, START_TIMEOUT_S)

    async def onboarding_done(self) -> set[str]:
        """The onboarding steps done: all of them once onboarding is over and its API gone."""
        async with self.session.get(f"{self.url}/api/onboarding") as reply:
            if reply.status == HTTPStatus.NOT_FOUND:
                return set(ONBOARDING_STEPS)
        steps: list[dict[str, Any]] = await self.request("GET", "/api/onboarding")
        return {step["step"] for step in steps if step["done"]}

    async def log_in(self) -> None:
        """Onboard with the demo user the first time, log in as it after; get a token."""
        done = await self.onboarding_done()
        if "user" not in done:
            created = await self.request(
                "POST",
                "/api/onboarding/users",
                json={
                    "client_id": self.client_id,
                    "name": "Demo",
                    "username": USERNAME,
                    "password": PASSWORD,
                    "language": "en",
                },
            )
            code = created["auth_code"]
        else:
            flow = await self.request(
                "POST",
                "/auth/login_flow",
                json={
                    "client_id": self.client_id,
                    "handler": ["homeassistant", None],
                    "redirect_uri": self.client_id,
                },
            )
            result = await self.request(
                "POST",
                f"/auth/login_flow/{flow['flow_id']}",
                json={"client_id": self.client_id, "username": USERNAME, "password": PASSWORD},
            )
            if result["type"] != "create_entry":
                raise SetupError(f"cannot log in as {USERNAME}: {result.get('errors')}")
            code = result["result"]
        tokens = await self.request(
            "POST",
            "/auth/token",
            data={"grant_type": "authorization_code", "code": code, "client_id": self.client_id},
        )
        self.token = tokens["access_token"]
        payloads = {
            "core_config": {},
            "analytics": {},
            "integration": {"client_id": self.client_id, "redirect_uri": self.client_id},
        }
        for step, payload in payloads.items():
            if step not in done:
                await self.request("POST", f"/api/onboarding/{step}", json=payload)

    async def wait_running(self) -> None:
        """Every integration set up, so that flows and actions are there."""

        async def running() -> bool | None:
            config = await self.request("GET", "/api/config")
            return True if config["state"] == "RUNNING" else None

        await self.until("Home Assistant running", running, START_TIMEOUT_S)

    async def site_entries(self) -> list[dict[str, Any]]:
        """The integration's config entries."""
        return await self.entries(DOMAIN)

    async def entries(self, domain: str) -> list[dict[str, Any]]:
        """A domain's config entries."""
        entries: list[dict[str, Any]] = await self.request(
            "GET", f"/api/config/config_entries/entry?domain={domain}"
        )
        return entries

    async def remove_onboarding_extras(self) -> None:
        """Onboarding adds integrations of its own (text-to-speech, weather, radio, a shopping
        list) whose packages the demo does not install: they show as failed under Settings."""
        for domain in ONBOARDING_EXTRAS:
            for entry in await self.entries(domain):
                await self.request(
                    "DELETE", f"/api/config/config_entries/entry/{entry['entry_id']}"
                )

    async def demo_site(self, ups: dict[str, Any]) -> str:
        """The site of an earlier start if it is set up, else a new one; its entry id."""
        for entry in await self.site_entries():
            state = await self.settled_state(entry["entry_id"])
            if state == "loaded":
                entry_id: str = entry["entry_id"]
                return entry_id
            # An earlier demo's site, on other ports: it cannot reach these devices.
            print(f"demo: replacing the site {entry['title']!r} ({state})")
            await self.request("DELETE", f"/api/config/config_entries/entry/{entry['entry_id']}")
        return await self.add_site(ups)

    async def add_site(self, ups: dict[str, Any]) -> str:
        """The integration's config flow for the UPS on Modbus TCP; the new entry's id."""
        flow = await self.request(
            "POST", "/api/config/config_entries/flow", json={"handler": DOMAIN}
        )
        answers = [
            ("user", {"site_name": SITE_NAME, "source": "modbus"}),
            (
                "ups_modbus",
                {
                    "host": ups["source"]["host"],
                    "port": ups["source"]["port"],
                    "unit_id": 1,
                    "profile": UPS_PROFILE,
                },
            ),
            (
                "ratings",
                {k: ups[k] for k in ("rated_w", "capacity_wh", "runtime_full_load_s", "peukert_k")}
                | {"efficiency": 0.9},
            ),
        ]
        for step_id, answer in answers:
            if flow["type"] != "form" or flow["step_id"] != step_id or flow.get("errors"):
                raise SetupError(f"config flow: expected the {step_id} step, got {flow}")
            flow = await self.request(
                "POST", f"/api/config/config_entries/flow/{flow['flow_id']}", json=answer
            )
        if flow["type"] != "create_entry":
            raise SetupError(f"config flow: expected the site, got {flow}")
        entry_id: str = flow["result"]["entry_id"]
        return entry_id

    async def settled_state(self, entry_id: str) -> str:
        """The site's state once it is no longer being set up (or unloaded)."""

        async def settled() -> str | None:
            for entry in await self.site_entries():
                if entry["entry_id"] == entry_id:
                    state: str = entry["state"]
                    return None if state in UNSETTLED_STATES else state
            raise SetupError(f"the site {entry_id} is gone")

        return await self.until("site set up", settled, SITE_TIMEOUT_S)

    async def wait_loaded(self, entry_id: str) -> None:
        """The site set up."""
        state = await self.settled_state(entry_id)
        if state != "loaded":
            raise SetupError(f"the site could not be set up ({state}): see home-assistant.log")

    async def wait_services(self, entry_id: str, services: list[str]) -> None:
        """Every service's allocation reported (the site reloaded with its topology)."""
        template = (
            "{% set ns = namespace(ids=[]) %}"
            "{% for e in integration_entities('" + DOMAIN + "') %}"
            "{% if e.startswith('sensor.') and e.endswith('_allocation')"
            " and config_entry_id(e) == '" + entry_id + "'"
            " and states(e) not in ('unavailable', 'unknown') %}"
            "{% set ns.ids = ns.ids + [e] %}{% endif %}{% endfor %}"
            "{{ ns.ids | count }}"
        )

        async def reported() -> bool | None:
            count = await self.request("POST", "/api/template", json={"template": template})
            return True if int(count) == len(services) else None

        await self.until(f"allocation of all {len(services)} services", reported, SITE_TIMEOUT_S)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def set_up(args: argparse.Namespace) -> None:
    """Onboarding, the site, its topology, as described at the top."""
    ports = json.loads(Path(args.ports).read_text())
    topology = demo_topology(ports, args.mqtt_port)
    async with aiohttp.ClientSession() as session:
        api = HomeAssistantApi(session, args.url, args.ha_pid)
        await api.wait_started()
        await api.log_in()
        await api.wait_running()
        entry_id = await api.demo_site(topology["ups"][0])
        await api.wait_loaded(entry_id)
        await api.request(
            "POST",
            f"/api/services/{DOMAIN}/load_topology?return_response",
            json={
                "config_entry_id": entry_id,
                "topology": yaml.safe_dump(topology, sort_keys=False),
            },
        )
        await api.wait_services(entry_id, [s["id"] for s in topology["services"]])
        # By now onboarding's own set-up tasks, started before the site, have run.
        await api.remove_onboarding_extras()


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="write the demo's Home Assistant configuration")
    config.add_argument("config_dir", type=Path)
    config.add_argument("--ports", required=True, help="the simulator's ports (its JSON line)")
    config.add_argument("--ha-host", default="127.0.0.1")
    config.add_argument("--ha-port", type=int, default=8123)
    setup = commands.add_parser("setup", help="onboard, add the site, load its topology")
    setup.add_argument("--ports", required=True, help="the simulator's ports (its JSON line)")
    setup.add_argument("--mqtt-port", type=int, required=True)
    setup.add_argument("--url", required=True, help="Home Assistant, e.g. http://127.0.0.1:8123")
    setup.add_argument("--ha-pid", type=int, help="give up if this process ends")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.command == "config":
        ports = json.loads(Path(args.ports).read_text())
        write_config(args.config_dir, ports, args.ha_host, args.ha_port, sys.executable)
        return 0
    try:
        asyncio.run(set_up(args))
    except SetupError as error:
        print(f"demo setup failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
