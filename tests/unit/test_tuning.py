"""The documented tuning formulas, at their bounds."""

from __future__ import annotations

import pytest

from dnscache_agent.tuning import MIB, derive

GIB = 1024 * MIB


@pytest.mark.parametrize(("cpus", "memory", "cache_mb", "clients"), [
    (1, 512 * MIB, 32, 1000),        # t4g.nano: the 32 MiB floor, 1000 per vCPU
    (2, 1 * GIB, 64, 2000),          # 1/16 of memory
    (2, 4 * GIB, 256, 2000),
    (8, 32 * GIB, 2048, 8000),       # 2 GiB cap reached exactly
    (96, 768 * GIB, 2048, 10000),    # both caps
    (0, 0, 32, 1000),                # nonsense facts still give a working config
])
def test_derived_from_facts(cpus: int, memory: int, cache_mb: int, clients: int) -> None:
    t = derive(cpus, memory)
    assert (t.max_cache_size_mb, t.recursive_clients) == (cache_mb, clients)
    # A burst for one name waits for one upstream fetch rather than being refused.
    assert t.max_clients_per_query == t.recursive_clients
    assert t.clients_per_query == 10


def test_explicit_settings_win() -> None:
    t = derive(2, 4 * GIB, max_cache_size_mb=100, recursive_clients=150)
    assert (t.max_cache_size_mb, t.recursive_clients, t.max_clients_per_query) == (100, 150, 150)


def test_monotonic_in_memory_and_cpus() -> None:
    sizes = [derive(2, m * 256 * MIB).max_cache_size_mb for m in range(1, 200)]
    assert sizes == sorted(sizes)
    clients = [derive(c, 4 * GIB).recursive_clients for c in range(1, 20)]
    assert clients == sorted(clients)
