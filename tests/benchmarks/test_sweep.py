"""The random-site sweep: its generator, and its command line on a few quick seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.policies import Row
from benchmarks.sweep import UNSIZED_W, gen, main, read_results
from custom_components.power_allocation.drivers.scenario_file import scenario_from_mapping

SCENARIOS = Path(__file__).parents[2] / "benchmarks" / "scenarios"
# Clean under predictive and the oracle, a second or so for both.
QUICK_SEEDS = (83, 84)
# Under `none` (which never sheds) the pack runs out: 12 unclean losses, then a dependency
# violation as everything boots at once; a fraction of a second a policy.
DIES_UNDER_NONE = 73


def test_gen_is_reproducible_and_differs_between_seeds() -> None:
    assert gen(3) == gen(3)
    assert gen(3) != gen(4)


def test_every_generated_site_loads_with_a_dependency_dag_and_sized_limits() -> None:
    configs = [gen(seed) for seed in range(21)]
    for config in configs:
        site = scenario_from_mapping(config, SCENARIOS, config["name"]).site
        order = [s.id for s in site.services]
        # Each service depends only on services listed before it: no cycle can form.
        assert all(order.index(d) < order.index(s.id) for s in site.services for d in s.depends_on)
        for ups in site.ups:
            assert 0 < ups.rated_w < UNSIZED_W
            assert ups.runtime_full_load_s > 0
        assert all(0 < pdu.limit_w < UNSIZED_W for pdu in site.pdus)
    services = [s for c in configs for s in c["services"]]
    assert any("depends_on" in s for s in services)
    assert any("trace" in s["load"] for s in services)
    assert any(len(c["ups"]) == 2 for c in configs)
    assert any(c["timeline"]["outage_duration_s"] is None for c in configs)


def test_gen_prints_the_seeds_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gen", "3"]) == 0
    assert json.loads(capsys.readouterr().out) == gen(3)


def test_run_writes_a_line_per_seed_and_a_second_run_adds_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, last = QUICK_SEEDS
    args = ["run", "--from", str(first), "--to", str(last + 1), "--out", str(tmp_path)]
    assert main(args) == 0
    results = tmp_path / "results.jsonl"
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["seed"] for r in records] == list(QUICK_SEEDS)
    row_fields = set(Row.__dataclass_fields__) - {"scenario", "policy"}
    for record in records:
        assert set(record) == {"seed", "shape", "figures", "policy_wall_s", "wall_s"}
        assert list(record["figures"]) == ["predictive", "oracle"]
        assert all(set(f) == row_fields for f in record["figures"].values())
        assert record["figures"]["oracle"]["oracle_ratio"] == 1.0
    capsys.readouterr()

    assert main(args) == 0
    assert "0 seeds to run (2 already in" in capsys.readouterr().out
    assert len(results.read_text().splitlines()) == 2


def test_a_seed_the_first_policy_fails_on_is_saved_and_case_shows_when(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = str(DIES_UNDER_NONE)
    args = ["run", "--from", seed, "--to", str(DIES_UNDER_NONE + 1), "--out", str(tmp_path)]
    assert main([*args, "--policies", "none,nut"]) == 0
    saved = tmp_path / f"seed-{seed}.json"
    assert json.loads(saved.read_text()) == gen(DIES_UNDER_NONE)
    assert f"unclean losses: none 1 [{seed}]" in capsys.readouterr().out

    assert main(["case", str(saved), "--policies", "none", "--decisions"]) == 0
    out = capsys.readouterr().out
    assert "| sweep-73 | none |" in out
    assert "-- unclean loss at " in out
    assert "(was running)" in out
    assert "ups1 0.0 % dead" in out
    assert "-- dependency violation: 140 s in the report, 1 spans seen: " in out
    assert "-- every decision from the first outage on" in out


def test_run_refuses_a_folder_of_other_policies(tmp_path: Path) -> None:
    _write(tmp_path, [_record(1, predictive={}, oracle={})])
    with pytest.raises(SystemExit):
        main(["run", "--from", "1", "--to", "2", "--out", str(tmp_path), "--policies", "none"])


def _figures(**overrides: Any) -> dict[str, Any]:
    clean = {
        "weighted_score": 1.0,
        "oracle_ratio": None,
        "critical_uptime_ratio": 1.0,
        "mains_availability": 1.0,
        "mains_stops": 0,
        "false_mains_stops": 0,
        "longest_mains_downtime_s": 0.0,
        "unclean_power_losses": 0,
        "dependency_violation_s": 0.0,
        "overload_s": 0.0,
        "mains_overload_s": 0.0,
        "trips": 0,
        "mains_trips": 0,
        "unnecessary_sheds": 0,
    }
    return clean | overrides


def _record(seed: int, **by_policy: dict[str, Any]) -> dict[str, Any]:
    return {
        "seed": seed,
        "figures": {policy: _figures(**changes) for policy, changes in by_policy.items()},
        "wall_s": 1.0,
    }


def _write(folder: Path, records: list[dict[str, Any]]) -> None:
    lines = [json.dumps(r) + "\n" for r in records]
    (folder / "results.jsonl").write_text("".join(lines), encoding="utf-8")


def test_summary_counts_each_policys_seeds_and_those_the_second_avoids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(
        tmp_path,
        [
            _record(1, predictive={"overload_s": 30.0}, oracle={}),  # replaced below
            _record(1, predictive={"unclean_power_losses": 2, "weighted_score": 0.9}, oracle={}),
            _record(2, predictive={"overload_s": 10.0}, oracle={"overload_s": 5.0}),
            _record(3, predictive={"dependency_violation_s": 20.0}, oracle={}),
            {"seed": 4, "error": "ValueError: boom", "wall_s": 0.5},
        ],
    )
    assert set(read_results(tmp_path / "results.jsonl")) == {1, 2, 3, 4}
    assert main(["summary", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:6] == [
        "4 seeds, 1 errors [4]",
        "unclean losses: predictive 1 [1]; oracle 0 []; oracle avoids 1 of predictive's [1]",
        "dependency-violation s: predictive 1 [3]; oracle 0 []; "
        "oracle avoids 1 of predictive's [3]",
        "overload s: predictive 1 [2]; oracle 1 [2]; oracle avoids 0 of predictive's []",
        "any of the three: predictive 3 [1, 2, 3]; oracle 1 [2]; oracle avoids 2 of predictive's "
        "[1, 3]",
        "score ratio predictive/oracle over 3 seeds: mean 0.9667, median 1.0000, min 0.9000; "
        "below 0.97: 1, above 1: 0",
    ]
    assert lines[6] == "wall per seed: mean 0.88 s, max 1.00 s"


def test_a_harsh_site_has_a_small_pack_long_stops_and_faults_in_its_outage() -> None:
    for seed in range(10):
        config = gen(seed, harsh=True)
        scenario = scenario_from_mapping(config, SCENARIOS, config["name"])
        mean_w = sum(scenario.demand_w(s.id, 0.0) for s in scenario.site.services)
        energy_wh = sum(u.capacity_wh for u in scenario.site.ups)
        assert energy_wh < mean_w  # under an hour of everything on, at any efficiency
        assert all(20 <= s.shutdown_s <= 300 for s in scenario.site.services)
        start_s = config["timeline"]["outage_at_s"]
        faults = [e for e in config["timeline"]["events"] if e["kind"] != "mains_flicker"]
        assert faults
        assert all(start_s <= e["at_s"] <= start_s + 1800 for e in faults)
    assert gen(3, harsh=True) == gen(3, harsh=True) != gen(3)
