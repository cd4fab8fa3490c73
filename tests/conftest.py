"""Shared fixtures; real peers (Mosquitto, the simulator's Modbus server) are in tests/fixtures."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings
from pytest_homeassistant_custom_component.syrupy import HomeAssistantSnapshotExtension
from syrupy.assertion import SnapshotAssertion

# Deterministic by default (CI must not depend on luck); HYPOTHESIS_PROFILE=explore searches anew.
settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

pytest_plugins = [
    "tests.fixtures.mqtt_broker",
    "tests.fixtures.modbus_site",
    "tests.site_entry",
]


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load this repository's custom_components in every test."""


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Home Assistant's snapshots (ids and times left out), kept in tests/snapshots.

    The plugin's own `snapshot` fixture loses to syrupy's: this one wins over both.
    """
    return snapshot.use_extension(HomeAssistantSnapshotExtension)
