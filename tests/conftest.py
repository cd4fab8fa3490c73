"""Shared fixtures; real peers (Mosquitto, the simulator's Modbus server) are in tests/fixtures."""

from __future__ import annotations

import os
from importlib.util import find_spec

from hypothesis import settings

# Deterministic by default (CI must not depend on luck); HYPOTHESIS_PROFILE=explore searches anew.
settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

pytest_plugins = ["tests.fixtures.mqtt_broker", "tests.fixtures.modbus_site"]
# scripts/test's second leg runs the drivers', simulator's, engine's and benchmarks' tests on the
# newest Home Assistant's libraries, without Home Assistant (it needs a newer Python than CI has).
if find_spec("homeassistant") is not None:
    pytest_plugins += ["tests.fixtures.home_assistant", "tests.site_entry"]
