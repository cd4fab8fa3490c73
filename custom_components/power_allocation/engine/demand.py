"""What each service will draw: a forecaster per service, learnt while it runs freely.

A service's draw is learnt only while it runs uncapped: a throttled or stopping service's draw says
nothing about what it would draw if left alone. Its demand for the planner and the allocator is
the forecast mean over the horizon and the highest upper band within it; the highest band is what
a final shutdown's reserve must cover (with the next step's band only, the household traces spiked
past it and the battery died under the last wave).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from .allocator import Demand
from .forecast import ForecastPoint, ForecastSettings, LoadForecaster

# Five-minute steps an hour ahead: the span an outage plan needs, and cheap to learn from.
SERVICE_FORECAST_SETTINGS = ForecastSettings(step_s=300.0, horizon_steps=12)
# Until a forecaster has a band, the upper quantile is the last reading plus this share.
UNCALIBRATED_UPPER_RATIO = 0.2
# Readings above the forecast's upper band for this long are a step up it has not caught up with
# yet (its steps are five minutes): until it has, the demand is the last reading, as before a
# band. A final shutdown planned on the old band ran a small pack flat under a stop. Shorter
# would take one high minute of a household trace (one sample) for a step, and shed for it.
STEP_CONFIRM_S = 120.0
# A service that is off says nothing of what it would draw now: its last forecast (learnt up to
# the moment it stopped, a peak perhaps, and the reason it was stopped) fades into its typical
# draw, with a time constant of two forecast steps (ten minutes), as each step unseen tells less.
# Left frozen, the forecast of a job that had stepped up kept its service off for hours after the
# step ended; faded within one step, it was restarted while the step was still under way and
# stopped again (measured on the overload benchmark's test staircase).
# The typical draw is a slow average of what it drew running freely (six hours: one busy hour
# barely moves it), with a band of the same average of its deviation from it.
TYPICAL_TIME_CONSTANT_S = 6 * 3600.0
FADE_STEPS = 2
# A normal's 95 % quantile is 1.645 standard deviations above its mean, and a standard deviation
# is 1.25 mean absolute deviations.
TYPICAL_UPPER_DEVIATIONS = 1.645 * 1.25


def demand_from(points: tuple[ForecastPoint, ...], last_w: float) -> Demand:
    """A service's demand from its forecast, or from its last reading while uncalibrated."""
    if points and all(p.calibrated for p in points):
        mean_w = max(0.0, sum(p.mean_w for p in points) / len(points))
        return Demand(mean_w, max(mean_w, *(p.upper_w for p in points)))
    return Demand(last_w, last_w * (1.0 + UNCALIBRATED_UPPER_RATIO))


