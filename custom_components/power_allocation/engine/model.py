"""The site model: UPS units, PDUs, outlets and the services they power.

Everything here is immutable and validated on construction: a bad topology raises
`TopologyError` with a message that names the problem, so a user sees what to fix.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from typing import Any

from .graph import DependencyGraph, find_cycle


class TopologyError(ValueError):
    """A site description that cannot be right: names the offending item."""


class Priority(StrEnum):
    """Service tiers, most important first."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """3 for critical down to 0 for low: larger is more important."""
        return _RANK[self]


_RANK = {Priority.CRITICAL: 3, Priority.HIGH: 2, Priority.MEDIUM: 1, Priority.LOW: 0}
TIERS_MOST_IMPORTANT_FIRST = (Priority.CRITICAL, Priority.HIGH, Priority.MEDIUM, Priority.LOW)


def _positive(what: str, value: float | None) -> float:
    if value is None:
        raise TopologyError(f"{what} is missing")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TopologyError(f"{what} must be a finite number, got {value!r}")
    if value <= 0:
        raise TopologyError(f"{what} must be positive, got {value!r}")
    return float(value)


def _non_negative(what: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TopologyError(f"{what} must be a finite number, got {value!r}")
    if value < 0:
        raise TopologyError(f"{what} must not be negative, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Ups:
    """A UPS: its output rating and the battery curve published for it."""

    id: str
    rated_w: float
    capacity_wh: float
    runtime_full_load_s: float
    peukert_k: float = 1.4
    efficiency: float = 0.9

    def __post_init__(self) -> None:
        _positive(f"UPS {self.id!r}: rated_w", self.rated_w)
        _positive(f"UPS {self.id!r}: capacity_wh", self.capacity_wh)
        _positive(f"UPS {self.id!r}: runtime_full_load_s", self.runtime_full_load_s)
        if not 1.0 <= _positive(f"UPS {self.id!r}: peukert_k", self.peukert_k) <= 3.0:
            raise TopologyError(f"UPS {self.id!r}: peukert_k must be within 1..3")
        if not 0.0 < _positive(f"UPS {self.id!r}: efficiency", self.efficiency) <= 1.0:
            raise TopologyError(f"UPS {self.id!r}: efficiency must be within 0..1")


@dataclass(frozen=True, slots=True)
class Outlet:
    """One outlet of a PDU; `limit_w` is optional (most outlets are only fused at the PDU)."""

    pdu: str
    number: int
    limit_w: float | None = None

    @property
    def id(self) -> str:
        """`<pdu>/<number>`, the form scenario files and the config use."""
        return f"{self.pdu}/{self.number}"

    def __post_init__(self) -> None:
        if self.number < 1:
            raise TopologyError(f"outlet {self.id!r}: outlet numbers start at 1")
        if self.limit_w is not None:
            _positive(f"outlet {self.id!r}: limit_w", self.limit_w)


@dataclass(frozen=True, slots=True)
class Pdu:
    """A PDU fed by one UPS; `limit_w` is its breaker or inlet rating."""

    id: str
    ups: str
    limit_w: float
    outlets: tuple[Outlet, ...]

    def __post_init__(self) -> None:
        _positive(f"PDU {self.id!r}: limit_w", self.limit_w)
        numbers = [outlet.number for outlet in self.outlets]
        if len(set(numbers)) != len(numbers):
            raise TopologyError(f"PDU {self.id!r}: an outlet number appears twice")
        for outlet in self.outlets:
            if outlet.pdu != self.id:
                raise TopologyError(f"PDU {self.id!r}: outlet {outlet.id!r} belongs to another PDU")

    @classmethod
    def numbered(
        cls,
        id: str,
        ups: str,
        limit_w: float,
        count: int,
        outlet_limits_w: Mapping[int, float] | None = None,
    ) -> Pdu:
        """A PDU with outlets 1..count."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise TopologyError(f"PDU {id!r}: outlets must be a positive count, got {count!r}")
        limits = outlet_limits_w or {}
        return cls(
            id=id,
            ups=ups,
            limit_w=limit_w,
            outlets=tuple(Outlet(id, n, limits.get(n)) for n in range(1, count + 1)),
        )


@dataclass(frozen=True, slots=True)
class Service:
    """The unit of allocation: something that runs on one or more outlets."""

    id: str
    priority: Priority
    outlets: tuple[str, ...]
    depends_on: tuple[str, ...] = ()
    shutdown_s: float = 60.0
    startup_s: float = 60.0
    idle_w: float = 0.0
    throttle_min_w: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.priority, Priority):
            raise TopologyError(f"service {self.id!r}: unknown priority {self.priority!r}")
        if not self.outlets:
            raise TopologyError(f"service {self.id!r}: needs at least one outlet")
        if len(set(self.outlets)) != len(self.outlets):
            raise TopologyError(f"service {self.id!r}: an outlet is listed twice")
        if self.id in self.depends_on:
            raise TopologyError(f"dependency cycle: {self.id} -> {self.id}")
        _non_negative(f"service {self.id!r}: shutdown_s", self.shutdown_s)
        _non_negative(f"service {self.id!r}: startup_s", self.startup_s)
        _non_negative(f"service {self.id!r}: idle_w", self.idle_w)
        if self.throttle_min_w is not None:
            _positive(f"service {self.id!r}: throttle min_w", self.throttle_min_w)

    @property
    def throttleable(self) -> bool:
        """Whether the service can be capped instead of stopped."""
        return self.throttle_min_w is not None


