"""A real caching named forwarding to the real pacer (`forwarders { 127.0.0.1 port 5354; };
forward only;`) in the simulated VPC: named's retransmits cost no upstream packet, a cold burst
through named is answered without a failure and without a packet over the limit, and a
truncated answer comes back over TCP through the pacer."""
from __future__ import annotations

import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from rig import SimulatedVpc, netns, write_queries_file
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


@pytest.fixture
def named(vpc: SimulatedVpc) -> Iterator[subprocess.Popen[Any]]:
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
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            if any(line.endswith(" running") for line in text.splitlines()):
                break
            assert proc.poll() is None, text[-3000:]
            time.sleep(0.1)
        else:
            raise AssertionError(f"named not running: {log_path.read_text()[-3000:]}")
        yield proc
    finally:
        netns.stop_process(proc)


def test_cold_burst_through_named_and_the_pacer(vpc: SimulatedVpc, named: Any) -> None:
    pacer = Pacer(vpc, "named-burst", "--no-warm").start()
    try:
        distinct = 6000
        queries = write_queries_file(vpc.workdir / "named-burst.txt", names(vpc, distinct))
        before = vpc.counters()
        assert pacer.proc is not None
        pproc, nproc = psutil.Process(pacer.proc.pid), psutil.Process(named.pid)
        c0, n0, t0 = pproc.cpu_times(), nproc.cpu_times(), time.monotonic()
        sampler = CounterSampler(vpc)
        sampler.start()
        try:
            # 2000 distinct names a second for 3 s: twice the budget, through named
            result = vpc.dnsperf(queries, server="127.0.0.1", port=NAMED_PORT, qps=2000,
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
        assert result.lost == 0 and set(result.rcodes) == {"NOERROR"}, result
        # one upstream packet per distinct question: named's retransmits were coalesced
        sent = after.passed_packets - before.passed_packets
        assert distinct <= sent <= distinct + 10, (sent, dict(stats.totals))
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
