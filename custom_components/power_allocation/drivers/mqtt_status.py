"""The integration's own retained status broadcast on `<base>/status`.

The schema is documented in docs/devices-mqtt.md.

Host agents, dashboards and other tools read it to learn what the integration has decided without
talking to Home Assistant. Version 1 of the schema; fields are only ever added.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

STATUS_SCHEMA_VERSION = 1


class ServiceDecision(StrEnum):
    """What the plan does with a service right now."""

    ON = "on"
    THROTTLED = "throttled"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One service in the broadcast."""

    decision: ServiceDecision
    cap_w: float | None = None  # throttled only
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SiteStatus:
    """The site as the integration sees it; `updated` is the caller's wall-clock ISO 8601 time."""

    site: str
    state: str  # e.g. "normal", "on_battery", "restoring"
    updated: str
    on_battery: bool
    soc_pct: float | None = None
    runtime_s: float | None = None
    services: Mapping[str, ServiceStatus] = field(default_factory=dict)
    tier_runtime_s: Mapping[str, float] = field(default_factory=dict)


def _finite_or_none(value: float | None) -> float | None:
    # JSON has no NaN or infinity; an unknown figure is null.
    return value if value is not None and math.isfinite(value) else None


def encode_status(status: SiteStatus) -> bytes:
    """The broadcast payload: compact JSON, keys sorted so equal states give equal bytes."""
    services = {
        service_id: {
            "decision": str(service.decision),
            "cap_w": _finite_or_none(service.cap_w),
            "reason": service.reason,
        }
        for service_id, service in status.services.items()
    }
    document = {
        "schema": STATUS_SCHEMA_VERSION,
        "site": status.site,
        "state": status.state,
        "updated": status.updated,
        "on_battery": status.on_battery,
        "soc_pct": _finite_or_none(status.soc_pct),
        "runtime_s": _finite_or_none(status.runtime_s),
        "services": services,
        "tier_runtime_s": {
            tier: _finite_or_none(seconds) for tier, seconds in status.tier_runtime_s.items()
        },
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
