"""What a reading can physically be, the same for every driver.

A value outside its span is not a reading: a meter fault, a register the device does not fill, a
forged message. The driver reports it as missing (None) for that cycle, never as a number, and
counts it (`ImplausibleReadings`) so diagnostics can show a device that keeps doing it.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass

_LOGGER = logging.getLogger(__name__)

# A meter at no load can read a fraction of a watt below zero (its offset); anything further
# below is a sign fault or garbage. Within the tolerance the reading is taken as 0 W.
NEGATIVE_POWER_TOLERANCE_W = 1.0
# Defaults of a device's `max_power_w` when its profile and the site say nothing:
# an outlet or plug on a 16 A, 230 V circuit (the largest rating of a single-phase socket);
OUTLET_MAX_POWER_W = 16 * 230.0
# a UPS: a 10 kW unit (the largest single-phase rack UPS, e.g. APC SRT10K) at its 150 % overload;
UPS_MAX_POWER_W = 15_000.0
# a service's host as its agent reports it: a two-socket server under full load with its GPUs
# stays below 2 kW; a larger host is given its own `max_power_w`.
HOST_MAX_POWER_W = 2_000.0
# A UPS carries up to 150 % of its rating for a moment before it trips: its readings are plausible
# up to that, when the site gives the rating.
UPS_OVERLOAD_RATIO = 1.5
MAX_RUNTIME_S = 30 * 86_400.0
MAX_VOLTAGE_V = 1_000.0
# One warning per device at most this often; the counts carry the rest.
LOG_INTERVAL_S = 600.0


@dataclass(frozen=True, slots=True)
class Span:
    """The closed interval a reading must lie in."""

    low: float
    high: float

    def admit(self, value: float) -> float | None:
        """The value as a reading (a negative within tolerance reads 0), or None if it cannot
        be one."""
        if not math.isfinite(value) or not self.low <= value <= self.high:
            return None
        return max(value, 0.0)


PERCENT = Span(0.0, 100.0)
RUNTIME = Span(0.0, MAX_RUNTIME_S)
VOLTAGE = Span(0.0, MAX_VOLTAGE_V)


def power_span(max_power_w: float) -> Span:
    """The span of a power reading of a device that draws at most `max_power_w`."""
    return Span(-NEGATIVE_POWER_TOLERANCE_W, max_power_w)


def ups_max_power_w(rated_w: float) -> float:
    """The plausible ceiling of a UPS's output reading, from its rated power."""
    return rated_w * UPS_OVERLOAD_RATIO


def mains_online(online: bool | None, on_battery: bool | None) -> bool | None:
    """Whether the UPS runs on mains. A device that says both on line and on battery is on
    battery: NUT's upsd reports OB while the inverter carries the load, and a contradictory
    status must never read as mains being there."""
    if on_battery:
        return False
    return online


class ImplausibleReadings:
    """Counts readings that were not plausible, per device, and warns at most every
    `interval_s` per device (on the caller's clock). Not thread-safe: callers hold their lock."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._counts: Counter[str] = Counter()
        self._logged_at_s: dict[str, float] = {}
        self._logged_count: Counter[str] = Counter()

    def counts(self) -> dict[str, int]:
        """Implausible readings per device since start."""
        return dict(self._counts)

    def record(self, device: str, reading: str, value: float, now_s: float) -> None:
        """Count one implausible value; warn if this device has not been warned about lately."""
        self._counts[device] += 1
        last_s = self._logged_at_s.get(device)
        if last_s is not None and now_s - last_s < self.interval_s:
            return
        since = self._counts[device] - self._logged_count[device]
        self._logged_at_s[device] = now_s
        self._logged_count[device] = self._counts[device]
        _LOGGER.warning(
            "Implausible %s = %r from %s, reported as unknown (%d since the last warning; "
            "further ones within %g s are only counted)",
            reading,
            value,
            device,
            since,
            self.interval_s,
        )
