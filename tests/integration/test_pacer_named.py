"""A real caching named forwarding to the real pacer (`forwarders { 127.0.0.1 port 5354; };
forward only;`) in the simulated VPC: named's retransmits cost no upstream packet, a cold burst
through named is answered without a failure and without a packet over the limit, and a
truncated answer comes back over TCP through the pacer."""
from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from rig import SimulatedVpc, netns, write_queries_file
from rig.zone import workload_records
from tests.integration.test_pacer_vpc import LIMIT, PORT, CounterSampler, Pacer, names

NAMED_PORT = 5300


def named_conf(workdir: Path) -> str:
    w = str(workdir)
    return "\n".join([
        "options {",
        f'  directory "{w}";',
        f'  pid-file "{w}/named.pid";',
        f'  lock-file "{w}/named.lock";',
        f'  session-keyfile "{w}/session.key";',
        f'  managed-keys-directory "{w}";',
        f'  dump-file "{w}/named_dump.db";',
        f'  statistics-file "{w}/named.stats";',
        f'  secroots-file "{w}/named.secroots";',
        f'  recursing-file "{w}/named.recursing";',
        f"  listen-on port {NAMED_PORT} {{ 127.0.0.1; }};",
        "  listen-on-v6 { none; };",
        "  recursion yes;",
        "  allow-query { any; };",
        "  dnssec-validation no;",
        f"  forwarders {{ 127.0.0.1 port {PORT}; }};",
        "  forward only;",
        "  recursive-clients 10000;",
        "  max-cache-size 64m;",
        "};",
        "controls { };",
    ]) + "\n"


