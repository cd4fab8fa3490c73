"""`clean_stored_state`: a stored state of any shape resumes what is valid and starts the rest
cold, never an exception at setup; a valid state passes unchanged."""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custom_components.power_allocation.engine.controller import Mode
from custom_components.power_allocation.engine.model import Priority
from custom_components.power_allocation.site_control import SiteControl
from custom_components.power_allocation.stored_state import clean_stored_state
from custom_components.power_allocation.topology import SiteTopology, parse_topology
from tests.test_site_control import DOCUMENT, snapshot

START_S = 1_800_000_000.0


@cache
def _topology() -> SiteTopology:
    return parse_topology(DOCUMENT)


def _run(control: SiteControl, start_s: float, cycles: int, *, on_battery: bool) -> float:
    now_s = start_s
    for n in range(cycles):
        now_s += 10.0
        soc_pct = 100 - n * 2 if on_battery else 100
        control.cycle(snapshot(now_s, on_battery=on_battery, soc_pct=soc_pct), now_s)
    return now_s


@cache
def _learnt_json() -> str:
    """A state with something in every part: learnt forecasts and fits, an outage under way
    with a service shed, a hold, a tier changed, the conservative prior, outages seen."""
    control = SiteControl(_topology())
    now_s = _run(control, START_S, 40, on_battery=False)
    now_s = _run(control, now_s, 3, on_battery=True)
    now_s = _run(control, now_s, 40, on_battery=False)
    now_s = _run(control, now_s, 30, on_battery=True)
    decider = control.decider
    decider.hold("network", True)
    decider.set_priority("batch", Priority.MEDIUM)
    decider.conservative = True
    return json.dumps(decider.to_state())


def learnt() -> dict[str, Any]:
    """The state as the store reads it back: through JSON."""
    state: dict[str, Any] = json.loads(_learnt_json())
    return state


def _resumes(state: Any) -> SiteControl:
    """Cleaned, the state builds the site's control and runs cycles on mains and battery."""
    cleaned, _ = clean_stored_state(state)
    control = SiteControl(_topology(), cleaned)
    now_s = _run(control, START_S + 10_000.0, 2, on_battery=False)
    _run(control, now_s, 2, on_battery=True)
    return control


def test_a_valid_state_passes_unchanged() -> None:
    state = learnt()
    assert state["controller"]["mode"] != Mode.NORMAL.value
    assert state["conservative"] is True
    assert state["outages_s"]
    assert state["demand"]["forecasters"]
    assert state["nodes"]
    assert state["battery_fits"]
    assert clean_stored_state(state) == (state, [])
    assert clean_stored_state(None) == (None, [])


def test_demand_that_is_not_a_mapping_starts_cold_and_the_rest_resumes() -> None:
    # "demand": "x" kept the site in setup retry for ever.
    state = {**learnt(), "demand": "x"}
    cleaned, reset = clean_stored_state(state)
    assert reset == ["demand"]
    assert cleaned is not None
    assert "demand" not in cleaned
    control = SiteControl(_topology(), cleaned)
    assert control.decider.state.held_on == frozenset({"network"}), "the rest resumes"
    _resumes(state)


def test_a_conservative_flag_that_is_not_a_boolean_is_off() -> None:
    # "no" read as true.
    for value in ("no", "false", 0, 1, None, [True]):
        cleaned, reset = clean_stored_state({**learnt(), "conservative": value})
        assert reset == ["conservative"]
        assert SiteControl(_topology(), cleaned).decider.conservative is False


