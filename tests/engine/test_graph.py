"""The dependency graph: orders that never break a dependency (I1), as properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from custom_components.power_allocation.engine.graph import DependencyGraph, find_cycle


@st.composite
def random_dags(draw: st.DrawFn) -> dict[str, list[str]]:
    n = draw(st.integers(1, 30))
    order = draw(st.permutations(range(n)))
    deps: dict[str, list[str]] = {}
    for position, node in enumerate(order):
        earlier = order[:position]
        chosen = (
            draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True)) if earlier else []
        )
        deps[f"n{node}"] = [f"n{d}" for d in chosen]
    return deps


@given(random_dags())
def test_startup_puts_dependencies_first_and_shutdown_dependents_first(
    deps: dict[str, list[str]],
) -> None:
    graph = DependencyGraph(deps)
    startup = {node: i for i, node in enumerate(graph.startup_order())}
    shutdown = {node: i for i, node in enumerate(graph.shutdown_order())}
    assert set(startup) == set(deps) == set(shutdown)
    for node, needs in deps.items():
        for dep in needs:
            assert startup[dep] < startup[node]
            assert shutdown[node] < shutdown[dep]


@given(random_dags(), st.data())
def test_closures_and_waves_respect_edges(deps: dict[str, list[str]], data: st.DataObject) -> None:
    graph = DependencyGraph(deps)
    picked = data.draw(st.lists(st.sampled_from(sorted(deps)), max_size=3))
    down = graph.dependent_closure(picked)
    up = graph.dependency_closure(picked)
    for node, needs in deps.items():
        if any(d in down for d in needs):
            assert node in down  # whatever needs a stopped service stops too
        if node in up:
            assert set(needs) <= up
    wave_of = {node: i for i, wave in enumerate(graph.startup_waves()) for node in wave}
    for node, needs in deps.items():
        assert all(wave_of[d] < wave_of[node] for d in needs)
    subset = sorted(down)
    order = graph.shutdown_order(subset)
    assert sorted(order) == subset
    for node in picked:
        assert graph.dependent_closure_of(node) == graph.dependent_closure([node])
        assert graph.dependent_closure_of(node) == graph.dependent_closure([node])  # kept


def test_priority_key_breaks_ties_among_ready_services() -> None:
    graph = DependencyGraph({"net": [], "db": ["net"], "web": ["db"], "batch": ["net"]})
    tier = {"net": 0, "db": 0, "web": 0, "batch": 3}
    assert graph.startup_order(key=tier.__getitem__) == ["net", "db", "web", "batch"]
    assert graph.shutdown_order(key=lambda n: -tier[n])[0] == "batch"


def test_a_cycle_is_listed_in_dependency_order() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": []}) is None
