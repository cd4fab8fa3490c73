"""The README is the reference HACS shows: every action, event and entity must be in it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from homeassistant.util import slugify

from custom_components.power_allocation import const

ROOT = Path(__file__).parent.parent
INTEGRATION = ROOT / "custom_components" / "power_allocation"
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_action_is_documented() -> None:
    actions = yaml.safe_load((INTEGRATION / "services.yaml").read_text(encoding="utf-8"))
    missing = [name for name in actions if f"`{const.DOMAIN}.{name}`" not in README]
    # Paired actions share a row: "`power_allocation.shed_service` / `restore_service`".
    missing = [name for name in missing if f"/ `{name}`" not in README]
    assert not missing


def test_every_event_is_documented() -> None:
    events = [value for name, value in vars(const).items() if name.startswith("EVENT_")]
    assert events
    assert [event for event in events if f"`{event}`" not in README] == []


def test_every_entity_is_documented() -> None:
    strings = json.loads((INTEGRATION / "strings.json").read_text(encoding="utf-8"))
    documented = set(re.findall(r"`(?:[a-z_]+\.<site>(?:_<[a-z]+>)?)?_?([a-z_<>]+)`", README))
    missing = []
    for platform, entities in strings["entity"].items():
        for key, entity in entities.items():
            # An entity id ends with its slugified name; placeholders stay as <outlet> → <n>.
            suffix = slugify(entity["name"].replace("{outlet}", "n")).replace("_n_", "_<n>_")
            suffix = re.sub(r"_n$", "_<n>", suffix)
            if suffix not in documented:
                missing.append(f"{platform}.{key} (…_{suffix})")
    assert missing == []