def test_each_invalid_part_is_reset_alone_and_named() -> None:
    state = learnt()
    controller = state["controller"]
    controller["services"]["batch"]["shed_in_outage"] = "yes"
    controller["soc_ratio"]["ups1"] = 7
    controller["held_off"] = ["db", 3]
    state["demand"]["last_w"]["db"] = "lots"
    state["demand"]["forecasters"]["network"]["combination"]["snarimax"] = []
    state["nodes"]["pdu-a"]["settings"]["horizon_steps"] = 10**9
    state["battery_fits"]["ups1"]["n"] = True
    state["priority_overrides"]["batch"] = "urgent"
    state["outages_s"].append(-5)
    state["colour"] = "red"
    cleaned, reset = clean_stored_state(state)
    assert reset == [
        "controller.soc_ratio.ups1",
        "controller.services.batch",
        "controller.held_off",
        "demand.forecasters.network",
        "demand.last_w.db",
        "nodes.pdu-a",
        "battery_fits.ups1",
        "priority_overrides.batch",
        "outages_s",
        "colour",
    ]
    assert cleaned is not None
    valid = learnt()
    assert cleaned["controller"]["services"].keys() == {"network", "db"}
    assert cleaned["controller"]["held_off"] == ["db"]
    assert cleaned["controller"]["mode"] == valid["controller"]["mode"], "the rest is kept"
    assert cleaned["demand"]["forecasters"].keys() == {"db", "batch"}
    assert cleaned["outages_s"] == valid["outages_s"]
    assert "colour" not in cleaned
    _resumes(state)


def test_forecasters_written_with_another_river_start_afresh_and_are_named() -> None:
    # Their river objects' learnt numbers are in that river's own layout: relearnt, not read.
    state = learnt()
    for forecaster in [*state["demand"]["forecasters"].values(), *state["nodes"].values()]:
        forecaster["river"] = "0.21.0"
    cleaned, reset = clean_stored_state(state)
    assert reset == [
        *(f"demand.forecasters.{sid}" for sid in state["demand"]["forecasters"]),
        *(f"nodes.{node}" for node in state["nodes"]),
    ]
    assert cleaned is not None
    assert cleaned["demand"]["forecasters"] == {}
    assert cleaned["nodes"] == {}
    _resumes(state)


def test_a_controller_whose_mode_is_not_valid_starts_afresh() -> None:
    state = learnt()
    state["controller"]["mode"] = "panic"
    cleaned, reset = clean_stored_state(state)
    assert reset == ["controller"]
    assert cleaned is not None
    assert "controller" not in cleaned
    assert SiteControl(_topology(), cleaned).decider.state.mode is Mode.NORMAL


def test_held_on_and_off_at_once_releases_both() -> None:
    state = learnt()
    state["controller"]["held_off"] = ["network"]
    cleaned, reset = clean_stored_state(state)
    assert reset == ["controller.holds of network"]
    assert cleaned is not None
    assert cleaned["controller"]["held_on"] == cleaned["controller"]["held_off"] == []


def test_a_state_of_another_version_or_shape_starts_cold_without_a_reset() -> None:
    assert clean_stored_state({"version": 99, "demand": "x"}) == ({"version": 99}, [])
    assert clean_stored_state(["not", "a", "mapping"]) == (None, ["the whole state"])


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document."""
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


@cache
def _learnt_paths() -> list[tuple[Any, ...]]:
    return _paths(learnt())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), garbage=JSON)
def test_garbage_anywhere_in_the_stored_state_never_prevents_setup(
    data: st.DataObject, garbage: Any
) -> None:
    state = learnt()
    path = data.draw(st.sampled_from(_learnt_paths()[1:]), label="path")
    node = state
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = garbage
    _resumes(state)


@settings(max_examples=60, deadline=None)
@given(garbage=JSON)
def test_a_stored_state_that_is_all_garbage_never_prevents_setup(garbage: Any) -> None:
    _resumes(garbage)
    if isinstance(garbage, dict):
        _resumes({**garbage, "version": learnt()["version"]})


def test_cleaning_changes_nothing_in_what_it_is_given() -> None:
    state = learnt()
    state["demand"] = "x"
    before = copy.deepcopy(state)
    clean_stored_state(state)
    assert state == before
