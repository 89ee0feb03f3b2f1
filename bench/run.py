"""The benchmark: every resolver, every scenario, in one invocation on one simulated VPC.

For each peer (no cache, bind9 defaults, unbound defaults, dnsmasq, the agent) in turn, on
127.0.0.1:53 inside the instance namespace:
- cold: per offered rate, a restart (empty cache) and one phase;
- warm: a restart, a warm-up at `degraded_qps`, then every offered rate on that cache (the
  queries continue one Zipf stream, so the tail still brings some new names);
- degraded: restart, warm up at `degraded_qps`, then the resolver throttled to
  `throttle_pps`, then blackholed.
- glibc (what applications see): the same cold and warm sessions at `glibc_rates` lookups/s,
  each lookup `getaddrinfo(AF_UNSPEC)` through the real glibc stub and the instance's
  resolv.conf (bench/glibc_load.py): the agent's as `apply` renders it, for the other caches
  127.0.0.1 put first by hand with the original server kept as fallback;
- restart (agent peers): named restarted under a steady `restart_qps` lookups/s (glibc);
  failed lookups and the cache hit ratio over the `restart_window` seconds after it, without
  and (`--warm-list`) with the saved warm list.
UDP phases run bench/loadgen.py in the instance namespace (latency and rcode per query).
A thread samples the nftables counters in the vpc namespace once a second (upstream packets
offered = passed + dropped by the 1024 pps rule, stub fallbacks included). Results go to
bench/results/ as JSON, and (full runs) to docs/benchmarks.md and docs/benchmarks.png.

Run as root: `python -m bench` (about 25 minutes) or `python -m bench --smoke` (about 2 min).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import report
from bench.cache_hits import per_second, ratio_between, seconds_to_ratio
from bench.change_cost import PhaseWindow, phase_figures
from bench.minimum import Key, Phase, fetch_times, lookup_phase, paced_waits, ttl_map
from bench.peers import PEERS, Peer, default_peers
from bench.upstream import UpstreamSampler
from rig import netns
from rig.vpc import SimulatedVpc
from rig.workload import write_queries_file, zipf_queries
from rig.zone import NOERROR, NXDOMAIN, workload_records

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
DOCS_DIR = REPO / "docs"
BUDGET_PPS = 1024
MODES = ("udp", "glibc")


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
    peers: tuple[str, ...] = field(default_factory=default_peers)
    seed: int = 7
    smoke: bool = False
    modes: tuple[str, ...] = MODES
    # glibc mode: lookups/s (each asks A and AAAA), phase length, how long the last lookups
    # may take (glibc's own worst case with the agent's timeout:1 attempts:2 is about 8 s),
    # and the thread pool's bound (each waiting stub holds a thread and a socket).
    glibc_rates: tuple[int, ...] = (400, 2000, 5000)
    glibc_seconds: float = 5.0
    glibc_drain: float = 10.0
    glibc_max_threads: int = 7500
    # restart scenario: steady lookups/s, seconds of load before the restart (warms the
    # cache), seconds measured after it, and the "with saved warm list" arm.
    restart_qps: int = 2000
    restart_before: float = 10.0
    restart_window: float = 10.0
    warm_list: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.seconds <= 30 or not 0 < self.glibc_seconds <= 30:
            raise ValueError(f"phase seconds must be in (0, 30]: {self.seconds}, "
                             f"{self.glibc_seconds}")
        unknown = set(self.peers) - set(PEERS)
        if unknown:
            raise ValueError(f"unknown peers: {sorted(unknown)} (known: {', '.join(PEERS)})")
        if set(self.modes) - set(MODES):
            raise ValueError(f"unknown modes: {self.modes} (known: {', '.join(MODES)})")

    def planned_seconds(self) -> float:
        """Upper bound of load time (phases + drains), without peer start-up."""
        total = 0.0
        if "udp" in self.modes:
            phases = len(self.rates) * 2 + 4
            total += len(self.peers) * phases * (self.seconds + self.timeout * 0.5)
        if "glibc" in self.modes:
            phases = len(self.glibc_rates) * 2 + 1
            total += len(self.peers) * phases * (self.glibc_seconds + self.glibc_drain * 0.5)
            restarts = sum(1 for p in self.peers if PEERS[p].is_agent)
            total += restarts * (1 + self.warm_list) * (
                self.restart_before + self.restart_window + self.glibc_drain)
        return total


SMOKE = BenchConfig(rates=(400,), seconds=2.0, timeout=3.0, degraded_qps=400,
                    peers=("nocache", "agent"), smoke=True, glibc_rates=(400,),
                    glibc_seconds=2.0, glibc_drain=6.0, restart_qps=300,
                    restart_before=3.0, restart_window=4.0)


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
    mode: str = "udp"

    @property
    def upstream_total(self) -> int:
        return self.upstream_passed + self.upstream_dropped


@dataclass(frozen=True)
class Step:
    """One phase of a session: scenario name, offered rate, resolver limit (pps, 0 =
    blackholed, None = the budget) and load mode."""

    scenario: str
    qps: int
    limit: int | None = None
    mode: str = "udp"


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
        self.answered = {k for k, v in self.outcome.items() if v == NOERROR}
        self.search = (vpc.search_zone.origin.rstrip("."),)
        self.original_resolv_conf = (vpc.instance_etc / "resolv.conf").read_text()
        self.results: list[PhaseResult] = []
        self._workloads: dict[tuple[int, int, float], tuple[Path, list[Key]]] = {}
        self._stream: list[Key] = []

    def stream(self, count: int) -> list[Key]:
        """The first `count` queries of the run's one Zipf stream: one seed, so every
        phase and peer shares the same popularity ranking (a new seed reshuffles it)."""
        if len(self._stream) < count:
            self._stream = zipf_queries(self.records, count, seed=self.cfg.seed)
        return self._stream[:count]

    def workload(self, qps: int, offset: int, seconds: float | None = None,
                 ) -> tuple[Path, list[Key]]:
        """Queries offset..offset+qps*seconds of the stream (same for every peer)."""
        seconds = self.cfg.seconds if seconds is None else seconds
        key = (qps, offset, seconds)
        if key not in self._workloads:
            n = int(qps * seconds)
            queries = self.stream(offset + n)[offset:]
            path = write_queries_file(self.dir / f"q-{qps}-{offset}-{seconds:g}.txt", queries)
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

    def glibc_argv(self, qfile: Path, qps: int, seconds: float, out: Path,
                   *extra: str) -> list[str]:
        return ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "bench.glibc_load",
                "--queries", str(qfile), "--qps", str(qps), "--seconds", f"{seconds:g}",
                "--drain", f"{self.cfg.glibc_drain:g}", "--max-threads",
                str(self.cfg.glibc_max_threads), "--out", str(out), *extra]

    def load_glibc(self, qps: int, qfile: Path) -> dict[str, Any]:
        """One glibc phase (bench/glibc_load.py in the instance namespace); the summary
        gets `timeout` (the drain) so the report can print its bound like the UDP one."""
        out = self.dir / "glibc.json"
        out.unlink(missing_ok=True)
        cfg = self.cfg
        cp = self.vpc.exec_instance(
            self.glibc_argv(qfile, qps, cfg.glibc_seconds, out, "--summary-only"),
            timeout=cfg.glibc_seconds + cfg.glibc_drain + 150)
        if cp.returncode != 0 or not out.exists():
            raise RuntimeError(f"glibc_load exit {cp.returncode}: {cp.stderr.strip()[-1000:]}")
        data: dict[str, Any] = json.loads(out.read_text())
        data["timeout"] = cfg.glibc_drain
        return data

    def set_stub_resolv_conf(self, peer: Peer) -> None:
        """Point glibc at `peer` (None: the agent wrote its own at apply). Rewritten in
        place: processes started by `ip netns exec` see the same file."""
        text = peer.stub_resolv_conf(self.original_resolv_conf)
        if text is not None:
            with open(self.vpc.instance_etc / "resolv.conf", "w", encoding="ascii") as f:
                f.write(text)

    def restore_resolv_conf(self) -> None:
        with open(self.vpc.instance_etc / "resolv.conf", "w", encoding="ascii") as f:
            f.write(self.original_resolv_conf)

    def session(self, peer: Peer, steps: Sequence[Step]) -> None:
        """Restart `peer` (cold) and run `steps` back to back on the same cache."""
        peer.restart()
        pacer = bool(self.pacer_pids())
        t_start = time.monotonic()
        phases: list[Phase] = []
        cached: set[Key] = set()
        offset = 0
        first = len(self.results)
        try:
            for step in steps:
                if step.limit is None:
                    if self.vpc.blackholed or self.vpc.limit_pps != self.cfg.limit_pps:
                        self.vpc.set_limit(self.cfg.limit_pps)
                elif step.limit == 0:
                    self.vpc.blackhole()
                else:
                    self.vpc.set_limit(step.limit)
                glibc = step.mode == "glibc"
                seconds = self.cfg.glibc_seconds if glibc else self.cfg.seconds
                qfile, queries = self.workload(step.qps, offset, seconds)
                offset += len(queries)
                t_phase = time.monotonic() - t_start
                if glibc:
                    names = [q[0].rstrip(".") for q in queries]
                    phases.append(lookup_phase(t_phase, step.qps, names, self.answered,
                                               self.search))
                else:
                    phases.append(Phase(t_phase, step.qps, queries))
                rcvbuf0 = self.rcvbuf_errors()
                with UpstreamSampler(self.vpc) as up:
                    data = (self.load_glibc(step.qps, qfile) if glibc
                            else self.load(peer, step.qps, qfile))
                rcvbuf = self.rcvbuf_errors() - rcvbuf0
                assert up.first is not None and up.last is not None
                failed = set(data.pop("failed_indexes"))
                # Cached-name failures are judged in UDP mode (one question per query).
                in_cache = [] if glibc else [i for i, q in enumerate(queries)
                                             if norm(q) in cached]
                res = PhaseResult(
                    peer=peer.name, label=peer.label, scenario=step.scenario, qps=step.qps,
                    seconds=seconds, load=data, upstream_pps=up.rates,
                    upstream_passed=up.last.passed_packets - up.first.passed_packets,
                    upstream_dropped=up.last.dropped_packets - up.first.dropped_packets,
                    minimum=0, upstream_window=up.window, cached_queries=len(in_cache),
                    cached_failed=sum(1 for i in in_cache if i in failed), mode=step.mode)
                # Queries the kernel dropped because the cache's socket buffer was full
                # (the cache could not keep up: CPU), not lost upstream.
                res.extra["rcvbuf_errors"] = rcvbuf
                res.extra["packaged_pacer_running"] = pacer
                if not glibc:
                    # A peer answering NXDOMAIN for names that exist is broken, not fast.
                    expected_nx = sum(1 for q in queries if norm(q) in self.nxdomain)
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
                log.info("%-8s %-5s %-10s %5d qps: failed %d/%d, upstream %d (peak %.0f/s)",
                         peer.name, step.mode, step.scenario, step.qps,
                         failed_count(data, step.mode), data["sent"], res.upstream_total,
                         max(up.rates, default=0.0))
        finally:
            self.vpc.set_limit(self.cfg.limit_pps)
        self.charge_minimum(self.results[first:], phases)

    def charge_minimum(self, results: Sequence[PhaseResult], phases: Sequence[Phase]) -> None:
        """The compulsory fetches of each phase, and the frontier: the wait of each one when
        a perfect cache never sends more than the budget (the queue carries over)."""
        times = fetch_times(phases, self.ttls, default_ttl=self.vpc.zone.negative_ttl)
        waits = paced_waits([t for ft in times for t in ft], self.cfg.limit_pps)
        pos = 0
        for res, ft in zip(results, times):
            res.minimum = len(ft)
            mine = waits[pos:pos + len(ft)]
            pos += len(ft)
            res.extra["paced_max_wait"] = max(mine, default=0.0)
            res.extra["paced_waits_over_timeout"] = sum(1 for w in mine if w > self.cfg.timeout)

    def restart_session(self, peer: Peer, warm_list: bool) -> None:
        """named restarted under a steady `restart_qps` glibc lookups/s. A fresh cache is
        warmed like the warm sessions (raw UDP at `degraded_qps`), then the steady glibc
        load runs `restart_before` seconds, named is stopped (SIGTERM) and started again
        the way the service backend starts it, and `restart_window` seconds from the stop
        are measured."""
        cfg = self.cfg
        peer.restart()
        wfile, warm = self.workload(cfg.degraded_qps, 0)
        self.load(peer, cfg.degraded_qps, wfile)
        qps = cfg.restart_qps
        total = cfg.restart_before + cfg.restart_window + 20.0
        qfile, queries = self.workload(qps, len(warm), total)
        out = self.dir / "restart.json"
        out.unlink(missing_ok=True)
        load = self.vpc.popen_instance(
            self.glibc_argv(qfile, qps, total, out, "--until-stdin-closes"),
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        hits = self.vpc.popen_instance(
            ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "bench.cache_hits",
             "--seconds", f"{total + 10:g}", "--until-stdin-closes"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        mono = time.monotonic
        try:
            with UpstreamSampler(self.vpc) as up:
                t_load = mono()
                time.sleep(cfg.restart_before)
                t_restart = mono()
                peer.stop()
                t_down = mono()
                self.start_named_like_the_service()
                t_up = mono()
                trigger = self.trigger_warm_list() if warm_list else "off"
                time.sleep(max(0.0, t_restart + cfg.restart_window - mono()))
                t_end = mono()
                for proc in (load, hits):
                    assert proc.stdin is not None
                    proc.stdin.close()
                load.wait(cfg.glibc_drain + 150)
                hits.wait(30)
                assert hits.stdout is not None
                hit_lines = hits.stdout.read()
        finally:
            for proc in (load, hits):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        if load.returncode != 0 or not out.exists():
            err = load.stderr.read().decode(errors="replace") if load.stderr else ""
            raise RuntimeError(f"glibc_load exit {load.returncode}: {err[-1000:]}")
        data = json.loads(out.read_text())
        samples = [json.loads(ln) for ln in hit_lines.splitlines() if ln.strip()]
        intervals = per_second(samples)
        windows = [PhaseWindow("before", t_load, t_load, end=t_restart),
                   PhaseWindow("after", t_restart, t_up, end=t_end)]
        ups = [(s.start, s.end, s.total, s.dropped) for s in up.samples]
        names = [q[0].rstrip(".") for q in queries]
        before, after = phase_figures(windows, data["t0_monotonic"], data["target_qps"],
                                      data["latencies"], data["codes"], ups, names)
        sel = [s for s in up.samples if t_restart <= (s.start + s.end) / 2 < t_end]
        load_sum = {
            "sent": after.lookups, "answered": after.lookups - after.failed,
            "failed": after.failed, "outcomes": after.failed_by, "p50": after.p50,
            # Over 1% failed: no finite p99 (None, as in the other glibc phases).
            "p99": None if after.p99 == float("inf") else after.p99,
            "max_latency": after.max_latency,
            "achieved_qps": data["achieved_qps"], "threads_peak": data["threads_peak"],
            "timeout": cfg.glibc_drain}
        res = PhaseResult(
            peer=peer.name, label=peer.label, scenario="restart", qps=qps,
            seconds=t_end - t_restart, load=load_sum, upstream_pps=[s.pps for s in sel],
            upstream_passed=sum(s.passed for s in sel),
            upstream_dropped=sum(s.dropped for s in sel), minimum=0,
            upstream_window=sum(s.end - s.start for s in sel), mode="glibc")
        res.extra.update({
            "warm_list": warm_list,
            "warm_list_trigger": trigger,
            "named_down_s": t_up - t_restart,
            "named_stop_s": t_down - t_restart,
            "failed_before_restart": before.failed,
            "lookups_before_restart": before.lookups,
            "hit_ratio_before": ratio_between(intervals, t_restart - 5.0, t_restart),
            "hit_ratio_window": ratio_between(intervals, t_restart, t_end),
            "seconds_to_90pct": seconds_to_ratio(intervals, t_restart, 0.9,
                                                 cfg.restart_window),
            # This workload's steady state may sit under 90% hits (5 s TTLs, a long Zipf
            # tail): also when it is back to 90% of what it was before the restart.
            "seconds_to_90pct_of_before": seconds_to_ratio(
                intervals, t_restart, 0.9 * (ratio_between(intervals, t_restart - 5.0,
                                                           t_restart) or 1.0),
                cfg.restart_window),
            "hit_ratio_per_second": [
                None if iv.ratio is None else round(iv.ratio, 3) for iv in intervals
                if t_restart <= (iv.start + iv.end) / 2 < t_end],
        })
        self.results.append(res)
        log.info("%-8s restart at %d lookups/s (warm list %s): failed %d/%d, hit ratio %s",
                 peer.name, qps, warm_list, after.failed, after.lookups,
                 res.extra["hit_ratio_window"])

    def start_named_like_the_service(self, timeout: float = 20.0) -> None:
        """Start named the way the agent's process service backend does (named daemonizes
        with the agent's config), as systemd would on `restart`. Not through `apply`: its
        health check is part of the measurement elsewhere, not of a restart."""
        cp = self.vpc.exec_instance(["named", "-u", "bind", "-c", "/etc/bind/named.conf"],
                                    timeout=timeout)
        if cp.returncode != 0:
            raise RuntimeError(f"named did not start: {cp.stderr.strip()[-500:]}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in netns.pids(self.vpc.instance_ns):
                try:
                    if psutil.Process(pid).name() == "named":
                        return
                except psutil.Error:
                    continue
            time.sleep(0.05)
        raise RuntimeError(f"named not running {timeout:g} s after start")

    def trigger_warm_list(self) -> str:
        """Ask the packaged pacer to replay its saved warm list (SIGHUP, its documented
        signal for "named was restarted"). Returns what was done, or "pending" when no
        pacer runs in the instance (not integrated yet)."""
        found = self.pacer_pids()
        for pid in found:
            os.kill(pid, signal.SIGHUP)
        return f"SIGHUP to pacer pid {', '.join(map(str, found))}" if found else "pending"

    def pacer_pids(self) -> list[int]:
        """PIDs of the packaged pacer (`dnscache-agent pacer`) in the instance namespace."""
        found = []
        for pid in netns.pids(self.vpc.instance_ns):
            try:
                argv = psutil.Process(pid).cmdline()
            except psutil.Error:
                continue
            if "dnscache_agent.supervise" in argv:
                continue  # its supervisor passes signals on: one SIGHUP, not two
            if ("dnscache_agent.pacer" in argv or "pacer" in argv) and any(
                    "dnscache" in a for a in argv):
                found.append(pid)
        return found

    def rcvbuf_errors(self) -> int:
        """UDP RcvbufErrors of the instance namespace (/proc/net/snmp is per namespace)."""
        cp = self.vpc.exec_instance(["cat", "/proc/net/snmp"], timeout=10)
        rows = [ln.split() for ln in cp.stdout.splitlines() if ln.startswith("Udp:")]
        if len(rows) < 2 or "RcvbufErrors" not in rows[0]:
            return 0
        return int(rows[1][rows[0].index("RcvbufErrors")])

    def run_peer(self, peer: Peer) -> None:
        """UDP: cold (one restart per rate), warm (one restart, a warm-up at
        `degraded_qps`, then every rate on the same cache), degraded (restart, warm-up,
        throttled, blackholed). glibc: cold and warm the same way with the peer's
        resolv.conf. Agent peers: the restart scenario."""
        cfg = self.cfg
        if "udp" in cfg.modes:
            for qps in cfg.rates:
                self.session(peer, [Step("cold", qps)])
            if peer.has_cache:  # without a cache, warm is cold again: not measured twice
                self.session(peer, [Step("warmup", cfg.degraded_qps),
                                    *[Step("warm", qps) for qps in cfg.rates]])
            self.session(peer, [Step("warmup", cfg.degraded_qps),
                                Step("throttled", cfg.degraded_qps, cfg.throttle_pps),
                                Step("blackholed", cfg.degraded_qps, 0)])
        if "glibc" in cfg.modes:
            self.set_stub_resolv_conf(peer)
            try:
                for qps in cfg.glibc_rates:
                    self.session(peer, [Step("cold", qps, mode="glibc")])
                if peer.has_cache:
                    self.session(peer, [Step("warmup", cfg.degraded_qps, mode="glibc"),
                                        *[Step("warm", qps, mode="glibc")
                                          for qps in cfg.glibc_rates]])
                if peer.is_agent:
                    self.restart_session(peer, warm_list=False)
                    # The warm list is the packaged pacer's: no arm for a peer without one.
                    if cfg.warm_list and self.pacer_pids():
                        self.restart_session(peer, warm_list=True)
            finally:
                if peer.stub_resolv_conf(self.original_resolv_conf) is not None:
                    self.restore_resolv_conf()


def norm(key: Key) -> Key:
    return (key[0].rstrip(".").lower(), key[1].upper())


def failed_count(load: dict[str, Any], mode: str = "udp") -> int:
    if mode == "glibc":
        return int(load["failed"])
    rc = load.get("rcodes", {})
    return int(load["lost"]) + int(rc.get("SERVFAIL", 0)) + int(rc.get("REFUSED", 0))


def run(cfg: BenchConfig, results_dir: Path, docs_dir: Path | None) -> dict[str, Any]:
    """Run every peer and scenario; write JSON (and docs); return the results document."""
    started = time.time()
    with SimulatedVpc.create(limit_pps=cfg.limit_pps, name_prefix="bench", imds=True) as vpc:
        bench = Bench(vpc, cfg)
        errors: list[str] = []
        for name in cfg.peers:
            peer = PEERS[name](vpc, vpc.workdir / f"peer-{name}")
            try:
                bench.run_peer(peer)
            except (RuntimeError, OSError, subprocess.SubprocessError, netns.RigError) as exc:
                # One peer failing must not throw away the others' minutes of results.
                log.error("%s: %s", name, exc)
                errors.append(f"{name}: {str(exc)[:300]}")
            finally:
                try:
                    peer.close()
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    errors.append(f"{name} close: {str(exc)[:300]}")
                bench.restore_resolv_conf()
        results = bench.results
    doc = {
        "errors": errors,
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
                   help="one rate per mode, 2 s phases, no cache + agent only (about 2 min)")
    p.add_argument("--peers", help="comma-separated subset of: " + ", ".join(PEERS))
    p.add_argument("--rates", help="comma-separated offered rates (queries/s)")
    p.add_argument("--seconds", type=float, help="seconds per phase (≤ 30)")
    p.add_argument("--modes", help="comma-separated subset of: " + ", ".join(MODES))
    p.add_argument("--glibc-rates", help="comma-separated glibc lookups/s")
    p.add_argument("--glibc-seconds", type=float, help="seconds per glibc phase (≤ 30)")
    p.add_argument("--warm-list", action="store_true",
                   help="also run the restart scenario with the pacer's saved warm list")
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
        if a.modes:
            overrides["modes"] = tuple(x for x in a.modes.split(",") if x)
        if a.glibc_rates:
            overrides["glibc_rates"] = tuple(int(x) for x in a.glibc_rates.split(",") if x)
        if a.glibc_seconds:
            overrides["glibc_seconds"] = a.glibc_seconds
        if a.warm_list:
            overrides["warm_list"] = True
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