@dataclass(frozen=True, slots=True)
class PowerNode:
    """Anything with a limit that draws add up under: a UPS, a PDU or an outlet."""

    id: str
    kind: str  # "ups" | "pdu" | "outlet"
    limit_w: float | None


@dataclass(frozen=True, eq=False)
class Site:
    """A validated site. Derived indices are computed once and cached.

    Compared and hashed by identity: per-site caches key on it, and hashing every service
    each cycle would cost more than the allocation itself on a large site.
    """

    ups: tuple[Ups, ...]
    pdus: tuple[Pdu, ...]
    services: tuple[Service, ...]
    _graph: DependencyGraph = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.ups:
            raise TopologyError("a site needs at least one UPS")
        _unique("UPS or PDU", [u.id for u in self.ups] + [p.id for p in self.pdus])
        _unique("service", [s.id for s in self.services])
        ups_ids = {u.id for u in self.ups}
        for pdu in self.pdus:
            if pdu.ups not in ups_ids:
                raise TopologyError(f"PDU {pdu.id!r}: unknown UPS {pdu.ups!r}")
        outlet_ids = {o.id for p in self.pdus for o in p.outlets}
        bound_to: dict[str, str] = {}
        service_ids = {s.id for s in self.services}
        for service in self.services:
            for outlet in service.outlets:
                if outlet not in outlet_ids:
                    raise TopologyError(f"service {service.id!r}: unknown outlet {outlet!r}")
                if outlet in bound_to:
                    raise TopologyError(
                        f"outlet {outlet!r} is bound twice: to {bound_to[outlet]!r} "
                        f"and to {service.id!r}"
                    )
                bound_to[outlet] = service.id
            for dependency in service.depends_on:
                if dependency not in service_ids:
                    raise TopologyError(
                        f"service {service.id!r}: depends on unknown service {dependency!r}"
                    )
        depends_on = {s.id: s.depends_on for s in self.services}
        cycle = find_cycle(depends_on)
        if cycle is not None:
            raise TopologyError("dependency cycle: " + " -> ".join(cycle))
        object.__setattr__(self, "_graph", DependencyGraph(depends_on))

    @property
    def graph(self) -> DependencyGraph:
        """The services' dependency DAG."""
        return self._graph

    @cached_property
    def service_by_id(self) -> dict[str, Service]:
        """Services keyed by id, in site order."""
        return {s.id: s for s in self.services}

    @cached_property
    def outlet_by_id(self) -> dict[str, Outlet]:
        """Every outlet keyed by `<pdu>/<number>`."""
        return {o.id: o for p in self.pdus for o in p.outlets}

    @cached_property
    def pdu_by_id(self) -> dict[str, Pdu]:
        """PDUs keyed by id."""
        return {p.id: p for p in self.pdus}

    @cached_property
    def service_by_outlet(self) -> dict[str, str]:
        """The service bound to each managed outlet; unmanaged outlets are absent."""
        return {outlet: s.id for s in self.services for outlet in s.outlets}

    @cached_property
    def unmanaged_outlets(self) -> tuple[str, ...]:
        """Outlets bound to no service: metered, never switched."""
        bound = self.service_by_outlet
        return tuple(o for o in self.outlet_by_id if o not in bound)

    @cached_property
    def nodes(self) -> tuple[PowerNode, ...]:
        """Every node with a limit: UPS units (their rating), PDUs, then outlets."""
        return (
            *(PowerNode(u.id, "ups", u.rated_w) for u in self.ups),
            *(PowerNode(p.id, "pdu", p.limit_w) for p in self.pdus),
            *(PowerNode(o.id, "outlet", o.limit_w) for p in self.pdus for o in p.outlets),
        )

    def nodes_above_outlet(self, outlet_id: str) -> tuple[str, str, str]:
        """The outlet, its PDU and its UPS: the nodes an outlet's draw counts against."""
        pdu = self.pdu_by_id[self.outlet_by_id[outlet_id].pdu]
        return (outlet_id, pdu.id, pdu.ups)

    def service_nodes(self, service_id: str) -> frozenset[str]:
        """Every node a service's draw counts against: its outlets, their PDUs and UPS units."""
        return self._nodes_by_service[service_id]

    @cached_property
    def _nodes_by_service(self) -> dict[str, frozenset[str]]:
        return {
            s.id: frozenset(node for o in s.outlets for node in self.nodes_above_outlet(o))
            for s in self.services
        }

    def fed_through(self, dead_feeds: frozenset[str]) -> Site:
        """This site with each service drawing only through its outlets not in `dead_feeds`.

        A dual-fed server whose outlet on one PDU is off draws everything through the other: a
        limit checked on the even split would pass a start that overloads that PDU. Every
        service must keep at least one feed.
        """
        if not dead_feeds:
            return self
        services = []
        for service in self.services:
            outlets = tuple(o for o in service.outlets if o not in dead_feeds)
            if not outlets:
                raise TopologyError(f"service {service.id!r}: every outlet is a dead feed")
            services.append(
                service if outlets == service.outlets else replace(service, outlets=outlets)
            )
        return Site(self.ups, self.pdus, tuple(services))

    def ups_share(self, service_id: str, ups_id: str) -> float:
        """The share of a service's draw a UPS carries: a dual-fed one splits over its outlets."""
        outlets = self.service_by_id[service_id].outlets
        return sum(1 for o in outlets if self.nodes_above_outlet(o)[2] == ups_id) / len(outlets)

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> Site:
        """Build a site from the `ups`/`pdus`/`services` sections of a scenario or config."""
        _known_keys("site", config, {"ups", "pdus", "services"})
        return cls(
            ups=tuple(_ups_from(item) for item in _list(config, "ups")),
            pdus=tuple(_pdu_from(item) for item in _list(config, "pdus")),
            services=tuple(_service_from(item) for item in _list(config, "services")),
        )


