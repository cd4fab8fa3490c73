"""The host agents' secrets the tests use, in the entries and on the simulator's bridge alike."""


def agent_secret(service_id: str) -> str:
    """The secret of a service's host agent."""
    return f"test-agent-secret-of-{service_id}"