class ServiceDemand:
    """One forecaster per service and its last free-running reading."""

    def __init__(
        self, service_ids: Iterable[str], settings: ForecastSettings = SERVICE_FORECAST_SETTINGS
    ) -> None:
        self.settings = settings
        self.forecasters = {sid: LoadForecaster(settings) for sid in service_ids}
        self.last_w: dict[str, float] = {}
        self._now_s = 0.0
        self._band_upper_w: dict[str, float] = {}  # the forecast's own, as last computed
        self._above_band_since_s: dict[str, float] = {}
        # Per service: its typical draw and mean absolute deviation, when last learnt.
        self.typical: dict[str, tuple[float, float, float]] = {}
        self.off_since_s: dict[str, float] = {}

    def learn(
        self,
        now_s: float,
        draw_w: Mapping[str, float | None],
        running_free: Collection[str],
        off: Collection[str] = (),
    ) -> None:
        """Learn this cycle's readings of the services that run uncapped; `off`: the services
        switched off now."""
        for sid, watts in draw_w.items():
            forecaster = self.forecasters.get(sid)
            if watts is not None and sid in running_free and forecaster is not None:
                forecaster.observe(now_s, watts)
                self.last_w[sid] = watts
                self._learn_typical(sid, now_s, watts)
                if watts > self._band_upper_w.get(sid, math.inf):
                    self._above_band_since_s.setdefault(sid, now_s)
                else:
                    self._above_band_since_s.pop(sid, None)
        # A step is evidence only while it is seen: a service stopped or capped says nothing of
        # it any more, and its demand comes back to what was learnt (the give-back tests that).
        for sid in set(self._above_band_since_s) - set(running_free):
            del self._above_band_since_s[sid]
        # The fade lasts until the service is seen running freely again: starting, it draws
        # what a start does, which says nothing of the step it was stopped in.
        for sid in off:
            if sid in self.forecasters:
                self.off_since_s.setdefault(sid, now_s)
        for sid in running_free:
            self.off_since_s.pop(sid, None)
        self._now_s = now_s

    def _learn_typical(self, sid: str, now_s: float, watts: float) -> None:
        known = self.typical.get(sid)
        if known is None:
            self.typical[sid] = (watts, UNCALIBRATED_UPPER_RATIO * watts, now_s)
            return
        typical_w, deviation_w, at_s = known
        weight = 1.0 - math.exp(-max(0.0, now_s - at_s) / TYPICAL_TIME_CONSTANT_S)
        typical_w += weight * (watts - typical_w)
        deviation_w += weight * (abs(watts - typical_w) - deviation_w)
        self.typical[sid] = (typical_w, deviation_w, now_s)

    def demand_w(self) -> dict[str, Demand]:
        """Every service's demand (0 W until it has been seen running)."""
        demand = {}
        for sid, forecaster in self.forecasters.items():
            last_w = self.last_w.get(sid, 0.0)
            forecast = demand_from(forecaster.forecast(), last_w)
            self._band_upper_w[sid] = forecast.upper_w
            since_s = self._above_band_since_s.get(sid)
            if since_s is not None and self._now_s - since_s >= STEP_CONFIRM_S:
                demand[sid] = Demand(last_w, last_w * (1.0 + UNCALIBRATED_UPPER_RATIO))
            else:
                demand[sid] = self._faded(sid, forecast)
        return demand

    def _faded(self, sid: str, forecast: Demand) -> Demand:
        """The forecast of a service that is off, faded into its typical draw."""
        off_since_s = self.off_since_s.get(sid)
        known = self.typical.get(sid)
        if off_since_s is None or known is None:
            return forecast
        typical_w, deviation_w, _ = known
        kept = math.exp(-max(0.0, self._now_s - off_since_s) / (FADE_STEPS * self.settings.step_s))
        upper_w = typical_w + TYPICAL_UPPER_DEVIATIONS * deviation_w
        return Demand(
            kept * forecast.mean_w + (1.0 - kept) * typical_w,
            kept * forecast.upper_w + (1.0 - kept) * upper_w,
        )

    def to_state(self) -> dict[str, Any]:
        """JSON-able state: every forecaster and last reading."""
        return {
            "forecasters": {sid: f.to_state() for sid, f in self.forecasters.items()},
            "last_w": dict(self.last_w),
            "typical": {sid: list(t) for sid, t in self.typical.items()},
            "off_since_s": dict(self.off_since_s),
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        service_ids: Iterable[str],
        settings: ForecastSettings = SERVICE_FORECAST_SETTINGS,
    ) -> ServiceDemand:
        """Restore `to_state`'s output for the services of `service_ids`; new ones start cold."""
        restored = cls(service_ids, settings)
        for sid, forecaster_state in state.get("forecasters", {}).items():
            if sid in restored.forecasters:
                restored.forecasters[sid] = LoadForecaster.from_state(forecaster_state)
        restored.last_w = {
            sid: float(w)
            for sid, w in state.get("last_w", {}).items()
            if sid in restored.forecasters
        }
        restored.typical = {
            sid: (float(t[0]), float(t[1]), float(t[2]))
            for sid, t in state.get("typical", {}).items()
            if sid in restored.forecasters
        }
        restored.off_since_s = {
            sid: float(at_s)
            for sid, at_s in state.get("off_since_s", {}).items()
            if sid in restored.forecasters
        }
        return restored
