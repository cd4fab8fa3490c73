"""The overload guard: shed the least important load before a breaker or a UPS trips.

Every cycle, for every node with a limit (UPS rating, PDU breaker, outlet fuse), the guard reads
the node's own forecast (`forecast.NodeForecasters`) and estimates the probability that its draw
exceeds the limit within `lookahead_s`:

- at horizon h the draw is the forecast mean plus an error drawn from the node's recent realised
  errors at h, the same window the band's quantiles come from; so P(draw_h > limit) is the share
  of those errors larger than (limit - mean_h): the band's empirical distribution, read at the
  limit instead of at its 5 % and 95 % points;
- over the lookahead it combines them as if independent: P = 1 - prod(1 - P_h). Measurement
  noise is close to independent from one step to the next, and a breaker sees every one of those
  steps; for errors that move together (a ramp) this overstates the risk, which only makes the
  guard act a little earlier. (The maximum over h, exact for errors that move in lockstep, let
  noisy ramps cross the limit before it reached the threshold: measured, see docs/forecasting.md.)

A probability at or above `warning_probability` raises a warning. At or above `shed_probability`
the device's trip curve decides how soon the guard acts (I2): a forecast crossing is not a trip.
At the forecast upper draw (the draw now included) the breaker or UPS holds for some time; a
shed takes effect only once a graceful shutdown has run (the longest `shutdown_s` of what could
go under the node). A crossing the device would not hold that long, and that is imminent (the
draw now, or the next step's band, over the limit), is acted on at once; any other waits for
confirmation — `confirm_cycles` cycles in a row (one noisy reading sheds
nothing) and, while the draw itself is still within the limit, as long as the device's tolerance
leaves beyond the shutdown, up to `confirm_max_s`. A forecast that fades within that time sheds
nothing, and neither does a crossing only the far horizons see until the draw has climbed since
the risk began by more than a step's noise (I9: a step that settles below the limit is
extrapolated for a few cycles, a ramp keeps climbing).

Then the guard starts a pre-emptive shed: it works out how many watts must go for the probability
of exceeding the limit within the lookahead to fall to `shed_target_probability` (the same
estimate, with every forecast mean lowered by the shed), and asks the allocator for an allocation
with that node's limit lowered by that much (every other node unbound: those are the allocation's
of the controller, and their own shed's), so the allocator picks what goes by priority and
dependencies (I1, I4). The shed holds until the node's forecast upper draw plus everything the
shed keeps off it (each service's draw, through its share of the node, above what the shed allows
it), a quantile of the sum (`node_total_with_w`), has stayed `release_margin_ratio` below the
limit for `release_hold_s`; then the controller gives it back, in dependency order, on the same
test (I2, I5: no flapping).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from .allocator import (
    Allocation,
    Decision,
    Demand,
    ServiceState,
    allocate,
    node_loads_w,
    service_node_shares,
)
from .forecast import LoadForecaster
from .model import Priority, Site

# What a limit keeps free before anything stopped or capped for it comes back on mains: the
# guard's release and the controller's give-back test the node's forecast against it alike.
GIVE_BACK_MARGIN_RATIO = 0.1


class OverloadLevel(StrEnum):
    """How worried the guard is about one node."""

    NORMAL = "normal"
    WARNING = "warning"
    SHEDDING = "shedding"


@dataclass(frozen=True, slots=True)
class TripCurve:
    """How long a protective device tolerates a load: (load ratio, seconds) steps, ascending.

    A load ratio at or above a step's ratio trips after that step's seconds; below the first
    step it never trips.
    """

    steps: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        ratios = [ratio for ratio, _ in self.steps]
        times = [seconds for _, seconds in self.steps]
        if not self.steps or ratios != sorted(ratios) or times != sorted(times, reverse=True):
            raise ValueError("trip curve steps must rise in load ratio and fall in time")

    def trip_after_s(self, load_ratio: float) -> float:
        """Seconds until the device trips at a constant `load_ratio` of its rating."""
        index = bisect.bisect_right([ratio for ratio, _ in self.steps], load_ratio) - 1
        return math.inf if index < 0 else self.steps[index][1]


# Small UPS units (APC Smart-UPS, Eaton 5P class) publish roughly: up to 110 % for a minute,
# 110-130 % for tens of seconds, 130-150 % for a few seconds, above 150 % about half a second.
UPS_TRIP_CURVE = TripCurve(((1.0, 60.0), (1.1, 30.0), (1.3, 5.0), (1.5, 0.5)))
# A miniature breaker (IEC 60898-1): 1.13 In holds for an hour, 1.45 In trips within the hour
# (taken as a minute to be safe), 2.55 In within 1-60 s, 5 In magnetically within 0.1 s.
BREAKER_TRIP_CURVE = TripCurve(((1.13, 3600.0), (1.45, 60.0), (2.55, 1.0), (5.0, 0.1)))
TRIP_CURVE_BY_KIND = {
    "ups": UPS_TRIP_CURVE,
    "pdu": BREAKER_TRIP_CURVE,
    "outlet": BREAKER_TRIP_CURVE,
}


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """Thresholds of the overload guard."""

    # At least the time a graceful shutdown takes to bring the draw down.
    lookahead_s: float = 120.0
    warning_probability: float = 0.1
    shed_probability: float = 0.5
    confirm_cycles: int = 2
    # The longest a crossing the device tolerates waits for confirmation. However long a breaker
    # holds 1.13 In, the limit is the limit (I2): within the two-minute lookahead the shed must
    # still come, and its graceful shutdown end, before the crossing.
    confirm_max_s: float = 30.0
    shed_target_probability: float = 0.01
    release_margin_ratio: float = GIVE_BACK_MARGIN_RATIO
    # Five minutes of fitting with the margin before a shed is given back: minutes-long peaks
    # are not chased, and what was shed is back well within a quarter of an hour.
    release_hold_s: float = 300.0
    # A graceful shutdown takes minutes; until it has, the draw has not fallen yet, so more
    # shedding waits this long.
    settle_s: float = 120.0

    def __post_init__(self) -> None:
        if not 0.0 < self.warning_probability <= self.shed_probability <= 1.0:
            raise ValueError("need 0 < warning_probability <= shed_probability <= 1")
        if not 0.0 < self.shed_target_probability < self.shed_probability:
            raise ValueError("need 0 < shed_target_probability < shed_probability")
        if self.lookahead_s <= 0 or self.confirm_cycles < 1:
            raise ValueError("lookahead_s must be positive and confirm_cycles at least 1")


@dataclass(frozen=True, slots=True)
class NodeRisk:
    """One node's outlook over the lookahead."""

    node_id: str
    limit_w: float
    draw_w: float  # latest reading
    upper_w: float  # highest forecast upper bound within the lookahead
    exceed_probability: float
    trip_after_s: float  # by the device's trip curve, if `upper_w` came true
    level: OverloadLevel
    shed_takes_s: float = 0.0  # the longest graceful shutdown of what could be shed under it


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """What the guard saw and what it asks for this cycle."""

    risks: dict[str, NodeRisk]
    shed_w: dict[str, float]  # per shedding node: watts asked off it
    limits_w: dict[str, float]  # the lowered limits handed to the allocator
    allocation: Allocation | None  # None while no shed is under way: nothing to change
    sheds_started: tuple[str, ...]  # nodes whose pre-emptive shed began this cycle
    sheds_released: tuple[str, ...]


