"""Small scenarios for the controller, simulation and policy tests: quick to run, easy to read."""

from __future__ import annotations

import copy
from typing import Any

from custom_components.power_allocation.engine.scenario import Scenario, build_scenario

# A rack of five: network <- storage <- db <- web, and a batch job on its own.
RACK: dict[str, Any] = {
    "name": "tiny-rack",
    "seed": 3,
    "step_s": 5,
    "ups": [
        {
            "id": "ups1",
            "capacity_wh": 600,
            "rated_w": 800,
            "runtime_full_load_s": 900,
            "peukert_k": 1.3,
            "efficiency": 0.9,
        }
    ],
    "pdus": [{"id": "pdu-a", "ups": "ups1", "limit_w": 1000, "outlets": 6}],
    "services": [
        {
            "id": "network",
            "priority": "critical",
            "outlets": ["pdu-a/1"],
            "shutdown_s": 5,
            "startup_s": 30,
            "load": {"constant_w": 30},
        },
        {
            "id": "storage",
            "priority": "critical",
            "outlets": ["pdu-a/2"],
            "depends_on": ["network"],
            "shutdown_s": 30,
            "startup_s": 60,
            "idle_w": 5,
            "load": {"constant_w": 80},
        },
        {
            "id": "db",
            "priority": "high",
            "outlets": ["pdu-a/3"],
            "depends_on": ["storage"],
            "shutdown_s": 40,
            "startup_s": 60,
            "idle_w": 5,
            "throttle": {"min_w": 60},
            "load": {"constant_w": 120},
        },
        {
            "id": "web",
            "priority": "medium",
            "outlets": ["pdu-a/4"],
            "depends_on": ["db"],
            "shutdown_s": 20,
            "startup_s": 30,
            "idle_w": 3,
            "load": {"constant_w": 90},
        },
        {
            "id": "batch",
            "priority": "low",
            "outlets": ["pdu-a/5"],
            "shutdown_s": 20,
            "startup_s": 30,
            "idle_w": 3,
            "load": {"base_w": 100, "peak_w": 200, "period_s": 3600, "noise_ratio": 0.05},
        },
    ],
    "timeline": {"history_s": 600, "outage_at_s": 600, "outage_duration_s": 1800},
}


def rack(
    outage_duration_s: float | None = 1800.0,
    events: list[dict[str, Any]] | None = None,
    **changes: Any,
) -> Scenario:
    """The tiny rack, with its outage and events changed as asked."""
    config = copy.deepcopy(RACK)
    config["timeline"]["outage_duration_s"] = outage_duration_s
    config["timeline"]["events"] = events or []
    config.update(changes)
    return build_scenario(config, {})
