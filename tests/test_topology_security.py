"""What a site document must give for its command channel: a secret per host agent, usable
certificates for TLS to the broker, and nothing that reaches a message the user sees."""

from __future__ import annotations

import re
from typing import Any

import pytest

from custom_components.power_allocation.engine.model import TopologyError
from custom_components.power_allocation.topology import parse_topology
from tests.fixtures.mutual_tls import make_tls_material

BROKER = {"host": "broker.lan", "tls": True}


def document(service: dict[str, Any] | None = None, **broker: Any) -> dict[str, Any]:
    agent = {"id": "db", "priority": "high", "outlets": ["pdu-a/1"], "agent": True}
    return {
        "mqtt": {**BROKER, **broker},
        "ups": [
            {
                "id": "ups1",
                "rated_w": 1500,
                "capacity_wh": 600,
                "runtime_full_load_s": 300,
                "source": {"kind": "mqtt", "profile": "power_allocation_ups"},
            }
        ],
        "pdus": [
            {
                "id": "pdu-a",
                "ups": "ups1",
                "limit_w": 1000,
                "outlets": 1,
                "source": {"kind": "mqtt", "profile": "power_allocation_outlet"},
            }
        ],
        "services": [{**agent, "agent_secret": "db-agent-secret-0123", **(service or {})}],
    }


def test_an_agent_gets_its_secret() -> None:
    topology = parse_topology(document())
    assert topology.controls["db"].agent_secret == "db-agent-secret-0123"
    assert "db-agent-secret-0123" not in repr(topology.controls)


def test_an_agent_without_a_secret_is_refused() -> None:
    without = document()
    del without["services"][0]["agent_secret"]
    message = "services[0] (db).agent_secret: a host agent needs its secret (at least 16"
    with pytest.raises(TopologyError, match=re.escape(message)):
        parse_topology(without)


def test_a_short_secret_is_refused_without_being_shown() -> None:
    with pytest.raises(TopologyError) as refused:
        parse_topology(document({"agent_secret": "tooshort"}))
    assert str(refused.value) == ("services[0] (db).agent_secret: must be at least 16 characters")


def test_a_private_ca_and_a_client_certificate() -> None:
    material = make_tls_material()
    topology = parse_topology(
        document(
            ca_cert=material.ca_pem,
            client_cert=material.client_cert_pem,
            client_key=material.client_key_pem,
        )
    )
    assert topology.mqtt is not None
    assert topology.mqtt["ca_cert"] == material.ca_pem


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        ({"ca_cert": "not a certificate"}, "mqtt.ca_cert: not a PEM certificate"),
        ({"tls": False, "ca_cert": "x"}, "mqtt.ca_cert: only used with tls: true"),
        ({"client_key": "x"}, "mqtt.client_cert: a client certificate needs its key"),
    ],
    ids=["bad_ca", "without_tls", "key_alone"],
)
def test_unusable_tls_settings_are_refused(broker: dict[str, Any], message: str) -> None:
    with pytest.raises(TopologyError, match=re.escape(message)):
        parse_topology(document(**broker))


def test_a_key_that_is_not_the_certificates_is_refused() -> None:
    material, other = make_tls_material(), make_tls_material()
    mismatched = document(client_cert=material.client_cert_pem, client_key=other.client_key_pem)
    with pytest.raises(TopologyError, match="mqtt.client_key: not the key of the client cert"):
        parse_topology(mismatched)
