"""The benchmark: every resolver, every scenario, in one invocation on one simulated VPC.

For each peer (no cache, bind9 defaults, unbound defaults, dnsmasq, the agent) in turn, on
127.0.0.1:53 inside the instance namespace:
- cold: per offered rate, a restart (empty cache) and one phase;
- warm: a restart, a warm-up at `degraded_qps`, then every offered rate on that cache (the
  queries continue one Zipf stream, so the tail still brings some new names);
- degraded: restart, warm up at `degraded_qps`, then the resolver throttled to
  `throttle_pps`, then blackholed.
Each phase runs bench/loadgen.py in the instance namespace (latency and rcode per query),
while a thread samples the nftables counters in the vpc namespace once a second (upstream
packets offered = passed + dropped by the 1024 pps rule). Results go to bench/results/ as
JSON, and (full runs) to docs/benchmarks.md and docs/benchmarks.png.

Run as root: `python -m bench` (about 13 minutes) or `python -m bench --smoke` (under 60 s).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import report
from bench.minimum import Key, Phase, fetch_times, paced_waits, ttl_map
from bench.peers import PEERS, Peer
from bench.upstream import UpstreamSampler
from rig.vpc import SimulatedVpc
from rig.workload import write_queries_file, zipf_queries
from rig.zone import NXDOMAIN, workload_records

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
DOCS_DIR = REPO / "docs"
BUDGET_PPS = 1024


@dataclass(frozen=True)
class BenchConfig:
    """What one invocation measures. Every phase is bounded by `seconds` (≤ 30) plus the
    per-query `timeout` while the last answers drain."""

    rates: tuple[int, ...] = (400, 2000, 5000, 20000)
    seconds: float = 8.0
    timeout: float = 5.0
    degraded_qps: int = 1000
    throttle_pps: int = 100
    limit_pps: int = BUDGET_PPS
    peers: tuple[str, ...] = ("nocache", "bind9", "unbound", "dnsmasq", "agent", "agent+pacer")
    seed: int = 7
    smoke: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.seconds <= 30:
            raise ValueError(f"phase seconds must be in (0, 30]: {self.seconds}")
        unknown = set(self.peers) - set(PEERS)
        if unknown:
            raise ValueError(f"unknown peers: {sorted(unknown)} (known: {', '.join(PEERS)})")

    def planned_seconds(self) -> float:
        """Upper bound of load time (phases + drains), without peer start-up."""
        phases = len(self.rates) * 2 + 4
        return len(self.peers) * phases * (self.seconds + self.timeout * 0.5)


SMOKE = BenchConfig(rates=(400,), seconds=2.0, timeout=3.0, degraded_qps=400,
                    peers=("nocache", "agent"), smoke=True)


@dataclass
class PhaseResult:
    """One phase of one peer: what the loadgen saw and what went upstream."""

    peer: str
    label: str
    scenario: str
    qps: int
    seconds: float
    load: dict[str, Any]
    upstream_pps: list[float]
    upstream_passed: int
    upstream_dropped: int
    minimum: int
    upstream_window: float
    cached_queries: int = 0
    cached_failed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def upstream_total(self) -> int:
        return self.upstream_passed + self.upstream_dropped


class Bench:
    """One invocation: the VPC, the query files, and the results as they come in."""

    def __init__(self, vpc: SimulatedVpc, cfg: BenchConfig) -> None:
        self.vpc = vpc
        self.cfg = cfg
        self.dir = vpc.workdir / "bench"
        self.dir.mkdir(parents=True, exist_ok=True)
        records = workload_records(vpc.zone)
        self.records = records
        self.ttls = ttl_map([(r.name, r.rtype, r.ttl) for r in records])
        self.outcome = {norm((r.name, r.rtype)): r.outcome for r in records}
        self.nxdomain = {k for k, v in self.outcome.items() if v == NXDOMAIN}
        self.results: list[PhaseResult] = []
        self._workloads: dict[tuple[int, int], tuple[Path, list[Key]]] = {}
        self._stream: list[Key] = []

    def stream(self, count: int) -> list[Key]:
        """The first `count` queries of the run's one Zipf stream: one seed, so every
        phase and peer shares the same popularity ranking (a new seed reshuffles it)."""
        if len(self._stream) < count:
            self._stream = zipf_queries(self.records, count, seed=self.cfg.seed)
        return self._stream[:count]

    def workload(self, qps: int, offset: int) -> tuple[Path, list[Key]]:
        """Queries offset..offset+qps*seconds of the stream (same for every peer)."""
        key = (qps, offset)
        if key not in self._workloads:
            n = int(qps * self.cfg.seconds)
            queries = self.stream(offset + n)[offset:]
            path = write_queries_file(self.dir / f"q-{qps}-{offset}.txt", queries)
            self._workloads[key] = (path, queries)
        return self._workloads[key]

    def load(self, peer: Peer, qps: int, qfile: Path) -> dict[str, Any]:
        out = self.dir / "load.json"
        out.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "bench.loadgen", "--server", peer.server,
                "--queries", str(qfile), "--qps", str(qps), "--seconds", f"{self.cfg.seconds:g}",
                "--timeout", f"{self.cfg.timeout:g}", "--out", str(out)]
        cp = self.vpc.exec_instance(["env", f"PYTHONPATH={REPO}", *argv],
                                    timeout=self.cfg.seconds + self.cfg.timeout + 30)
        if cp.returncode != 0:
            raise RuntimeError(f"loadgen exit {cp.returncode}: {cp.stderr.strip()[-1000:]}")
        data: dict[str, Any] = json.loads(out.read_text())
        return data

    def session(self, peer: Peer, scenarios: Sequence[tuple[str, int, int | None]]) -> None:
        """Restart `peer` (cold) and run `scenarios` back to back on the same cache:
        (scenario, qps, resolver limit: pps, 0 = blackholed, None = the budget)."""
        peer.restart()
        t_start = time.monotonic()
        phases: list[Phase] = []
        cached: set[Key] = set()
        offset = 0
        try:
            for scenario, qps, limit in scenarios:
                if limit is None:
                    if self.vpc.blackholed or self.vpc.limit_pps != self.cfg.limit_pps:
                        self.vpc.set_limit(self.cfg.limit_pps)
                elif limit == 0:
                    self.vpc.blackhole()
                else:
                    self.vpc.set_limit(limit)
                qfile, queries = self.workload(qps, offset)
                offset += len(queries)
                phases.append(Phase(time.monotonic() - t_start, qps, queries))
                rcvbuf0 = self.rcvbuf_errors()
                with UpstreamSampler(self.vpc) as up:
                    data = self.load(peer, qps, qfile)
                rcvbuf = self.rcvbuf_errors() - rcvbuf0
                assert up.first is not None and up.last is not None
                failed = set(data.pop("failed_indexes"))
                in_cache = [i for i, q in enumerate(queries) if norm(q) in cached]
                res = PhaseResult(
                    peer=peer.name, label=peer.label, scenario=scenario, qps=qps,
                    seconds=self.cfg.seconds, load=data, upstream_pps=up.rates,
                    upstream_passed=up.last.passed_packets - up.first.passed_packets,
                    upstream_dropped=up.last.dropped_packets - up.first.dropped_packets,
                    minimum=0, upstream_window=up.window, cached_queries=len(in_cache),
                    cached_failed=sum(1 for i in in_cache if i in failed))
                # A peer answering NXDOMAIN for names that exist is broken, not fast.
                expected_nx = sum(1 for q in queries if norm(q) in self.nxdomain)
                # Queries the kernel dropped because the cache's socket buffer was full
                # (the cache could not keep up: CPU), not lost upstream.
                res.extra["rcvbuf_errors"] = rcvbuf
                by_outcome: dict[str, int] = {}
                for i in in_cache:
                    if i in failed:
                        o = self.outcome.get(norm(queries[i]), "?")
                        by_outcome[o] = by_outcome.get(o, 0) + 1
                res.extra["cached_failed_by_outcome"] = by_outcome
                res.extra["unexpected_nxdomain"] = max(
                    0, int(data["rcodes"].get("NXDOMAIN", 0)) - expected_nx)
                cached |= {norm(q) for i, q in enumerate(queries) if i not in failed}
                self.results.append(res)
                log.info("%-8s %-10s %5d qps: failed %d/%d, upstream %d (peak %.0f/s)",
                         peer.name, scenario, qps, failed_count(data), data["sent"],
                         res.upstream_total, max(up.rates, default=0.0))
        finally:
            self.vpc.set_limit(self.cfg.limit_pps)
        times = fetch_times(phases, self.ttls)
        # The frontier: the wait of each compulsory fetch when a perfect cache never sends
        # more than the budget (the queue carries over from phase to phase).
        waits = paced_waits([t for ft in times for t in ft], self.cfg.limit_pps)
        pos = 0
        for res, ft in zip(self.results[-len(times):], times):
            res.minimum = len(ft)
            mine = waits[pos:pos + len(ft)]
            pos += len(ft)
            res.extra["paced_max_wait"] = max(mine, default=0.0)
            res.extra["paced_waits_over_timeout"] = sum(1 for w in mine if w > self.cfg.timeout)

    def rcvbuf_errors(self) -> int:
        """UDP RcvbufErrors of the instance namespace (/proc/net/snmp is per namespace)."""
        cp = self.vpc.exec_instance(["cat", "/proc/net/snmp"], timeout=10)
        rows = [ln.split() for ln in cp.stdout.splitlines() if ln.startswith("Udp:")]
        if len(rows) < 2 or "RcvbufErrors" not in rows[0]:
            return 0
        return int(rows[1][rows[0].index("RcvbufErrors")])

    def run_peer(self, peer: Peer) -> None:
        """Cold: one restart per rate. Warm: one restart, a warm-up at `degraded_qps`, then
        every rate on the same cache. Degraded: restart, warm-up, throttled, blackholed."""
        cfg = self.cfg
        for qps in cfg.rates:
            self.session(peer, [("cold", qps, None)])
        if peer.has_cache:  # without a cache, warm is cold again: not measured twice
            self.session(peer, [("warmup", cfg.degraded_qps, None),
                                *[("warm", qps, None) for qps in cfg.rates]])
        self.session(peer, [("warmup", cfg.degraded_qps, None),
                            ("throttled", cfg.degraded_qps, cfg.throttle_pps),
                            ("blackholed", cfg.degraded_qps, 0)])


def norm(key: Key) -> Key:
    return (key[0].rstrip(".").lower(), key[1].upper())


def failed_count(load: dict[str, Any]) -> int:
    rc = load.get("rcodes", {})
    return int(load["lost"]) + int(rc.get("SERVFAIL", 0)) + int(rc.get("REFUSED", 0))


def run(cfg: BenchConfig, results_dir: Path, docs_dir: Path | None) -> dict[str, Any]:
    """Run every peer and scenario; write JSON (and docs); return the results document."""
    started = time.time()
    with SimulatedVpc.create(limit_pps=cfg.limit_pps, name_prefix="bench", imds=True) as vpc:
        bench = Bench(vpc, cfg)
        for name in cfg.peers:
            peer = PEERS[name](vpc, vpc.workdir / f"peer-{name}")
            try:
                bench.run_peer(peer)
            finally:
                peer.close()
        results = bench.results
    doc = {
        "config": asdict(cfg),
        "started": started,
        "duration": time.time() - started,
        "cpus": os.cpu_count(),
        "budget_pps": cfg.limit_pps,
        "phases": [dict(asdict(r), upstream_total=r.upstream_total) for r in results],
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    kind = "smoke" if cfg.smoke else "full"
    text = json.dumps(doc, indent=1)
    (results_dir / f"{kind}-{stamp}.json").write_text(text)
    (results_dir / f"latest-{kind}.json").write_text(text)
    if docs_dir is not None:
        report.write_docs(doc, docs_dir)
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="one rate, 2 s phases, no cache + agent only (under 60 s)")
    p.add_argument("--peers", help="comma-separated subset of: " + ", ".join(PEERS))
    p.add_argument("--rates", help="comma-separated offered rates (queries/s)")
    p.add_argument("--seconds", type=float, help="seconds per phase (≤ 30)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--docs-dir", type=Path,
                   help=f"where benchmarks.md/.png go (default {DOCS_DIR} for full runs, "
                        "none for --smoke)")
    p.add_argument("--report-only", type=Path, metavar="JSON",
                   help="regenerate the docs from a saved results file, no load")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    if a.report_only:
        report.write_docs(json.loads(a.report_only.read_text()), a.docs_dir or DOCS_DIR)
        return 0
    if os.geteuid() != 0:
        print("python -m bench: needs root (network namespaces, nftables)", file=sys.stderr)
        return 1
    cfg = SMOKE if a.smoke else BenchConfig()
    try:
        overrides: dict[str, Any] = {}
        if a.peers:
            overrides["peers"] = tuple(x for x in a.peers.split(",") if x)
        if a.rates:
            overrides["rates"] = tuple(int(x) for x in a.rates.split(",") if x)
        if a.seconds:
            overrides["seconds"] = a.seconds
        if overrides:
            cfg = BenchConfig(**{**asdict(cfg), **overrides})
    except ValueError as exc:
        p.error(str(exc))
    docs = a.docs_dir if a.docs_dir else (None if cfg.smoke else DOCS_DIR)
    print(f"benchmark: {len(cfg.peers)} peers, rates {cfg.rates}, {cfg.seconds:g} s phases; "
          f"load time at most {cfg.planned_seconds() / 60:.1f} min", file=sys.stderr)
    doc = run(cfg, a.results_dir, docs)
    print(report.render_table(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