def exceed_probability(
    forecaster: LoadForecaster,
    draw_w: float,
    limit_w: float,
    lookahead_s: float,
    shed_w: float = 0.0,
) -> tuple[float, float]:
    """P(draw > limit) within the lookahead, and the highest forecast upper bound there.

    `shed_w` lowers every forecast mean by that much: the risk left once it is shed. Until a
    horizon's band is calibrated its probability is 1 or 0 by the mean alone.
    """
    if draw_w - shed_w > limit_w:
        return 1.0, draw_w - shed_w
    points = forecaster.forecast()
    steps = min(len(points), max(1, math.ceil(lookahead_s / forecaster.settings.step_s)))
    stays_below = 1.0
    upper_w = draw_w - shed_w
    for h, point in enumerate(points[:steps], start=1):
        mean_w = point.mean_w - shed_w
        upper_w = max(upper_w, point.upper_w - shed_w)
        if point.calibrated:
            share = forecaster.share_of_errors_above(h, limit_w - mean_w)
        else:
            share = 1.0 if mean_w > limit_w else 0.0
        stays_below *= 1.0 - share
    return 1.0 - stays_below, upper_w


def watts_to_shed(
    forecaster: LoadForecaster,
    draw_w: float,
    limit_w: float,
    lookahead_s: float,
    target_probability: float,
) -> float:
    """The least draw to take off a node for its exceedance probability to reach the target."""
    low_w, high_w = 0.0, max(draw_w, limit_w)
    # Shedding everything leaves no risk at all, so the answer lies in [0, draw + limit].
    while exceed_probability(forecaster, draw_w, limit_w, lookahead_s, high_w)[0] > (
        target_probability
    ):
        high_w *= 2.0
    for _ in range(30):  # to a billionth of the range: well below a watt
        middle_w = (low_w + high_w) / 2.0
        risk = exceed_probability(forecaster, draw_w, limit_w, lookahead_s, middle_w)[0]
        if risk > target_probability:
            low_w = middle_w
        else:
            high_w = middle_w
    return high_w


