"""The services' dependency DAG: closures and safe shutdown / startup orders (I1)."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from graphlib import CycleError, TopologicalSorter
from typing import Any


def find_cycle(depends_on: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A dependency cycle in order, first id repeated at the end, or None for a DAG."""
    try:
        TopologicalSorter(depends_on).prepare()
    except CycleError as error:
        # graphlib lists the cycle against the edge direction (a node, then what it depends on,
        # reversed); present it as "a depends on b depends on ... a".
        cycle: list[str] = list(error.args[1])
        return cycle[::-1]
    return None


class DependencyGraph:
    """A validated DAG of service ids; `depends_on[x]` are the services x needs running."""

    def __init__(self, depends_on: Mapping[str, Iterable[str]]) -> None:
        self._depends_on: dict[str, tuple[str, ...]] = {
            node: tuple(deps) for node, deps in depends_on.items()
        }
        for node, deps in self._depends_on.items():
            for dep in deps:
                if dep not in self._depends_on:
                    raise ValueError(f"{node!r} depends on unknown {dep!r}")
        cycle = find_cycle(self._depends_on)
        if cycle is not None:
            raise ValueError("dependency cycle: " + " -> ".join(cycle))
        dependents: dict[str, list[str]] = {node: [] for node in self._depends_on}
        for node, deps in self._depends_on.items():
            for dep in deps:
                dependents[dep].append(node)
        self._dependents = {node: tuple(users) for node, users in dependents.items()}
        self._startup_order = list(TopologicalSorter(self._depends_on).static_order())
        self._startup_rank = {node: i for i, node in enumerate(self._startup_order)}
        self._dependent_closures: dict[str, frozenset[str]] = {}

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every id, in the order given."""
        return tuple(self._depends_on)

    def dependencies(self, node: str) -> tuple[str, ...]:
        """What `node` needs running."""
        return self._depends_on[node]

    def dependents(self, node: str) -> tuple[str, ...]:
        """What needs `node` running."""
        return self._dependents[node]

    def dependency_closure(self, nodes: Iterable[str]) -> frozenset[str]:
        """`nodes` and everything they transitively depend on."""
        return _closure(nodes, self._depends_on)

    def dependent_closure(self, nodes: Iterable[str]) -> frozenset[str]:
        """`nodes` and everything that transitively depends on them."""
        return _closure(nodes, self._dependents)

    def dependent_closure_of(self, node: str) -> frozenset[str]:
        """`node` and everything that transitively depends on it; kept once computed (the graph
        does not change, and the planner asks for every running service every cycle)."""
        closure = self._dependent_closures.get(node)
        if closure is None:
            closure = self._dependent_closures[node] = _closure([node], self._dependents)
        return closure

    def startup_order(
        self, nodes: Iterable[str] | None = None, key: Callable[[str], Any] | None = None
    ) -> list[str]:
        """Dependencies first; among services ready together, smallest `key` first."""
        if key is None:
            return self._restricted(nodes)
        return _ordered(self._depends_on, nodes, key)

    def shutdown_order(
        self, nodes: Iterable[str] | None = None, key: Callable[[str], Any] | None = None
    ) -> list[str]:
        """Dependents first; among services ready together, smallest `key` first."""
        if key is None:
            return self._restricted(nodes)[::-1]
        return _ordered(self._dependents, nodes, key)

    def _restricted(self, nodes: Iterable[str] | None) -> list[str]:
        # The whole graph's startup order, restricted to a subset, is a startup order of the
        # subset: computed once, it spares a sort per call on the planner's hot path.
        if nodes is None:
            return list(self._startup_order)
        rank = self._startup_rank
        return sorted(set(nodes), key=rank.__getitem__)

    def startup_waves(self, nodes: Iterable[str] | None = None) -> list[list[str]]:
        """Groups that can start together: each needs only earlier groups."""
        return _waves(self._depends_on, nodes)

    def shutdown_waves(self, nodes: Iterable[str] | None = None) -> list[list[str]]:
        """Groups that can stop together: nothing in a later group needs them."""
        return _waves(self._dependents, nodes)


def _closure(start: Iterable[str], edges: Mapping[str, tuple[str, ...]]) -> frozenset[str]:
    seen = set(start)
    stack = list(seen)
    while stack:
        for nxt in edges[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return frozenset(seen)


def _sorter(
    before: Mapping[str, tuple[str, ...]], nodes: Iterable[str] | None
) -> TopologicalSorter[str]:
    """A sorter over `nodes` (all by default) where `before[x]` must come before x."""
    chosen = set(before) if nodes is None else set(nodes)
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for node in before if nodes is None else [n for n in before if n in chosen]:
        sorter.add(node, *(p for p in before[node] if p in chosen))
    return sorter


def _ordered(
    before: Mapping[str, tuple[str, ...]],
    nodes: Iterable[str] | None,
    key: Callable[[str], Any],
) -> list[str]:
    sorter = _sorter(before, nodes)
    sorter.prepare()
    position = {node: i for i, node in enumerate(before)}
    ready: list[tuple[Any, int, str]] = []
    order: list[str] = []
    while sorter.is_active():
        for node in sorter.get_ready():
            heapq.heappush(ready, (key(node), position[node], node))
        node = heapq.heappop(ready)[2]
        order.append(node)
        sorter.done(node)
    return order


def _waves(before: Mapping[str, tuple[str, ...]], nodes: Iterable[str] | None) -> list[list[str]]:
    sorter = _sorter(before, nodes)
    sorter.prepare()
    waves: list[list[str]] = []
    while sorter.is_active():
        wave = list(sorter.get_ready())
        waves.append(wave)
        sorter.done(*wave)
    return waves
