"""The UPS battery: a Peukert-like runtime curve, energy left, and an online fit of the curve.

runtime(P) = t_ref · (P_ref / P)^k at full charge, capped by the pack's usable energy: at light
loads a real pack cannot deliver more than `capacity_wh` through its inverter, whatever the curve
says. State of charge is tracked as the fraction of that full-charge runtime still available at
the load being drawn, which is how a UPS reports it and how the curve composes over changing loads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .graph import DependencyGraph
from .model import Ups

# A UPS's own runtime estimate is unreliable below about 10 % of its rating.
MIN_FIT_LOAD_RATIO = 0.10


@dataclass(frozen=True, slots=True)
class BatteryModel:
    """The runtime curve of one UPS at full charge."""

    t_ref_s: float  # runtime at p_ref_w
    p_ref_w: float
    peukert_k: float
    capacity_wh: float  # usable energy at 100 % state of charge
    efficiency: float  # inverter: output W per battery W

    @classmethod
    def from_ups(cls, ups: Ups) -> BatteryModel:
        """The curve fixed by the UPS's published full-load runtime."""
        return cls(
            t_ref_s=ups.runtime_full_load_s,
            p_ref_w=ups.rated_w,
            peukert_k=ups.peukert_k,
            capacity_wh=ups.capacity_wh,
            efficiency=ups.efficiency,
        )

    def full_runtime_s(self, load_w: float) -> float:
        """Runtime from full charge at a constant output load."""
        return float(self.full_runtimes_s(np.asarray(load_w, dtype=np.float64)))

    def full_runtimes_s(self, load_w: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """`full_runtime_s` for many loads at once (inf where nothing is drawn)."""
        with np.errstate(divide="ignore"):
            curve_s = self.t_ref_s * np.power(self.p_ref_w / load_w, self.peukert_k)
            energy_cap_s = self.capacity_wh * self.efficiency * 3600.0 / load_w
        return np.where(load_w > 0, np.minimum(curve_s, energy_cap_s), np.inf)

    def runtime_s(self, load_w: float, soc_ratio: float = 1.0) -> float:
        """Runtime left at a constant output load from state of charge `soc_ratio`."""
        return max(0.0, soc_ratio) * self.full_runtime_s(load_w)

    def energy_left_wh(self, soc_ratio: float, load_w: float) -> float:
        """Output energy the pack can still deliver at a constant load."""
        if load_w <= 0:
            return max(0.0, soc_ratio) * self.capacity_wh * self.efficiency
        return load_w * self.runtime_s(load_w, soc_ratio) / 3600.0

    def soc_used_ratio(self, load_w: float, duration_s: float) -> float:
        """Fraction of a full charge drawn by `load_w` for `duration_s`."""
        if load_w <= 0 or duration_s <= 0:
            return 0.0
        return duration_s / self.full_runtime_s(load_w)

    def soc_after(self, soc_ratio: float, load_w: float, duration_s: float) -> float:
        """State of charge after drawing `load_w` for `duration_s` (never below 0)."""
        return max(0.0, soc_ratio - self.soc_used_ratio(load_w, duration_s))

    def soc_for_steps(self, steps: Iterable[tuple[float, float]]) -> float:
        """Charge fraction needed for a sequence of (load_w, duration_s) steps."""
        return sum(self.soc_used_ratio(load_w, duration_s) for load_w, duration_s in steps)


@dataclass(frozen=True, slots=True)
class ShutdownReserve:
    """What shutting a set of services down cleanly costs."""

    duration_s: float  # until the last outlet is cut
    soc_ratio: float  # charge it draws
    energy_wh: float  # output energy it draws
    finish_s: Mapping[str, float]  # when each service's shutdown has finished, from its start


def shutdown_reserve(
    model: BatteryModel,
    graph: DependencyGraph,
    draw_w: Mapping[str, float],
    shutdown_s: Mapping[str, float],
    base_load_w: float = 0.0,
) -> ShutdownReserve:
    """The charge needed to stop every service in `draw_w` gracefully, in dependency order.

    A service starts stopping once everything that depends on it has stopped (I1), takes its
    `shutdown_s` and draws its full `draw_w` until then (a stopping OS keeps drawing — the
    conservative assumption). `base_load_w` is what stays on throughout (unmanaged outlets).
    """
    running = set(draw_w)
    finish_s: dict[str, float] = {}
    for service in graph.shutdown_order(running):
        users_done = max(
            (finish_s[d] for d in graph.dependents(service) if d in running), default=0.0
        )
        finish_s[service] = users_done + shutdown_s[service]
    steps: list[tuple[float, float]] = []
    energy_wh = 0.0
    now_s = 0.0
    load_w = base_load_w + sum(draw_w.values())
    for service, done_s in sorted(finish_s.items(), key=lambda item: item[1]):
        if done_s > now_s:
            steps.append((load_w, done_s - now_s))
            energy_wh += load_w * (done_s - now_s) / 3600.0
            now_s = done_s
        load_w -= draw_w[service]
    return ShutdownReserve(
        duration_s=now_s,
        soc_ratio=model.soc_for_steps(steps),
        energy_wh=energy_wh,
        finish_s=finish_s,
    )


@dataclass(frozen=True, slots=True)
class RuntimeReading:
    """A UPS's own runtime estimate at a load and state of charge."""

    load_w: float
    runtime_s: float
    soc_ratio: float


class PeukertFit:
    """Online fit of `t_ref` and `k` to the runtime readings a UPS reports.

    In log space the curve is linear: log(runtime / soc) = log t_ref + k · log(P_ref / P). The fit
    keeps exponentially weighted sufficient statistics of that line plus a prior pulling towards
    the published curve, so a UPS that only ever runs at one load still yields a sane curve (its
    `t_ref` is learnt, `k` stays near the prior) and old readings fade as the pack ages.
    """

    def __init__(
        self,
        prior: BatteryModel,
        prior_weight: float = 2.0,
        forgetting_ratio: float = 0.999,
        min_load_ratio: float = MIN_FIT_LOAD_RATIO,
    ) -> None:
        self.prior = prior
        self.prior_weight = prior_weight
        self.forgetting_ratio = forgetting_ratio
        self.min_load_ratio = min_load_ratio
        self._n = 0.0
        self._sx = 0.0
        self._sy = 0.0
        self._sxx = 0.0
        self._sxy = 0.0
        self.readings_used = 0

    def learn_one(self, reading: RuntimeReading) -> bool:
        """Learn one reading; False when it is ignored (light load, empty, nonsense)."""
        load_w, runtime_s, soc = reading.load_w, reading.runtime_s, reading.soc_ratio
        if not all(math.isfinite(v) for v in (load_w, runtime_s, soc)):
            return False
        if load_w < self.min_load_ratio * self.prior.p_ref_w or runtime_s <= 0 or soc <= 0.05:
            return False
        x = math.log(self.prior.p_ref_w / load_w)
        y = math.log(runtime_s / min(soc, 1.0))
        f = self.forgetting_ratio
        self._n = f * self._n + 1.0
        self._sx = f * self._sx + x
        self._sy = f * self._sy + y
        self._sxx = f * self._sxx + x * x
        self._sxy = f * self._sxy + x * y
        self.readings_used += 1
        return True

    def model(self) -> BatteryModel:
        """The current best curve: a ridge fit of the line, shrunk towards the prior."""
        a0 = math.log(self.prior.t_ref_s)
        b0 = self.prior.peukert_k
        lam = self.prior_weight
        # Normal equations of  sum (y - a - b x)^2 + lam (a - a0)^2 + lam (b - b0)^2.
        m11 = self._n + lam
        m12 = self._sx
        m22 = self._sxx + lam
        r1 = self._sy + lam * a0
        r2 = self._sxy + lam * b0
        det = m11 * m22 - m12 * m12
        a = (r1 * m22 - m12 * r2) / det
        b = min(3.0, max(1.0, (m11 * r2 - m12 * r1) / det))
        # Never more runtime than the published curve, between the lightest load fitted and the
        # rating: a pack only loses runtime as it ages, and a UPS's estimate that jumps up (a
        # load change, a firmware's guess) taught the fit a battery that died before the final
        # shutdown was done (I9). log runtime is linear in x = log(P_ref / P), so holding both
        # ends of that span holds all of it.
        x_max = math.log(1.0 / self.min_load_ratio)
        a = min(a, a0)
        b = max(1.0, min(b, b0 + (a0 - a) / x_max))
        return BatteryModel(
            t_ref_s=math.exp(a),
            p_ref_w=self.prior.p_ref_w,
            peukert_k=b,
            capacity_wh=self.prior.capacity_wh,
            efficiency=self.prior.efficiency,
        )

    def to_state(self) -> dict[str, float]:
        """JSON-ready state, so the fit survives a restart."""
        return {
            "n": self._n,
            "sx": self._sx,
            "sy": self._sy,
            "sxx": self._sxx,
            "sxy": self._sxy,
            "readings_used": float(self.readings_used),
        }

    def load_state(self, state: Mapping[str, float]) -> None:
        """Restore what `to_state` returned."""
        self._n = float(state["n"])
        self._sx = float(state["sx"])
        self._sy = float(state["sy"])
        self._sxx = float(state["sxx"])
        self._sxy = float(state["sxy"])
        self.readings_used = int(state["readings_used"])
