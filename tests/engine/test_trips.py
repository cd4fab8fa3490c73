"""Trip accounting: a node's trip curve, crossed."""

from __future__ import annotations

from custom_components.power_allocation.engine.overload import BREAKER_TRIP_CURVE
from custom_components.power_allocation.engine.trips import TripCounter


def _breaker() -> TripCounter:
    """A 1000-W breaker (1.13 x for an hour, 1.45 x for a minute, 2.55 x for a second)."""
    return TripCounter({"pdu": 1000.0}, {"pdu": BREAKER_TRIP_CURVE})


def test_a_breaker_trips_once_its_time_at_a_load_is_reached() -> None:
    counter = _breaker()
    assert counter.observe({"pdu": 1200.0}, 3599.0) == ()
    assert counter.observe({"pdu": 1200.0}, 1.0) == ("pdu",)


def test_time_at_a_higher_load_counts_toward_the_lower_steps_too() -> None:
    counter = _breaker()
    assert counter.observe({"pdu": 1500.0}, 59.0) == ()  # 59 s of 60 at 1.45 x
    assert counter.observe({"pdu": 1200.0}, 3540.0) == ()  # 3599 s of 3600 at 1.13 x
    assert counter.observe({"pdu": 1200.0}, 1.0) == ("pdu",)


def test_going_back_under_the_limit_starts_the_count_again() -> None:
    counter = _breaker()
    assert counter.observe({"pdu": 1500.0}, 59.0) == ()
    assert counter.observe({"pdu": 1000.0}, 1.0) == ()  # at the limit is not above it
    assert counter.observe({"pdu": 1500.0}, 59.0) == ()
    assert counter.observe({"pdu": 1500.0}, 1.0) == ("pdu",)


def test_one_overload_trips_once_however_long_it_lasts() -> None:
    counter = _breaker()
    assert counter.observe({"pdu": 3000.0}, 1.0) == ("pdu",)
    assert counter.observe({"pdu": 3000.0}, 600.0) == ()
    assert counter.observe({"pdu": 900.0}, 1.0) == ()
    assert counter.observe({"pdu": 3000.0}, 1.0) == ("pdu",)


def test_a_node_below_its_curves_first_step_never_trips() -> None:
    counter = _breaker()
    assert counter.observe({"pdu": 1100.0}, 86400.0) == ()
    assert counter.observe({}, 1.0) == ()  # no reading: nothing drawn
