"""The site's retained status broadcast on `<base>/status` (docs/devices-mqtt.md), from a cycle.

`site_status` turns a cycle's `SiteView` into the broadcast's `SiteStatus`. `StatusBroadcast`
decides whether a cycle publishes it: only on a site with an MQTT broker, while the connection is
up, and only when the payload (its `updated` time aside) differs from the last one the broker
took, or the broker connected again since (a broker that restarted without persistence has lost
it). At most one publish is in flight; one that fails is logged once and retried the next cycle.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from .drivers.interface import Driver
from .drivers.mqtt import MqttDriver
from .drivers.mqtt_status import ServiceDecision, ServiceStatus, SiteStatus, encode_status
from .engine.controller import Mode
from .engine.model import Priority
from .site_control import AllocationState, ServiceView, SiteView

_LOGGER = logging.getLogger(__name__)

# What each service state users see means as a decision: stopping is off, starting is on.
_DECISIONS: Mapping[str, ServiceDecision] = {
    AllocationState.ON: ServiceDecision.ON,
    AllocationState.THROTTLED: ServiceDecision.THROTTLED,
    AllocationState.STOPPING: ServiceDecision.OFF,
    AllocationState.OFF: ServiceDecision.OFF,
    AllocationState.STARTING: ServiceDecision.ON,
}


def _service_status(service: ServiceView) -> ServiceStatus:
    decision = _DECISIONS[service.state]
    return ServiceStatus(
        decision=decision,
        cap_w=service.cap_w if decision is ServiceDecision.THROTTLED else None,
        reason=service.reason or None,
    )


def _lowest(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None and math.isfinite(v)]
    return min(known) if known else None


def _coarse(seconds: float) -> float:
    """To 10 s under ten minutes, to the minute above, rounded down (never more than planned):
    on mains the plan's runtimes drift by seconds each cycle as the forecasts learn, which is no
    news to publish."""
    step = 10 if seconds < 600 else 60
    return float(step * math.floor(seconds / step))


def _tier_runtimes(view: SiteView, decisions: Mapping[str, ServiceStatus]) -> dict[str, float]:
    """Until the last running service of each tier stops under the plan shown (on mains: were
    mains to fail now); only tiers with a service running. Infinite or unknown is NaN (null)."""
    runtimes: dict[str, float] = {}
    for tier in Priority:
        running = [
            service
            for sid, service in view.services.items()
            if service.priority is tier and decisions[sid].decision is not ServiceDecision.OFF
        ]
        if not running:
            continue
        if tier is Priority.CRITICAL:
            # As the site's critical runtime sensor has it.
            runtime = view.critical_runtime_s
        else:
            shed_in = [s.planned_shed_in_s for s in running]
            known = [s for s in shed_in if s is not None]
            # A service the plan never sheds (or holds on): the tier runs as long as there is mains.
            runtime = max(known) if len(known) == len(shed_in) else None
        runtimes[tier.value] = math.nan if runtime is None else _coarse(runtime)
    return runtimes


def site_status(site: str, view: SiteView) -> SiteStatus:
    """The broadcast of one cycle's view; `updated` is the cycle's time."""
    services = {sid: _service_status(service) for sid, service in view.services.items()}
    ups = [u for u in view.ups.values() if u.available]
    return SiteStatus(
        site=site,
        state=Mode(view.mode).value,
        updated=datetime.fromtimestamp(view.now_s, UTC).isoformat(timespec="seconds"),
        # Only a UPS saying so: mains unknown (no UPS answering) is not reported as an outage.
        on_battery=view.on_battery is True,
        soc_pct=_lowest([u.soc_pct for u in ups]),
        runtime_s=_lowest([u.runtime_s for u in ups]),
        services=services,
        tier_runtime_s=_tier_runtimes(view, services),
    )


class StatusBroadcast:
    """When a site's status is published, and the outcome of the last publish."""

    def __init__(self, site: str) -> None:
        self.site = site
        # The last payload the broker took, `updated` left out, and the connection it went on.
        self._sent: tuple[bytes, int] | None = None
        self._in_flight = False
        self._failing = False

    def publish_due(
        self, driver: Driver | None, view: SiteView
    ) -> Coroutine[Any, Any, None] | None:
        """The publish this cycle calls for, to run as a task, or None: no broker, the
        connection down, a publish still in flight, or nothing changed since the last one."""
        if not isinstance(driver, MqttDriver) or not driver.connected or self._in_flight:
            return None
        try:
            status = site_status(self.site, view)
            sent = (encode_status(replace(status, updated="")), driver.connections)
        except Exception as err:  # a broadcast never fails the cycle
            self._failed(repr(err))
            return None
        if sent == self._sent:
            return None
        self._in_flight = True
        return self._publish(driver, status, sent)

    async def _publish(
        self, driver: MqttDriver, status: SiteStatus, sent: tuple[bytes, int]
    ) -> None:
        try:
            published = await driver.publish_status(status)
            error = None if published else "not acknowledged by the broker"
        except Exception as err:  # a broadcast never fails the cycle
            published, error = False, repr(err)
        finally:
            self._in_flight = False
        if published:
            self._sent = sent
            if self._failing:
                self._failing = False
                _LOGGER.info("%s: the status broadcast is published again", self.site)
            return
        self._failed(error)

    def _failed(self, error: str | None) -> None:
        """Said once until a publish succeeds again."""
        if not self._failing:
            self._failing = True
            _LOGGER.warning(
                "%s: could not publish the status broadcast (%s); retrying each cycle",
                self.site,
                error,
            )
