"""Which interface holds the kernel's route source (the socket side is in
tests/integration/test_route_lookup.py)."""
from __future__ import annotations

from dnscache_agent.stats import routing


def test_the_interface_holding_the_route_source_is_named() -> None:
    addrs = {"eth0": ["10.0.0.5", "fe80::1%eth0"], "lo": ["127.0.0.1", "169.254.169.253"]}
    assert routing.interface_with_address("169.254.169.253", addrs) == "lo"
    assert routing.interface_with_address("10.0.0.5", addrs) == "eth0"
    assert routing.interface_with_address("fe80::1", addrs) == "eth0"
    assert routing.interface_with_address("10.9.9.9", addrs) is None

