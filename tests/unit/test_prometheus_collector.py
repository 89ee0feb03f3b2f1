"""Prometheus collector exposition, without opening a socket."""
from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from dnscache_agent.sinks.prometheus import make_registry, write_textfile
from dnscache_agent.stats.catalogue import Sample

SAMPLE = Sample(1.0, {"client_qps": 12.0, "client_queries_total": 500.0,
                      "upstream_rtt_share_lt10ms": 0.75, "upstream_rtt_share_ge1600ms": 0.25},
                {"eth0": {"budget_headroom": 0.5, "ena_linklocal_allowance_exceeded_total": 7.0}})


def test_exposition_names_labels_and_types() -> None:
    text = generate_latest(make_registry(lambda: SAMPLE)).decode()
    assert "dnscache_client_queries_per_second 12.0" in text
    assert "# TYPE dnscache_client_queries_total counter" in text
    assert "dnscache_client_queries_total 500.0" in text
    assert 'dnscache_upstream_rtt_share_ratio{bucket="lt10ms"} 0.75' in text
    assert 'dnscache_budget_headroom_ratio{interface="eth0"} 0.5' in text
    assert 'dnscache_ena_linklocal_allowance_exceeded_total{interface="eth0"} 7.0' in text
    assert "dnscache_cache_hit_ratio" not in text  # no value this second: not invented


def test_no_sample_and_failing_source_give_empty_output() -> None:
    assert generate_latest(make_registry(lambda: None)) == b""

    def boom() -> Sample:
        raise RuntimeError("x")

    assert generate_latest(make_registry(boom)) == b""


def test_textfile_is_written(tmp_path: Path) -> None:
    path = tmp_path / "dnscache.prom"
    write_textfile(str(path), SAMPLE)
    assert "dnscache_client_queries_per_second 12.0" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["dnscache.prom"]
