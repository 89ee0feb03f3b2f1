"""`dnscache-agent stats` against the real cache in the simulated VPC: the rates it reports
match the load sent through it (dnsperf) and the packets the resolver's limit rule counted."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dnscache_agent.pacer.stats_file import read_pacer_stats
from rig import SimulatedVpc, write_queries_file

REPO = Path(__file__).resolve().parents[2]
ENV = ["env", "-u", "DNSCACHE_AGENT_IMDS_ENDPOINT", f"PYTHONPATH={REPO}"]
AGENT = [*ENV, sys.executable, "-m", "dnscache_agent"]
QPS = 400
SECONDS = 8
# A stated tolerance: one-second samples of a paced load, read while it runs.
TOLERANCE = 0.15


@pytest.fixture(scope="module")
def applied(vpc: SimulatedVpc) -> Iterator[tuple[SimulatedVpc, list[str]]]:
    settings = vpc.workdir / "agent.toml"
    settings.write_text(vpc.agent_toml('[cache]\nhealth_name = "h1.vpc.test"\n'))
    cfg = ["--config", str(settings)]
    cp = vpc.exec_instance([*AGENT, "apply", *cfg], timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    yield vpc, cfg
    vpc.exec_instance([*AGENT, "rollback", *cfg], timeout=120)


def watch_during_load(vpc: SimulatedVpc, cfg: list[str], queries: Path,
                      qps: int) -> tuple[list[dict], object]:  # type: ignore[type-arg]
    """Run `stats --json --watch` while dnsperf sends `qps` for SECONDS; samples taken in the
    middle of the run (not its ramp-up or tail) are returned with dnsperf's result."""
    watch = vpc.popen_instance([*AGENT, "stats", "--json", "--watch", "--count",
                                str(SECONDS + 2), *cfg],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result = vpc.dnsperf(queries, server="127.0.0.1", qps=qps, seconds=SECONDS, clients=2,
                         max_outstanding=qps)
    out, err = watch.communicate(timeout=30)
    assert watch.returncode == 0, err
    samples = [json.loads(line) for line in out.splitlines() if line.strip()]
    return samples[2:SECONDS - 1], result


def test_client_rate_and_hit_ratio_match_the_load(applied: tuple[SimulatedVpc, list[str]]
                                                  ) -> None:
    vpc, cfg = applied
    # One name asked over and over: after the first miss every query is a cache hit.
    queries = write_queries_file(vpc.workdir / "same.txt", [("h5.vpc.test", "A")] * 1000)
    samples, result = watch_during_load(vpc, cfg, queries, QPS)
    assert result.lost == 0  # type: ignore[attr-defined]
    assert samples
    for s in samples:
        assert s["host"]["client_qps"] == pytest.approx(QPS, rel=TOLERANCE)
        assert s["host"]["cache_hit_ratio"] == pytest.approx(1.0, abs=0.01)
        assert s["host"]["upstream_pps"] < 5


def pacer_total(vpc: SimulatedVpc) -> int:
    stats = read_pacer_stats(vpc.workdir / "pacer" / "stats.json")
    assert stats is not None, "the pacer's stats file is missing or stale"
    return int(stats.totals["packets"])


def test_upstream_packets_match_what_the_resolver_counted(
        applied: tuple[SimulatedVpc, list[str]]) -> None:
    vpc, cfg = applied
    # Every query a name never asked before: each is one upstream packet.
    names = [(f"h{i}.vpc.test", "A") for i in range(2000, 2000 + QPS * (SECONDS + 2))]
    queries = write_queries_file(vpc.workdir / "unique.txt", names)
    before = vpc.counters()
    pacer_before = pacer_total(vpc)
    samples, result = watch_during_load(vpc, cfg, queries, QPS)
    time.sleep(2.5)  # the pacer writes its totals once a second
    after = vpc.counters()
    pacer_after = pacer_total(vpc)
    assert samples
    passed = after.passed_packets - before.passed_packets
    assert passed == pytest.approx(result.completed, rel=0.05)  # type: ignore[attr-defined]
    for s in samples:
        upstream = s["host"]["upstream_pps"]
        assert upstream == pytest.approx(QPS, rel=TOLERANCE)
        assert s["host"]["cache_hit_ratio"] < 0.05
        iface = next(iter(s["interfaces"].values()))
        # What leaves the interface is what the pacer sent (named forwards to it): the budget
        # charges the pacer's packets, which match named's upstream queries one for one here.
        # The budget's rate comes from the pacer's running total between two readings, its
        # `pacer_packets_ps` from the pacer's own last second: two windows out of phase.
        pacer = s["host"]["pacer_packets_ps"]
        assert iface["budget_pps"] == pytest.approx(pacer, rel=TOLERANCE)
        assert iface["budget_pps"] == pytest.approx(upstream, rel=TOLERANCE)
        assert iface["budget_headroom"] == pytest.approx(1 - iface["budget_pps"] / 1024,
                                                         abs=0.01)
    # The pacer's own count of what it sent is what the limit rule counted.
    assert pacer_after - pacer_before == pytest.approx(passed, rel=0.02, abs=3)
