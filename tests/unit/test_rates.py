"""Rate maths between two snapshots, including named restarts."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dnscache_agent.stats.bind_stats import (
    BindSnapshot,
    CacheCounters,
    ClientCounters,
    UpstreamCounters,
    parse_json,
)
from dnscache_agent.stats.rates import compute_rates, counter_delta

FIXTURE = (Path(__file__).resolve().parent.parent / "fixtures" / "bind-stats"
           / "bind-9.18-json-v1.json")


def snap(boot: str = "t0", *, req: int = 0, aaaa: int = 0, a: int = 0, q: int = 0,
         truncated: int = 0, retry: int = 0, hits: int = 0, misses: int = 0,
         rtt: tuple[int, ...] = (0, 0, 0, 0, 0, 0), stale: int = 0) -> BindSnapshot:
    return BindSnapshot(
        boot_time=boot, client=ClientCounters(requestv4=req, qry_used_stale=stale),
        upstream=UpstreamCounters(queryv4=q, truncated=truncated, retry=retry, rtt=rtt),
        cache=CacheCounters(query_hits=hits, query_misses=misses),
        qtypes=tuple(sorted({"A": a, "AAAA": aaaa}.items())))


def test_rates_between_two_snapshots() -> None:
    r = compute_rates(snap(req=100, a=60, aaaa=40, q=10, hits=50, misses=50),
                      snap(req=300, a=160, aaaa=140, q=50, hits=230, misses=70), 2.0)
    assert r.client_qps == 100.0
    assert r.aaaa_share == pytest.approx(0.5)
    assert r.upstream_qps == 20.0 and r.upstream_pps == 20.0
    assert r.cache_hit_ratio == pytest.approx(0.9)
    assert not r.reset


def test_upstream_packets_count_tcp_extra_but_not_retries_twice() -> None:
    # 10 queries sent (3 of them retries, already inside Queryv4) and 2 TCP fallbacks.
    r = compute_rates(snap(), snap(q=10, retry=3, truncated=2), 1.0)
    assert r.upstream_pps == 10 + 2 * 5
    assert r.upstream_retries_ps == 3.0 and r.upstream_tcp_ps == 2.0
    assert compute_rates(snap(), snap(q=10, truncated=2), 1.0,
                         tcp_extra_packets=0).upstream_pps == 10


def test_restart_uses_new_values_as_delta() -> None:
    before = snap("boot-1", req=10_000, q=5_000, hits=9_000, misses=1_000, a=10_000)
    after = snap("boot-2", req=30, q=4, hits=20, misses=10, a=30)
    r = compute_rates(before, after, 1.0)
    assert r.reset
    assert r.client_qps == 30 and r.upstream_qps == 4
    assert r.cache_hit_ratio == pytest.approx(20 / 30)


def test_restart_with_counters_above_previous_still_resets() -> None:
    # Counters grew past the old values within one interval: only boot-time shows the restart.
    r = compute_rates(snap("boot-1", req=5), snap("boot-2", req=8), 1.0)
    assert r.reset and r.client_qps == 8


def test_single_counter_going_backwards_is_a_reset_for_that_counter() -> None:
    r = compute_rates(snap(req=100, q=100), snap(req=150, q=7), 1.0)
    assert r.reset
    assert r.client_qps == 50 and r.upstream_qps == 7


def test_ratios_are_none_without_traffic() -> None:
    r = compute_rates(snap(req=5), snap(req=5), 1.0)
    assert r.aaaa_share is None and r.cache_hit_ratio is None and r.rtt_distribution is None
    assert r.upstream_rtt_slow_ratio is None


def test_rtt_distribution() -> None:
    r = compute_rates(snap(), snap(rtt=(6, 2, 0, 1, 1, 0)), 1.0)
    assert r.rtt_distribution == (0.6, 0.2, 0.0, 0.1, 0.1, 0.0)
    assert r.upstream_rtt_slow_ratio == pytest.approx(0.2)


def test_from_empty_to_fixture() -> None:
    cur = parse_json(FIXTURE.read_bytes())
    r = compute_rates(replace(cur, client=ClientCounters(), upstream=UpstreamCounters(),
                              cache=CacheCounters(), qtypes=()), cur, 10.0)
    assert r.client_qps == 1.3 and r.upstream_pps == 1.4 and r.stale_answers_ps == 0.2
    assert r.aaaa_share == pytest.approx(3 / 13)


def test_elapsed_must_be_positive() -> None:
    with pytest.raises(ValueError):
        compute_rates(snap(), snap(), 0.0)


def test_counter_delta() -> None:
    assert counter_delta(5, 9, False) == 4
    assert counter_delta(9, 5, False) == 5
    assert counter_delta(5, 9, True) == 9
