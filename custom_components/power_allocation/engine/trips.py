"""How often a node's protective device would have tripped: its trip curve, crossed.

A breaker or a UPS tolerates an overload for a time that shortens as the load grows: its trip
curve (`overload.TripCurve`, steps of load ratio and seconds). Per node, the time spent at or
above each step's load ratio adds up while the node stays above its limit, and goes back to zero
once it is at or under it again; when one step's time reaches that step's seconds, the device
trips. Nothing here opens a device, so a node that stays above its limit after its trip counts
no second one until it has been back at or under its limit: one overload, at most one trip, at
any step length.

Pure and clockless: the caller hands it each node's draw and how long that draw lasted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .model import Site
from .overload import TRIP_CURVE_BY_KIND, TripCurve

# Sums of floats: a node exactly at its limit is not above it.
OVER_LIMIT_TOLERANCE_W = 1e-6


@dataclass(slots=True)
class TripCounter:
    """Trip accounting for every node with a limit; feed it one `observe` per step."""

    limit_w_by_node: Mapping[str, float]
    curve_by_node: Mapping[str, TripCurve]
    # Per node above its limit: the seconds spent at or above each step of its curve; None once
    # it has tripped in this overload.
    _above_s: dict[str, list[float] | None] = field(default_factory=dict, init=False)

    @classmethod
    def for_site(
        cls, site: Site, curve_by_kind: Mapping[str, TripCurve] = TRIP_CURVE_BY_KIND
    ) -> TripCounter:
        """A counter for every UPS, PDU and outlet of `site` that has a limit."""
        limited = [(n.id, n.limit_w, n.kind) for n in site.nodes if n.limit_w is not None]
        return cls(
            limit_w_by_node={node_id: limit_w for node_id, limit_w, _ in limited},
            curve_by_node={node_id: curve_by_kind[kind] for node_id, _, kind in limited},
        )

    def observe(self, draw_w: Mapping[str, float], dt_s: float) -> tuple[str, ...]:
        """Each node drew `draw_w` (absent: 0 W) for `dt_s`: the nodes that tripped in it."""
        tripped = []
        for node_id, limit_w in self.limit_w_by_node.items():
            watts = draw_w.get(node_id, 0.0)
            if watts <= limit_w + OVER_LIMIT_TOLERANCE_W:
                self._above_s.pop(node_id, None)
                continue
            steps = self.curve_by_node[node_id].steps
            above_s = self._above_s.setdefault(node_id, [0.0] * len(steps))
            if above_s is None:
                continue
            ratio = watts / limit_w
            for index, (step_ratio, _) in enumerate(steps):
                if ratio >= step_ratio:
                    above_s[index] += dt_s
            if any(above_s[i] >= seconds for i, (_, seconds) in enumerate(steps)):
                tripped.append(node_id)
                self._above_s[node_id] = None
        return tuple(tripped)