def urgent(trip_after_s: float, shed_takes_s: float) -> bool:
    """Whether the device would trip before a shed, begun now, has brought the draw down."""
    return trip_after_s <= shed_takes_s


def confirm_s(trip_after_s: float, shed_takes_s: float, over_now: bool, most_s: float) -> float:
    """How long a risk the device tolerates must persist before it is acted on: the tolerance
    left beyond the shed's own time, at most `most_s`; none once the draw is over the limit
    (then only the confirmation cycles)."""
    return 0.0 if over_now else max(0.0, min(most_s, trip_after_s - shed_takes_s))


@dataclass(slots=True)
class _NodeWatch:
    above_cycles: int = 0
    risky_since_s: float | None = None
    # The draw when the risk began: a crossing further out is acted on only once the draw has
    # climbed from it (a ramp), not after one jump the forecast extrapolates.
    risky_from_w: float = 0.0
    shed_w: float = 0.0
    shed_at_s: float = -math.inf
    safe_since_s: float | None = None
    # What the shed keeps off this node: it comes back on release.
    returning: Returning = field(default_factory=lambda: Returning())
    # Every service that drew since the shed began: its watts are taken off what they drew, so
    # the lowered limit stays put as the shed services go dark (and as others come on).
    counted: frozenset[str] = frozenset()


