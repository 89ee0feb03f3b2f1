"""The catalogue is the single source of names; the README's table must be generated from it."""
from __future__ import annotations

import re
from pathlib import Path

from dnscache_agent.pacer.stats_file import PacerStats
from dnscache_agent.stats.bind_stats import (
    BindSnapshot,
    CacheCounters,
    ClientCounters,
    UpstreamCounters,
)
from dnscache_agent.stats.budget import BudgetTracker
from dnscache_agent.stats.catalogue import CATALOGUE, build_sample, with_table
from dnscache_agent.stats.ena import EnaCounters, ena_delta
from dnscache_agent.stats.rates import compute_rates
from dnscache_agent.stats.top import CLASSES


def snap(*, req: int = 0, q: int = 0, a: int = 0, aaaa: int = 0, hits: int = 0,
         misses: int = 0, rtt: tuple[int, ...] = (0,) * 6, stale: int = 0) -> BindSnapshot:
    return BindSnapshot(boot_time="t0", client=ClientCounters(requestv4=req, qry_used_stale=stale),
                        upstream=UpstreamCounters(queryv4=q, rtt=rtt),
                        cache=CacheCounters(query_hits=hits, query_misses=misses),
                        qtypes=(("A", a), ("AAAA", aaaa)))


README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_metrics_table_is_current() -> None:
    text = README.read_text()
    assert with_table(text) == text, (
        "README's metrics table is stale: python -m dnscache_agent.stats.catalogue README.md")
    for m in CATALOGUE:
        assert f"| {m.title}" in text


def test_names_are_unique_and_follow_conventions() -> None:
    keys = [m.key for m in CATALOGUE]
    assert len(keys) == len(set(keys))
    cw = [m.cloudwatch_name for m in CATALOGUE if m.cloudwatch_name]
    assert len(cw) == len(set(cw))
    prom: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for m in CATALOGUE:
        if m.prometheus_name:
            assert re.fullmatch(r"dnscache_[a-z0-9_]+", m.prometheus_name)
            assert m.prometheus_name.endswith("_total") == (m.prometheus_type == "counter")
            prom.setdefault(m.prometheus_name, set()).add(m.prometheus_labels)
    # names shared by several entries must be told apart by labels
    assert all(len(v) == len([m for m in CATALOGUE if m.prometheus_name == k])
               for k, v in prom.items())
    for m in CATALOGUE:
        assert m.action and m.source and m.unit


def test_build_sample_reads_every_getter() -> None:
    r = compute_rates(snap(req=0, q=0), snap(req=10, q=5, a=6, aaaa=4, hits=3, misses=1,
                                             rtt=(1, 1, 0, 0, 0, 0), stale=2), 1.0)
    budget = BudgetTracker(1000, clock=lambda: 120.0)
    budget.record("eth0", 250.0)
    e0 = EnaCounters("eth0", True, *(0,) * 5, 50)
    e1 = EnaCounters("eth0", True, 1, 2, 3, 4, 5, 40)
    pacer = PacerStats(
        time=120.0, pid=42, started=20.0, limit_pps=1024, rate_pps=968.8, burst=4,
        interval_s=1.0, queue_depth=12, queue_live=10, queue_prefetch=1, queue_warm=1,
        in_flight=3, wait_p50_ms=1.5, wait_p99_ms=850.0, warm_list=20, warm_pending=0,
        totals={"packets": 5000, "answers": 4900, "sent_udp": 4990, "tcp_packets": 10},
        interval={"packets": 480, "tcp_packets": 6, "coalesced": 7, "expired": 2,
                  "answers": 470, "upstream_timeouts": 1},
        classes={c: 1.0 for c in CLASSES})
    s = build_sample(120.0, rates=r, snapshot=snap(req=10, q=5),
                     budgets=budget.statuses(), ena={"eth0": ena_delta(e0, e1, 1.0)},
                     pacer=pacer)
    assert s.host["client_qps"] == 10 and s.host["aaaa_share"] == 0.4
    assert s.host["pacer_packets_ps"] == 480 and s.host["pacer_queue_depth"] == 12
    assert s.host["cache_hit_ratio"] == 0.75 and s.host["stale_answers_ps"] == 2
    assert s.host["upstream_rtt_share_lt10ms"] == 0.5
    assert s.host["client_queries_total"] == 10
    eth0 = s.interfaces["eth0"]
    assert eth0["budget_headroom"] == 0.75 and eth0["budget_minute_peak_pps"] == 250
    assert eth0["ena_linklocal_allowance_exceeded"] == 5
    assert eth0["ena_linklocal_allowance_exceeded_total"] == 5
    assert eth0["ena_present"] == 1 and eth0["ena_conntrack_allowance_available"] == 40
    host_keys = {m.key for m in CATALOGUE if m.scope == "host"}
    iface_keys = {m.key for m in CATALOGUE if m.scope == "interface"}
    assert set(s.host) == host_keys and set(eth0) == iface_keys


def test_none_values_are_left_out() -> None:
    r = compute_rates(snap(), snap(), 1.0)
    s = build_sample(0.0, rates=r)
    assert "cache_hit_ratio" not in s.host and s.host["client_qps"] == 0
