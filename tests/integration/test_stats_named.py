"""Collector and rate maths against a real named 9.18 on 127.0.0.1: queries sent with
dnspython through a caching named (forwarding to an authoritative named) must show up in the
rates exactly (counts are compared as deltas; rates within 1% of count / measured elapsed)."""
from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from dnscache_agent.stats.catalogue import build_sample
from dnscache_agent.stats.collector import BindStatsCollector, StatsUnavailableError
from dnscache_agent.stats.rates import compute_rates
from tests.machinery import missing_tools, module_requires

_machinery = module_requires(missing_tools("named", package="bind9"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["named", "-g", "-c", str(conf)], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[tuple[int, int]]:
    auth_port, cache_port, stats_port = _free_port(), _free_port(), _free_port()
    (tmp_path / "zone").write_text(
        "$TTL 300\n@ SOA ns host 1 3600 600 86400 60\n@ NS ns\nns A 127.0.0.1\n"
        "* A 192.0.2.1\n* AAAA 2001:db8::1\n")
    (tmp_path / "auth.conf").write_text(
        f'options {{ directory "{tmp_path}"; listen-on port {auth_port} {{ 127.0.0.1; }};\n'
        f'  listen-on-v6 {{ none; }}; recursion no; pid-file none; }};\ncontrols {{ }};\n'
        f'zone "example.test" {{ type primary; file "{tmp_path}/zone"; }};\n')
    (tmp_path / "cache.conf").write_text(
        f'options {{ directory "{tmp_path}"; listen-on port {cache_port} {{ 127.0.0.1; }};\n'
        f'  listen-on-v6 {{ none; }}; recursion yes; allow-query {{ 127.0.0.1; }};\n'
        f'  dnssec-validation no; pid-file none; forward only;\n'
        f'  forwarders {{ 127.0.0.1 port {auth_port}; }}; prefetch 0; }};\ncontrols {{ }};\n'
        f'statistics-channels {{ inet 127.0.0.1 port {stats_port} '
        f'allow {{ 127.0.0.1; }}; }};\n')
    auth = _start(tmp_path / "auth.conf", tmp_path / "auth.log")
    named = _start(tmp_path / "cache.conf", tmp_path / "cache.log")
    try:
        deadline = time.monotonic() + 15
        collector = BindStatsCollector(stats_port, timeout=1.0)
        while True:
            try:
                collector.fetch()
                break
            except StatsUnavailableError:
                if time.monotonic() > deadline or named.poll() is not None:
                    raise AssertionError((tmp_path / "cache.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        yield cache_port, stats_port
    finally:
        _stop(named)
        _stop(auth)


def _ask(port: int, name: str, rdtype: str) -> int:
    q = dns.message.make_query(name, rdtype)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=3).rcode()


def test_rates_match_queries_sent(cache: tuple[int, int]) -> None:
    cache_port, stats_port = cache
    collector = BindStatsCollector(stats_port, timeout=2.0)
    before, t0 = collector.fetch(), time.monotonic()
    unique = 120
    for i in range(unique):  # misses: one upstream query each
        assert _ask(cache_port, f"n{i}.example.test", "A") == dns.rcode.NOERROR
    for i in range(60):  # hits
        assert _ask(cache_port, f"n{i % 10}.example.test", "A") == dns.rcode.NOERROR
    for i in range(20):  # AAAA misses
        assert _ask(cache_port, f"n{i}.example.test", "AAAA") == dns.rcode.NOERROR
    after, elapsed = collector.fetch(), time.monotonic() - t0
    sent = unique + 60 + 20
    r = compute_rates(before, after, elapsed)
    assert not r.reset
    assert r.client_qps * elapsed == pytest.approx(sent, rel=0.01)
    assert r.aaaa_share == pytest.approx(20 / sent)
    # every miss is one upstream query; no retries, no TCP on loopback
    assert r.upstream_qps * elapsed == pytest.approx(unique + 20, rel=0.01)
    assert r.upstream_pps == r.upstream_qps
    assert r.cache_hit_ratio == pytest.approx(60 / sent)
    assert r.rtt_distribution is not None and r.rtt_distribution[0] > 0.9
    sample = build_sample(time.time(), rates=r, snapshot=after)
    assert sample.host["client_queries_total"] >= sent


def test_restart_is_detected_from_a_real_named(cache: tuple[int, int]) -> None:
    """A snapshot with an older boot-time and higher counters: the new values are the delta."""
    cache_port, stats_port = cache
    collector = BindStatsCollector(stats_port)
    for i in range(5):
        _ask(cache_port, f"r{i}.example.test", "A")
    cur = collector.fetch()
    from dataclasses import replace
    fake_prev = replace(cur, boot_time="2000-01-01T00:00:00.000Z",
                        client=replace(cur.client, requestv4=cur.client.requestv4 + 10_000))
    r = compute_rates(fake_prev, cur, 1.0)
    assert r.reset and r.client_qps == cur.client_queries
