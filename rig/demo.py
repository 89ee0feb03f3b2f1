"""The README's main job on the built-in simulated VPC: build a sandboxed EC2-like instance
whose Amazon resolver drops packets over 1024/s, show what applications see without a cache,
apply the agent, run the same load through the cache, and print the query statistics.

Run as root: `python -m rig.demo [--qps N] [--seconds S]`. Everything it starts lives in
network namespaces it creates and removes; nothing reaches the real network.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dnscache_agent.stats.catalogue import Sample
from dnscache_agent.stats.table import render_table
from rig.dnsperf_output import DnsperfResult
from rig.vpc import SimulatedVpc
from rig.workload import write_queries_file, zipf_queries
from rig.zone import workload_records

REPO = Path(__file__).resolve().parent.parent


def _failed_pct(r: DnsperfResult) -> float:
    bad = r.lost + r.rcode("SERVFAIL") + r.rcode("REFUSED")
    return 100.0 * bad / r.sent if r.sent else 0.0


def _line(label: str, r: DnsperfResult) -> str:
    lat = f"{r.avg_latency * 1000:.1f} ms" if r.avg_latency is not None else "n/a"
    return (f"{label:<28} sent {r.sent:>6}  answered {r.completed:>6}  lost {r.lost:>6}  "
            f"SERVFAIL {r.rcode('SERVFAIL'):>4}  failed {_failed_pct(r):5.1f}%  avg {lat}")


def run(qps: int, seconds: float, out: Callable[[str], None]) -> int:
    env = ["env", "-u", "DNSCACHE_AGENT_IMDS_ENDPOINT", f"PYTHONPATH={REPO}"]
    agent = [*env, sys.executable, "-m", "dnscache_agent"]
    with SimulatedVpc.create(limit_pps=1024, name_prefix="demo", imds=True) as vpc:
        settings = vpc.workdir / "agent.toml"
        settings.write_text(vpc.agent_toml('[cache]\nhealth_name = "h1.vpc.test"\n'))
        cfg = ["--config", str(settings)]
        queries = zipf_queries(workload_records(vpc.zone), 200_000, seed=7)
        qfile = write_queries_file(vpc.workdir / "queries.txt", queries)
        out(f"simulated VPC: instance ns {vpc.instance_ns}, Amazon resolver "
            f"{vpc.addresses.resolver} limited to {vpc.limit_pps} packets/s")

        out(f"\n1. {qps} queries/s for {seconds:g} s straight to the Amazon resolver (no cache):")
        # dnsperf 2.10 can hang at exit with many thousands of queries outstanding.
        direct = vpc.dnsperf(qfile, server=vpc.addresses.resolver, qps=qps, seconds=seconds,
                             max_outstanding=qps)
        out("   " + _line("without cache", direct))

        out("\n2. dnscache-agent apply (inside the instance):")
        cp = vpc.exec_instance([*agent, "apply", *cfg], timeout=120)
        out("   " + cp.stdout.strip().replace("\n", "\n   "))
        if cp.returncode != 0:
            out(cp.stderr.strip())
            return cp.returncode
        resolv = (vpc.instance_etc / "resolv.conf").read_text()
        out("   /etc/resolv.conf now: " + " | ".join(
            ln for ln in resolv.splitlines() if not ln.startswith("#")))

        out("\n3. the same load through the local cache (127.0.0.1), cold start:")
        watch = vpc.popen_instance([*agent, "stats", "--json", "--watch", "--count",
                                    str(int(seconds) + 2), *cfg],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cached = vpc.dnsperf(qfile, server="127.0.0.1", qps=qps, seconds=seconds,
                             max_outstanding=qps)
        watched, _ = watch.communicate(timeout=60)
        out("   " + _line("through dnscache-agent", cached))
        counters = vpc.counters()
        out(f"   packets that reached the resolver's limit rule: passed "
            f"{counters.passed_packets}, dropped {counters.dropped_packets} (both runs)")

        out("\n4. dnscache-agent stats --watch during that load, its busiest second upstream:")
        samples = [json.loads(ln) for ln in watched.splitlines() if ln.strip()]
        if samples:
            busiest = max(samples, key=lambda d: d["host"].get("upstream_pps", 0.0))
            table = render_table(Sample(busiest["timestamp"], busiest["host"],
                                        busiest["interfaces"]))
            out("   " + table.strip().replace("\n", "\n   "))

        out("\n5. dnscache-agent verify:")
        cp = vpc.exec_instance([*agent, "verify", *cfg], timeout=60)
        out("   " + cp.stdout.strip().replace("\n", "\n   "))

        out("\n6. dnscache-agent rollback:")
        cp = vpc.exec_instance([*agent, "rollback", *cfg], timeout=60)
        out("   " + cp.stdout.strip().replace("\n", "\n   "))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rig.demo", description=__doc__)
    parser.add_argument("--qps", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 30:
        parser.error("--seconds must be in (0, 30]")
    if os.geteuid() != 0:
        print("python -m rig.demo: needs root (network namespaces)", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.WARNING)
    return run(args.qps, args.seconds, print)


if __name__ == "__main__":
    raise SystemExit(main())
