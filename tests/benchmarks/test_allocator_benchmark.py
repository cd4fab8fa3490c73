"""The allocator benchmark runs end to end on a small size (figures are not checked: timings)."""

from __future__ import annotations

import json

import pytest

from benchmarks.allocator import main, random_site
from custom_components.power_allocation.engine.allocator import allocate


def test_benchmark_prints_a_row_per_size(capsys: pytest.CaptureFixture[str]) -> None:
    rows = main(["--sizes", "40,300", "--repeats", "1", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == rows
    assert [row["services"] for row in rows] == [40, 300]
    assert rows[0]["optimal"] is True
    assert rows[1]["method"] == "greedy"


def test_benchmark_sites_overload_something() -> None:
    site, demand = random_site(400)
    allocation = allocate(site, demand)
    assert allocation.within_limits
    assert any(d.state.value != "on" for d in allocation.decisions.values())


@pytest.mark.parametrize("count", [1, 7, 30, 45, 999])
def test_benchmark_sites_take_any_count_of_services(count: int) -> None:
    site, demand = random_site(count)
    assert len(site.services) == len(demand) == count
    # Twenty services a PDU; the last takes what is left.
    assert len(site.pdus) == -(-count // 20)
    assert allocate(site, demand).within_limits