@dataclass(slots=True)
class OverloadGuard:
    """Stateful across cycles (hysteresis); feed it one `decide` call per telemetry cycle."""

    site: Site
    settings: GuardSettings = field(default_factory=GuardSettings)
    trip_curve_by_kind: Mapping[str, TripCurve] = field(
        default_factory=lambda: dict(TRIP_CURVE_BY_KIND)
    )
    _watch: dict[str, _NodeWatch] = field(default_factory=dict, init=False)
    # The lowered limits and the allocation chosen when a shed last began, grew or was lifted in
    # part: kept until the next such change, so that a service's forecast moving (a ramp its own
    # forecaster extrapolates an hour ahead) stops nothing the node's own series does not ask for.
    _chosen: tuple[dict[str, float], Allocation] | None = field(default=None, init=False)

    def decide(
        self,
        now_s: float,
        node_draw_w: Mapping[str, float],
        forecasters: Mapping[str, LoadForecaster],
        demand_w: Mapping[str, Demand],
        *,
        unmanaged_w: Mapping[str, float] | None = None,
        held_on: frozenset[str] = frozenset(),
        held_off: frozenset[str] = frozenset(),
        running: frozenset[str] | None = None,
    ) -> GuardDecision:
        """Assess every node, update the sheds, and allocate with the lowered limits.

        `running`: the services drawing now (by default every one not held off).
        """
        s = self.settings
        risks: dict[str, NodeRisk] = {}
        started: list[str] = []
        released: list[str] = []
        grown = False
        for node in self.site.nodes:
            forecaster = forecasters.get(node.id)
            if node.limit_w is None or forecaster is None or node.id not in node_draw_w:
                continue
            limit_w = node.limit_w
            draw_w = node_draw_w[node.id]
            probability, upper_w = exceed_probability(forecaster, draw_w, limit_w, s.lookahead_s)
            trip_s = self.trip_curve_by_kind[node.kind].trip_after_s(upper_w / limit_w)
            takes_s = self._shed_takes_s(node.id)
            watch = self._watch.setdefault(node.id, _NodeWatch())
            risky = probability >= s.shed_probability
            watch.above_cycles = watch.above_cycles + 1 if risky else 0
            if not risky:
                watch.risky_since_s = None
            elif watch.risky_since_s is None:
                watch.risky_since_s = now_s
                watch.risky_from_w = draw_w
            # Escalating waits until the last shed has taken effect, even when urgent: a
            # graceful shutdown does not go faster for asking twice.
            settled = now_s - watch.shed_at_s >= s.settle_s
            wait_s = confirm_s(trip_s, takes_s, draw_w > limit_w, s.confirm_max_s)
            # At once only when the crossing is also imminent (the draw now, or the next step's
            # band, over the limit): a crossing further out leaves time to confirm it.
            imminent = draw_w > limit_w or _next_step_over(forecaster, limit_w)
            # I9: a crossing only the far horizons see must be borne out by the draw itself,
            # climbing by more than a step's noise since the risk began; a step that settles
            # below the limit leaves it flat, and its extrapolation fades.
            rising = draw_w - watch.risky_from_w > _step_noise_w(forecaster)
            confirmed = (imminent and urgent(trip_s, takes_s)) or (
                (imminent or rising)
                and watch.above_cycles >= s.confirm_cycles
                and watch.risky_since_s is not None
                and now_s - watch.risky_since_s >= wait_s
            )
            if risky and settled and confirmed:
                if watch.shed_w == 0.0:
                    started.append(node.id)
                grown = True
                # What is still coming comes on top of what is already shed.
                watch.shed_w += watts_to_shed(
                    forecaster, draw_w, limit_w, s.lookahead_s, s.shed_target_probability
                )
                watch.shed_at_s = now_s
                watch.above_cycles = 0
                watch.risky_since_s = None
                watch.safe_since_s = None
            elif watch.shed_w > 0.0:
                total_w = node_total_with_w(draw_w, upper_w, watch.returning)
                if total_w <= (1.0 - s.release_margin_ratio) * limit_w:
                    if watch.safe_since_s is None:
                        watch.safe_since_s = now_s
                    elif now_s - watch.safe_since_s >= s.release_hold_s:
                        watch.shed_w = 0.0
                        watch.counted = frozenset()
                        watch.safe_since_s = None
                        released.append(node.id)
                else:
                    watch.safe_since_s = None
            if watch.shed_w > 0.0:
                level = OverloadLevel.SHEDDING
            elif probability >= s.warning_probability:
                level = OverloadLevel.WARNING
            else:
                level = OverloadLevel.NORMAL
            risks[node.id] = NodeRisk(
                node.id, limit_w, draw_w, upper_w, probability, trip_s, level, takes_s
            )

        shed_w = {n: w.shed_w for n, w in self._watch.items() if w.shed_w > 0.0}
        if not shed_w:
            self._chosen = None
            return GuardDecision(risks, {}, {}, None, tuple(started), tuple(released))
        graph = self.site.graph
        blocked = graph.dependent_closure(held_off)
        if running is None:
            running = frozenset(sv.id for sv in self.site.services if sv.id not in blocked)
        # The shed's watts come off what drew when it was counted, at today's forecast: not off
        # an allocation within the limits, which may already leave out what the shed counted on
        # and would shed it twice.
        counted_w: dict[str, float] = {}
        for node_id in shed_w:
            watch = self._watch[node_id]
            watch.counted |= running
            counted_w[node_id] = node_loads_w(self.site, demand_w, watch.counted, unmanaged_w)[
                node_id
            ]
        if self._chosen is None or grown or released:
            self._chosen = self._choose(
                shed_w, counted_w, demand_w, unmanaged_w, held_on, held_off, running, blocked
            )
        lowered_w, allocation = self._chosen
        for node_id in counted_w:
            watch = self._watch[node_id]
            watch.returning = _returning(self.site, demand_w, allocation, watch.counted, node_id)
        return GuardDecision(risks, shed_w, lowered_w, allocation, tuple(started), tuple(released))

    def _choose(
        self,
        shed_w: Mapping[str, float],
        counted_w: Mapping[str, float],
        demand_w: Mapping[str, Demand],
        unmanaged_w: Mapping[str, float] | None,
        held_on: frozenset[str],
        held_off: frozenset[str],
        running: frozenset[str],
        blocked: frozenset[str],
    ) -> tuple[dict[str, float], Allocation]:
        """The lowered limits and the allocation under them: what the shed stops or caps."""
        graph = self.site.graph
        limit_of = {n.id: n.limit_w for n in self.site.nodes if n.limit_w is not None}
        lowered_w = {
            node_id: max(0.0, min(limit_of[node_id], counted_w[node_id] - watts))
            for node_id, watts in shed_w.items()
        }
        # I4: a forecast risk never takes a critical service down; if shedding every other tier
        # is not enough, the allocation says so (`within_limits`) and the breaker decides.
        critical = frozenset(
            sv.id
            for sv in self.site.services
            if sv.priority is Priority.CRITICAL and sv.id in running and sv.id not in blocked
        )
        # What is off now stays off in this allocation: the shed picks among what runs (what is
        # off would neither start for it nor widen its nodes' spread), unless a held-on or
        # critical service needs it.
        kept = graph.dependency_closure(held_on | critical)
        off_now = frozenset(
            sv.id
            for sv in self.site.services
            if sv.id not in running and not graph.dependent_closure([sv.id]) & kept
        )
        allocation = allocate(
            self.site,
            demand_w,
            unmanaged_w=unmanaged_w,
            limits_w={n: lowered_w.get(n, math.inf) for n in limit_of},
            held_on=held_on | critical,
            held_off=held_off | off_now,
        )
        # What was off when the shed was chosen is not the shed's: started later (under another
        # node), it is on as far as the shed goes.
        decisions = {
            sid: decision
            if sid in running or decision.state is ServiceState.ON
            else Decision(ServiceState.ON, demand_w[sid].mean_w, None, "not part of the shed")
            for sid, decision in allocation.decisions.items()
        }
        return lowered_w, replace(allocation, decisions=decisions)

    def _shed_takes_s(self, node_id: str) -> float:
        """The longest graceful shutdown among the services a shed on this node could stop."""
        return max(
            (
                sv.shutdown_s
                for sv in self.site.services
                if sv.priority is not Priority.CRITICAL
                and node_id in self.site.service_nodes(sv.id)
            ),
            default=0.0,
        )


