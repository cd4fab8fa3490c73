"""Scenarios: a site, how each service's load behaves, and what happens when.

One format serves the simulator, the benchmarks and the `simulate_outage` action (DESIGN.md,
"Scenario files"). This module is the validated, immutable model and the pure function that gives
a service's demand at simulated time `t_s`; reading YAML and trace files is the driver layer's job
(`drivers/scenario_file.py`), which hands the parsed mapping and the traces to `build_scenario`.

Noise is a pure function of (seed, service, time step): the same scenario yields the same demand at
the same instant whatever order or how often it is asked, which is what makes runs reproducible.
"""

from __future__ import annotations

import bisect
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np

from .model import Site


class ScenarioError(ValueError):
    """A scenario that cannot be right: names the offending item."""


@dataclass(frozen=True, slots=True)
class ConstantLoad:
    """A service that always draws the same."""

    power_w: float

    def demand_w(self, t_s: float) -> float:
        """Demand at simulated time `t_s`."""
        return self.power_w


@dataclass(frozen=True, slots=True)
class Trace:
    """A measured series: sample times from the first sample, and the values read there.

    Gaps (blank cells) are simply absent samples: the previous value holds until the next one.
    """

    offsets_s: tuple[float, ...]
    values: tuple[float, ...]
    span_s: float  # one full replay: last offset plus one sample period
    mean: float = field(init=False)  # of the values present; every replayed sample divides by it

    def __post_init__(self) -> None:
        if not self.values or len(self.values) != len(self.offsets_s):
            raise ScenarioError("a trace needs at least one sample, with a time for each")
        if any(b <= a for a, b in pairwise(self.offsets_s)):
            raise ScenarioError("trace times must increase")
        if self.span_s <= self.offsets_s[-1]:
            raise ScenarioError("a trace's span must end after its last sample")
        if not all(math.isfinite(v) and v >= 0 for v in self.values):
            raise ScenarioError("trace values must be finite and not negative")
        if sum(self.values) <= 0:
            raise ScenarioError("a trace whose values are all zero cannot be rescaled")
        object.__setattr__(self, "mean", sum(self.values) / len(self.values))

    @classmethod
    def from_samples(cls, samples: Sequence[tuple[float, float]]) -> Trace:
        """From (time_s, value) pairs in time order; the span adds the median sample period."""
        if not samples:
            raise ScenarioError("a trace needs at least one sample")
        start_s = samples[0][0]
        offsets = tuple(t - start_s for t, _ in samples)
        steps = sorted(b - a for a, b in pairwise(offsets))
        period_s = steps[len(steps) // 2] if steps else 1.0
        return cls(offsets, tuple(v for _, v in samples), offsets[-1] + period_s)

    def value_at(self, t_s: float) -> float:
        """The sample in force at `t_s`, wrapping around at the end."""
        position = t_s % self.span_s
        return self.values[max(0, bisect.bisect_right(self.offsets_s, position) - 1)]


@dataclass(frozen=True, slots=True)
class TraceLoad:
    """A trace replayed from `offset_s`, wrapped, and rescaled so its mean is `mean_w`."""

    trace: Trace
    mean_w: float
    offset_s: float = 0.0

    def demand_w(self, t_s: float) -> float:
        """Demand at simulated time `t_s`."""
        return self.trace.value_at(t_s + self.offset_s) * self.mean_w / self.trace.mean


# Noise is drawn in blocks of this many steps so one generator call serves many instants.
_NOISE_BLOCK = 4096


@lru_cache(maxsize=256)
def _noise_block(seed: int, stream: int, block: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.random.default_rng((seed, stream, block)).standard_normal(_NOISE_BLOCK)


def standard_noise(seed: int, stream: str, step: int) -> float:
    """A standard normal draw that depends only on (seed, stream, step)."""
    values = _noise_block(seed, zlib.crc32(stream.encode()), step // _NOISE_BLOCK)
    return float(values[step % _NOISE_BLOCK])


@dataclass(frozen=True, slots=True)
class PeriodicLoad:
    """A daily-style cycle between `base_w` and `peak_w` with seeded Gaussian noise.

    The cycle is a raised cosine: `base_w` at t = 0 and every period, `peak_w` half-way through.
    `noise_ratio` is the noise's standard deviation relative to the cycle's value; the draw is
    held for `noise_step_s` (the scenario's step) and never goes below zero.
    """

    base_w: float
    peak_w: float
    period_s: float
    noise_ratio: float
    seed: int
    stream: str  # the service id: each service gets its own noise
    noise_step_s: float = 1.0

    def __post_init__(self) -> None:
        if self.period_s <= 0 or self.noise_step_s <= 0:
            raise ScenarioError(f"{self.stream}: period_s and the step must be positive")
        if self.base_w < 0 or self.peak_w < self.base_w:
            raise ScenarioError(f"{self.stream}: needs 0 <= base_w <= peak_w")
        if self.noise_ratio < 0:
            raise ScenarioError(f"{self.stream}: noise_ratio must not be negative")

    def demand_w(self, t_s: float) -> float:
        """Demand at simulated time `t_s`."""
        phase = 2.0 * math.pi * t_s / self.period_s
        cycle_w = self.base_w + (self.peak_w - self.base_w) * (1.0 - math.cos(phase)) / 2.0
        if self.noise_ratio == 0:
            return cycle_w
        step = math.floor(t_s / self.noise_step_s)
        return max(
            0.0, cycle_w * (1.0 + self.noise_ratio * standard_noise(self.seed, self.stream, step))
        )


LoadModel = ConstantLoad | TraceLoad | PeriodicLoad


@dataclass(frozen=True, slots=True)
class LoadStep:
    """A service draws `extra_w` more from `at_s` for `duration_s`."""

    at_s: float
    service: str
    extra_w: float
    duration_s: float

    def extra_at(self, t_s: float) -> float:
        """The extra draw this step adds at `t_s`."""
        return self.extra_w if self.at_s <= t_s < self.at_s + self.duration_s else 0.0


FAULT_KINDS = (
    "telemetry_gap",  # no reading of any kind arrives
    "command_fails",  # commands to `target` (a service) are lost
    "outlet_stuck",  # `target` (an outlet) ignores switch commands
    "ups_runtime_jump",  # `target` (a UPS) reports its runtime multiplied by `factor`
    "mains_flicker",  # mains is off for `duration_s` (a blip, or a second outage)
)


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """Something going wrong from `at_s` for `duration_s` (see `FAULT_KINDS`)."""

    at_s: float
    kind: str
    duration_s: float
    target: str | None = None
    factor: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ScenarioError(f"unknown fault kind {self.kind!r} ({', '.join(FAULT_KINDS)})")

    def active_at(self, t_s: float) -> bool:
        """Whether the fault is in force at `t_s`."""
        return self.at_s <= t_s < self.at_s + self.duration_s


@dataclass(frozen=True, slots=True)
class Timeline:
    """Normal operation for `history_s`, then an outage (None duration: mains never returns)."""

    history_s: float
    outage_at_s: float
    outage_duration_s: float | None
    load_steps: tuple[LoadStep, ...] = ()
    faults: tuple[FaultEvent, ...] = ()

    def __post_init__(self) -> None:
        if self.history_s < 0 or self.outage_at_s < 0:
            raise ScenarioError("timeline: history_s and outage_at_s must not be negative")
        if self.outage_duration_s is not None and self.outage_duration_s < 0:
            raise ScenarioError("timeline: outage_duration_s must not be negative")

    @property
    def outage_end_s(self) -> float:
        """When mains returns (infinity when it never does)."""
        if self.outage_duration_s is None:
            return math.inf
        return self.outage_at_s + self.outage_duration_s

    def mains_on_at(self, t_s: float) -> bool:
        """Whether mains is present at `t_s` according to the timeline."""
        return not any(start <= t_s < end for start, end in self.outages_s)

    @property
    def outages_s(self) -> tuple[tuple[float, float], ...]:
        """Every (start, end) mains is off, the main outage and the flickers merged, in order."""
        spans = sorted(
            [(self.outage_at_s, self.outage_end_s)]
            + [
                (f.at_s, f.at_s + f.duration_s)
                for f in self.faults
                if f.kind == "mains_flicker" and f.duration_s > 0
            ]
        )
        merged: list[tuple[float, float]] = []
        for start, end in spans:
            if end <= start:
                continue
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return tuple(merged)


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: the site, a load model per service, the timeline."""

    name: str
    seed: int
    step_s: float
    site: Site
    soc_start_pct: Mapping[str, float]
    loads: Mapping[str, LoadModel]
    timeline: Timeline

    def __post_init__(self) -> None:
        if self.step_s <= 0:
            raise ScenarioError("step_s must be positive")
        services = set(self.site.service_by_id)
        if set(self.loads) != services:
            missing = sorted(services - set(self.loads))
            raise ScenarioError(f"services without a load model: {', '.join(missing)}")
        for ups in self.site.ups:
            soc = self.soc_start_pct.get(ups.id)
            if soc is None or not 0 <= soc <= 100:
                raise ScenarioError(f"UPS {ups.id!r}: soc_start_pct must be within 0..100")
        for step in self.timeline.load_steps:
            if step.service not in services:
                raise ScenarioError(f"timeline load_step: unknown service {step.service!r}")
        known = {
            "command_fails": services,
            "outlet_stuck": set(self.site.outlet_by_id),
            "ups_runtime_jump": {u.id for u in self.site.ups},
        }
        for fault in self.timeline.faults:
            if fault.kind in known and fault.target not in known[fault.kind]:
                raise ScenarioError(f"timeline {fault.kind}: unknown target {fault.target!r}")

    def demand_w(self, service_id: str, t_s: float) -> float:
        """What `service_id` would draw at `t_s` running unthrottled, timeline steps included.

        A step may be negative (a job that ends), but no load draws less than nothing.
        """
        extra_w = sum(
            step.extra_at(t_s) for step in self.timeline.load_steps if step.service == service_id
        )
        return max(0.0, self.loads[service_id].demand_w(t_s) + extra_w)

    def demands_w(self, t_s: float) -> dict[str, float]:
        """Every service's demand at `t_s`."""
        return {service_id: self.demand_w(service_id, t_s) for service_id in self.loads}


def build_scenario(config: Mapping[str, Any], traces: Mapping[tuple[str, str], Trace]) -> Scenario:
    """A scenario from its parsed mapping, with every trace it names already read.

    `config` has the shape of a scenario file (checked by the driver's schema); `traces` maps
    each (`trace`, `column`) a load names to its samples. Topology errors surface as the
    model's `TopologyError`.
    """
    seed = int(config.get("seed", 0))
    step_s = float(config.get("step_s", 1.0))
    services = config.get("services", [])
    site = Site.from_mapping(
        {
            "ups": config.get("ups", []),
            "pdus": config.get("pdus", []),
            "services": [{k: v for k, v in s.items() if k != "load"} for s in services],
        }
    )
    loads = {
        str(s["id"]): _load_from(str(s["id"]), s["load"], traces, seed, step_s) for s in services
    }
    timeline_config = config.get("timeline", {})
    timeline = Timeline(
        history_s=float(timeline_config.get("history_s", 0.0)),
        outage_at_s=float(
            timeline_config.get("outage_at_s", timeline_config.get("history_s", 0.0))
        ),
        outage_duration_s=_optional_float(timeline_config.get("outage_duration_s")),
        load_steps=tuple(
            LoadStep(
                at_s=float(event["at_s"]),
                service=str(event["service"]),
                extra_w=float(event["extra_w"]),
                duration_s=float(event["duration_s"]),
            )
            for event in timeline_config.get("events", [])
            if event["kind"] == "load_step"
        ),
        faults=tuple(
            FaultEvent(
                at_s=float(event["at_s"]),
                kind=str(event["kind"]),
                duration_s=float(event["duration_s"]),
                target=_fault_target(event),
                factor=float(event.get("factor", 1.0)),
            )
            for event in timeline_config.get("events", [])
            if event["kind"] != "load_step"
        ),
    )
    return Scenario(
        name=str(config.get("name", "scenario")),
        seed=seed,
        step_s=step_s,
        site=site,
        soc_start_pct={
            str(u["id"]): float(u.get("soc_start_pct", 100.0)) for u in config.get("ups", [])
        },
        loads=loads,
        timeline=timeline,
    )


def _fault_target(event: Mapping[str, Any]) -> str | None:
    for key in ("service", "outlet", "ups"):
        if key in event:
            return str(event[key])
    return None


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _load_from(
    service_id: str,
    load: Mapping[str, Any],
    traces: Mapping[tuple[str, str], Trace],
    seed: int,
    step_s: float,
) -> LoadModel:
    if "constant_w" in load:
        return ConstantLoad(float(load["constant_w"]))
    if "trace" in load:
        trace = traces.get((str(load["trace"]), str(load.get("column", ""))))
        if trace is None:
            raise ScenarioError(f"service {service_id!r}: trace {load['trace']!r} was not read")
        return TraceLoad(trace, float(load["mean_w"]), float(load.get("offset_s", 0.0)))
    if "base_w" in load:
        return PeriodicLoad(
            base_w=float(load["base_w"]),
            peak_w=float(load["peak_w"]),
            period_s=float(load["period_s"]),
            noise_ratio=float(load.get("noise_ratio", 0.0)),
            seed=seed,
            stream=service_id,
            noise_step_s=step_s,
        )
    raise ScenarioError(
        f"service {service_id!r}: load needs constant_w, trace or base_w/peak_w/period_s"
    )
