"""The top classes as metrics (issue 13): upstream packets/s by class, from the class totals
the pacer writes in its stats file, in the opt-in CloudWatch set and in Prometheus with a
`class` label."""
from __future__ import annotations

from dnscache_agent.pacer.stats_file import PacerStats
from dnscache_agent.stats.catalogue import BY_KEY, OPT_IN, build_sample
from dnscache_agent.stats.top import CLASSES, OTHER

KEYS = [f"upstream_{c.replace('-', '_')}_pps" for c in CLASSES if c != OTHER]


def pacer(classes: dict[str, float]) -> PacerStats:
    return PacerStats(time=1.0, pid=1, started=0.0, limit_pps=1024, rate_pps=970.0, burst=3,
                      interval_s=1.0, queue_depth=0, queue_live=0, queue_prefetch=0,
                      queue_warm=0, in_flight=0, wait_p50_ms=None, wait_p99_ms=None,
                      warm_list=0, warm_pending=0, classes=classes)


def test_every_class_but_other_is_an_opt_in_metric() -> None:
    for key in KEYS:
        m = BY_KEY[key]
        assert m.cloudwatch_send == (OPT_IN,), key
        assert m.prometheus_name == "dnscache_upstream_class_packets_per_second"
        assert dict(m.prometheus_labels)["class"] in CLASSES
    assert len({BY_KEY[k].cloudwatch_name for k in KEYS}) == len(KEYS)


def test_values_come_from_the_pacers_class_totals() -> None:
    s = build_sample(1.0, pacer=pacer({"aaaa-nodata": 120.5, "repeated-nxdomain": 30.0}))
    assert s.host["upstream_aaaa_nodata_pps"] == 120.5
    assert s.host["upstream_repeated_nxdomain_pps"] == 30.0
    assert "upstream_tcp_fallback_pps" not in s.host  # absent class: no value, not 0
    assert "upstream_aaaa_nodata_pps" not in build_sample(1.0).host  # no pacer