def _next_step_over(forecaster: LoadForecaster, limit_w: float) -> bool:
    """Whether the next step's forecast upper draw is over the limit."""
    points = forecaster.forecast()
    return bool(points) and points[0].upper_w > limit_w


def _step_noise_w(forecaster: LoadForecaster) -> float:
    """How far the node's draw moves in one step without meaning anything: the next step's
    band above its mean (0 while there is no forecast)."""
    points = forecaster.forecast()
    return max(0.0, points[0].upper_w - points[0].mean_w) if points else 0.0


@dataclass(frozen=True, slots=True)
class Returning:
    """What would come back onto a node: the sum of the means, and of the squared spreads."""

    mean_w: float = 0.0
    spread_sq_w: float = 0.0

    def plus(self, share: float, demand: Demand, allowed_w: float = 0.0) -> Returning:
        """With `share` of a service's demand above the `allowed_w` it draws now."""
        mean_w = max(0.0, demand.mean_w - allowed_w)
        spread_w = max(0.0, demand.upper_w - max(demand.mean_w, allowed_w))
        return Returning(self.mean_w + share * mean_w, self.spread_sq_w + (share * spread_w) ** 2)


def node_total_with_w(draw_w: float, upper_w: float, returning: Returning) -> float:
    """A node's forecast total with `returning` back, as a quantile of the sum (I2): its draw
    now and the means coming back, plus the root-sum-square of the node's own spread (its
    forecast upper above its draw) and theirs. Adding the node's upper to each returning
    service's upper counted every peak at once, and kept what was shed off long after its node
    had room again."""
    node_spread_w = max(0.0, upper_w - draw_w)
    return draw_w + returning.mean_w + math.sqrt(node_spread_w**2 + returning.spread_sq_w)


def _returning(
    site: Site,
    demand_w: Mapping[str, Demand],
    allocation: Allocation,
    counted: frozenset[str],
    node_id: str,
) -> Returning:
    """What comes back onto a node when its shed is lifted: each counted service's draw above
    what the allocation allows it (all of it when off), through its share of the node."""
    returning = Returning()
    for sid in counted:
        share = service_node_shares(site, sid).get(node_id, 0.0)
        decision = allocation.decisions[sid]
        if decision.state is ServiceState.OFF:
            returning = returning.plus(share, demand_w[sid])
        elif decision.state is ServiceState.THROTTLED and decision.cap_w is not None:
            returning = returning.plus(share, demand_w[sid], decision.cap_w)
    return returning