def start_named(vpc: SimulatedVpc) -> subprocess.Popen[Any]:
    """A caching named (cold cache) in the instance namespace, running when returned."""
    workdir = vpc.workdir / "cache-named"
    workdir.mkdir(exist_ok=True)
    bind = pwd.getpwnam("bind")
    os.chown(workdir, bind.pw_uid, bind.pw_gid)
    conf = workdir / "named.conf"
    conf.write_text(named_conf(workdir), encoding="ascii")
    log_path = workdir / "named.log"
    with open(log_path, "wb") as logf:
        proc: subprocess.Popen[Any] = subprocess.Popen(
            netns.exec_argv(vpc.instance_ns, ["/usr/sbin/named", "-g", "-u", "bind", "-4",
                                              "-n", "2", "-c", str(conf)]),
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if any(line.endswith(" running") for line in text.splitlines()):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    netns.stop_process(proc)
    raise AssertionError(f"named not running: {log_path.read_text()[-3000:]}")


@pytest.fixture
def named(vpc: SimulatedVpc) -> Iterator[list[subprocess.Popen[Any]]]:
    """[the running named]; a test that restarts it puts the new process in the list."""
    procs = [start_named(vpc)]
    try:
        yield procs
    finally:
        for proc in procs:
            netns.stop_process(proc)


def test_cold_burst_through_named_and_the_pacer(vpc: SimulatedVpc, named: Any) -> None:
    pacer = Pacer(vpc, "named-burst", "--no-warm").start()
    try:
        distinct = 4500
        queries = write_queries_file(vpc.workdir / "named-burst.txt", names(vpc, distinct))
        before = vpc.counters()
        assert pacer.proc is not None
        pproc, nproc = psutil.Process(pacer.proc.pid), psutil.Process(named[0].pid)
        c0, n0, t0 = pproc.cpu_times(), nproc.cpu_times(), time.monotonic()
        sampler = CounterSampler(vpc)
        sampler.start()
        try:
            # 1500 distinct names a second for 3 s: 1.5 x the budget, through named
            result = vpc.dnsperf(queries, server="127.0.0.1", port=NAMED_PORT, qps=1500,
                                 seconds=3, clients=4, timeout=5)
            time.sleep(1.0)
        finally:
            sampler.done.set()
            sampler.join(15)
        after = vpc.counters()
        c1, n1, wall = pproc.cpu_times(), nproc.cpu_times(), time.monotonic() - t0
        pacer_cpu = (c1.user + c1.system - c0.user - c0.system) / wall
        named_cpu = (n1.user + n1.system - n0.user - n0.system) / wall
        snmp = vpc.exec_instance(["cat", "/proc/net/snmp"]).stdout
        udp = [line.split() for line in snmp.splitlines() if line.startswith("Udp:")]
        print(f"cpu over {wall:.1f}s: pacer {pacer_cpu:.0%} named {named_cpu:.0%};",
              dict(zip(udp[0][1:], udp[1][1:])) if len(udp) == 2 else "")
        seconds = sampler.per_second()
        stats = pacer.wait_for(lambda s: s.totals["answers"] >= distinct - 5)
        print("per-second:", seconds, "dnsperf:", result, "pacer:", dict(stats.totals),
              "wait p99 ms (last second):", stats.wait_p99_ms)
        for span, passed, dropped in seconds:
            assert passed + dropped <= LIMIT * max(span, 1.0), seconds
        assert after.dropped_packets == before.dropped_packets
        assert set(result.rcodes) == {"NOERROR"}, result
        # Measured at 2000/s: 4-16 of 6000 lookups lost (no SERVFAIL) while the pacer's
        # waits stayed under 4.7 s and no datagram was lost on the host (Udp RcvbufErrors
        # and NoPorts 0); named asked about as many questions again 1 s or more after the
        # pacer had answered them. Not resolved yet: the bound keeps it from growing unseen.
        assert result.lost <= distinct * 0.005, result
        # one upstream packet per distinct question: named's retransmits were coalesced
        sent = after.passed_packets - before.passed_packets
        print("asked upstream more than once:",
              [(t.name, t.qtype, t.packets) for t in stats.top if t.packets > 1][:10])
        assert distinct <= sent <= distinct * 1.01, (sent, dict(stats.totals))
        assert stats.totals["retransmits"] == 0
    finally:
        pacer.stop()


def test_truncated_answer_comes_back_over_tcp_through_the_pacer(vpc: SimulatedVpc,
                                                                named: Any) -> None:
    pacer = Pacer(vpc, "named-tcp", "--no-warm").start()
    try:
        cp = vpc.exec_instance(["dig", "@127.0.0.1", "-p", str(NAMED_PORT), "+time=5",
                                "+tries=1", "bigtxt.vpc.test", "TXT"], timeout=20)
        assert "status: NOERROR" in cp.stdout and "chunk07" in cp.stdout, cp.stdout
        stats = pacer.wait_for(lambda s: s.totals["tcp_queries"] >= 1)
        assert stats.totals["tcp_queries"] == 1 and stats.totals["sent_udp"] == 1
    finally:
        pacer.stop()


def test_warm_restart_refills_a_restarted_named_through_the_pacer(vpc: SimulatedVpc,
                                                                   named: Any) -> None:
    # Names with a 5 s TTL, asked twice 6 s apart through named: each cost the pacer a packet
    # and was asked again, so it goes on the warm list.
    asked = [(r.name, r.rtype) for r in workload_records(vpc.zone, with_special=False,
                                                         with_nxdomain=False)
             if r.rtype == "A" and r.ttl == 5][:30]
    queries = write_queries_file(vpc.workdir / "named-warm.txt", asked)
    pacer = Pacer(vpc, "named-warm", "--warm-via", f"127.0.0.1:{NAMED_PORT}").start()
    try:
        for pause in (6.0, 0.0):
            vpc.dnsperf(queries, server="127.0.0.1", port=NAMED_PORT, qps=100, seconds=0.3,
                        clients=1, timeout=3)
            time.sleep(pause)
        assert pacer.proc is not None
        pacer.proc.send_signal(signal.SIGTERM)
        assert pacer.proc.wait(5) == 0
        saved = {e[0] for e in json.loads(pacer.warm_file.read_text())["entries"]}
        assert {n.lower().rstrip(".") + "." for n, _ in asked} <= saved

        # An upgrade: named restarts with an empty cache, then the pacer.
        netns.stop_process(named[0])
        named.append(start_named(vpc))
        before = vpc.counters()
        pacer.start()
        stats = pacer.wait_for(lambda s: s.totals["warm_sent"] >= len(asked) and
                               s.warm_pending == 0, timeout=10)
        assert stats.totals["warm_sent"] >= len(asked), pacer.log()
        refetched = vpc.counters().passed_packets - before.passed_packets
        # Now named answers them from its cache: no packet reaches the resolver.
        before = vpc.counters()
        result = vpc.dnsperf(queries, server="127.0.0.1", port=NAMED_PORT, qps=100,
                             seconds=0.3, clients=1, timeout=3)
        after = vpc.counters()
        print(f"warm-up refetched {refetched} packets; then {result.completed} lookups cost "
              f"{after.passed_packets - before.passed_packets} upstream packets")
        assert result.lost == 0 and len(asked) <= refetched <= len(asked) + 3
        assert after.passed_packets == before.passed_packets
    finally:
        pacer.stop()