def _unique(kind: str, ids: Iterable[str]) -> None:
    seen: set[str] = set()
    for item in ids:
        if item in seen:
            raise TopologyError(f"duplicate {kind} id {item!r}")
        seen.add(item)


def _list(config: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = config.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise TopologyError(f"{key} must be a list of mappings")
    return items


def _known_keys(what: str, item: Mapping[str, Any], allowed: Set[str]) -> None:
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise TopologyError(f"{what}: unknown key(s) {', '.join(unknown)}")


def _required(what: str, item: Mapping[str, Any], key: str) -> Any:
    if key not in item:
        raise TopologyError(f"{what}: {key} is missing")
    return item[key]


# The keys of each item of a site document (what `from_mapping` reads).
UPS_KEYS = frozenset(
    {"id", "rated_w", "capacity_wh", "runtime_full_load_s", "peukert_k", "efficiency"}
)
PDU_KEYS = frozenset({"id", "ups", "limit_w", "outlets", "outlet_limits_w"})


def _ups_from(item: Mapping[str, Any]) -> Ups:
    what = f"UPS {item.get('id')!r}"
    _known_keys(what, item, UPS_KEYS | {"soc_start_pct"})
    return Ups(
        id=str(_required(what, item, "id")),
        rated_w=_required(what, item, "rated_w"),
        capacity_wh=_required(what, item, "capacity_wh"),
        runtime_full_load_s=_required(what, item, "runtime_full_load_s"),
        peukert_k=item.get("peukert_k", 1.4),
        efficiency=item.get("efficiency", 0.9),
    )


def _pdu_from(item: Mapping[str, Any]) -> Pdu:
    what = f"PDU {item.get('id')!r}"
    _known_keys(what, item, PDU_KEYS)
    limits = item.get("outlet_limits_w", {})
    if not isinstance(limits, Mapping):
        raise TopologyError(f"{what}: outlet_limits_w must map outlet numbers to watts")
    return Pdu.numbered(
        id=str(_required(what, item, "id")),
        ups=str(_required(what, item, "ups")),
        limit_w=_required(what, item, "limit_w"),
        count=_required(what, item, "outlets"),
        outlet_limits_w={int(k): v for k, v in limits.items()},
    )


SERVICE_KEYS = frozenset(
    {"id", "priority", "outlets", "depends_on", "shutdown_s", "startup_s", "idle_w", "throttle"}
)


def _service_from(item: Mapping[str, Any]) -> Service:
    what = f"service {item.get('id')!r}"
    # `load` describes a simulated service; the scenario loader validates it.
    _known_keys(what, item, SERVICE_KEYS | {"load"})
    priority = _required(what, item, "priority")
    try:
        tier = Priority(priority)
    except ValueError:
        raise TopologyError(
            f"{what}: unknown priority {priority!r} (critical, high, medium or low)"
        ) from None
    throttle = item.get("throttle")
    if throttle is not None:
        if not isinstance(throttle, Mapping):
            raise TopologyError(f"{what}: throttle must be a mapping with min_w")
        _known_keys(f"{what} throttle", throttle, {"min_w"})
    outlets = _required(what, item, "outlets")
    depends_on = item.get("depends_on", [])
    if not isinstance(outlets, list) or not isinstance(depends_on, list):
        raise TopologyError(f"{what}: outlets and depends_on must be lists")
    return Service(
        id=str(_required(what, item, "id")),
        priority=tier,
        outlets=tuple(str(o) for o in outlets),
        depends_on=tuple(str(d) for d in depends_on),
        shutdown_s=item.get("shutdown_s", 60.0),
        startup_s=item.get("startup_s", 60.0),
        idle_w=item.get("idle_w", 0.0),
        throttle_min_w=None if throttle is None else _required(what, throttle, "min_w"),
    )
