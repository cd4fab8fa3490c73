"""Shared fixtures. Real peers (Mosquitto, the simulator's Modbus server) come from tests/fixtures."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.mqtt_broker",
    "tests.fixtures.modbus_site",
]


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load this repository's custom_components in every test."""
