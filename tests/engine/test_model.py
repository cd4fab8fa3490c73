"""The site model rejects bad topology with a message that names the problem."""

from __future__ import annotations

from typing import Any

import pytest

from custom_components.power_allocation.engine.model import Priority, Site, TopologyError


def site_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "ups": [{"id": "ups1", "rated_w": 1000, "capacity_wh": 864, "runtime_full_load_s": 360}],
        "pdus": [
            {"id": "pdu-a", "ups": "ups1", "limit_w": 1800, "outlets": 8},
            {"id": "pdu-b", "ups": "ups1", "limit_w": 1800, "outlets": 8},
        ],
        "services": [
            {"id": "network", "priority": "critical", "outlets": ["pdu-a/1"]},
            {
                "id": "db",
                "priority": "critical",
                "outlets": ["pdu-a/2", "pdu-b/2"],
                "depends_on": ["network"],
                "shutdown_s": 90,
                "throttle": {"min_w": 150},
            },
            {"id": "web", "priority": "high", "outlets": ["pdu-a/3"], "depends_on": ["db"]},
        ],
    }
    config.update(changes)
    return config


def test_a_valid_site_is_indexed() -> None:
    site = Site.from_mapping(site_config())
    assert site.service_by_id["db"].priority is Priority.CRITICAL
    assert site.service_by_id["db"].throttle_min_w == 150
    assert site.service_by_outlet["pdu-b/2"] == "db"
    assert "pdu-a/4" in site.unmanaged_outlets
    assert site.nodes_above_outlet("pdu-b/2") == ("pdu-b/2", "pdu-b", "ups1")
    assert [n.kind for n in site.nodes[:3]] == ["ups", "pdu", "pdu"]
    assert site.graph.shutdown_order() == ["web", "db", "network"]


def test_a_dual_fed_service_with_a_dead_feed_draws_through_the_other() -> None:
    site = Site.from_mapping(site_config())
    assert site.fed_through(frozenset()) is site
    fed = site.fed_through(frozenset({"pdu-b/2"}))
    assert fed.service_by_id["db"].outlets == ("pdu-a/2",)
    assert fed.service_nodes("db") == {"pdu-a/2", "pdu-a", "ups1"}
    assert fed.service_by_id["web"] is site.service_by_id["web"]
    assert site.service_by_id["db"].outlets == ("pdu-a/2", "pdu-b/2")
    with pytest.raises(TopologyError, match="'network': every outlet is a dead feed"):
        site.fed_through(frozenset({"pdu-a/1"}))


def services_with(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [*site_config()["services"], *extra]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {
                "services": [
                    {"id": "a", "priority": "low", "outlets": ["pdu-a/1"], "depends_on": ["c"]},
                    {"id": "b", "priority": "low", "outlets": ["pdu-a/2"], "depends_on": ["a"]},
                    {"id": "c", "priority": "low", "outlets": ["pdu-a/3"], "depends_on": ["b"]},
                ]
            },
            "dependency cycle: a -> c -> b -> a",
        ),
        (
            {"services": services_with({"id": "x", "priority": "low", "outlets": ["pdu-a/1"]})},
            "outlet 'pdu-a/1' is bound twice: to 'network' and to 'x'",
        ),
        (
            {"services": services_with({"id": "x", "priority": "low", "outlets": ["pdu-c/1"]})},
            "service 'x': unknown outlet 'pdu-c/1'",
        ),
        (
            {"services": services_with({"id": "x", "priority": "low", "outlets": ["pdu-a/9"]})},
            "unknown outlet 'pdu-a/9'",
        ),
        (
            {
                "services": services_with(
                    {"id": "x", "priority": "low", "outlets": ["pdu-a/5"], "depends_on": ["nope"]}
                )
            },
            "service 'x': depends on unknown service 'nope'",
        ),
        (
            {"services": services_with({"id": "db", "priority": "low", "outlets": ["pdu-a/5"]})},
            "duplicate service id 'db'",
        ),
        (
            {"services": services_with({"id": "x", "priority": "urgent", "outlets": ["pdu-a/5"]})},
            "unknown priority 'urgent'",
        ),
        (
            {"pdus": [{"id": "pdu-a", "ups": "ups1", "limit_w": -5, "outlets": 8}]},
            "PDU 'pdu-a': limit_w must be positive",
        ),
        (
            {"pdus": [{"id": "pdu-a", "ups": "ups1", "outlets": 8}]},
            "PDU 'pdu-a': limit_w is missing",
        ),
        (
            {"pdus": [{"id": "pdu-a", "ups": "ups9", "limit_w": 10, "outlets": 8}]},
            "PDU 'pdu-a': unknown UPS 'ups9'",
        ),
        (
            {"ups": [{"id": "ups1", "rated_w": 0, "capacity_wh": 1, "runtime_full_load_s": 1}]},
            "UPS 'ups1': rated_w must be positive",
        ),
        (
            {"ups": [{"id": "ups1", "capacity_wh": 1, "runtime_full_load_s": 1}]},
            "UPS 'ups1': rated_w is missing",
        ),
        (
            {
                "services": services_with(
                    {
                        "id": "x",
                        "priority": "low",
                        "outlets": ["pdu-a/5"],
                        "throttle": {"min_w": -1},
                    }
                )
            },
            "service 'x': throttle min_w must be positive",
        ),
        (
            {
                "services": services_with(
                    {"id": "x", "priority": "low", "outlets": ["pdu-a/5"], "colour": 1}
                )
            },
            r"service 'x': unknown key\(s\) colour",
        ),
        (
            {"pdus": [{"id": "ups1", "ups": "ups1", "limit_w": 10, "outlets": 8}]},
            "duplicate UPS or PDU id 'ups1'",
        ),
        (
            {"services": services_with({"id": "x", "priority": "low", "outlets": []})},
            "service 'x': needs at least one outlet",
        ),
    ],
)
def test_bad_topology_is_rejected_with_the_problem_named(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(TopologyError, match=message):
        Site.from_mapping(site_config(**changes))


def test_priorities_rank_most_important_highest() -> None:
    ranks = [p.rank for p in (Priority.LOW, Priority.MEDIUM, Priority.HIGH, Priority.CRITICAL)]
    assert ranks == sorted(ranks)
    assert len(set(ranks)) == 4
