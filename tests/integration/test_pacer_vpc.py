"""The real `dnscache-agent pacer` process in the simulated VPC, in front of the resolver and
its 1024 packets/s limit rule: a cold burst never puts more than the limit into any second
(counted at the rule, sampled every second) and nothing is dropped; a kill -9 under load is
followed by a restart that resumes; SIGTERM saves the warm list and a restart refetches it.
TCP's cost per query is measured at the rule against the constant the pacer charges."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dnscache_agent.pacer.bucket import TCP_PACKETS_PER_QUERY
from dnscache_agent.pacer.stats_file import read_pacer_stats
from rig import SimulatedVpc, netns, nft, write_queries_file
from rig.zone import workload_records

REPO = Path(__file__).resolve().parents[2]
AGENT = ["env", "-u", "DNSCACHE_AGENT_IMDS_ENDPOINT", f"PYTHONPATH={REPO}",
         sys.executable, "-m", "dnscache_agent"]
PORT = 5354
LIMIT = 1024


class Pacer:
    """One `dnscache-agent pacer` process in the instance namespace, with its files."""

    def __init__(self, vpc: SimulatedVpc, name: str, *extra: str,
                 env: tuple[str, ...] = ()) -> None:
        self.vpc = vpc
        self.dir = vpc.workdir / name
        self.dir.mkdir(exist_ok=True)
        self.config = self.dir / "agent.toml"
        self.config.write_text(f"[budget]\nlimit_pps = {LIMIT}\n\n"
                               f'[pacer]\nport = {PORT}\nstats_file = "{self.dir}/stats.json"\n'
                               f'warm_file = "{self.dir}/warm.json"\n', encoding="ascii")
        self.stats_file = self.dir / "stats.json"
        self.warm_file = self.dir / "warm.json"
        self.extra = extra
        self.env = env
        self.proc: subprocess.Popen[Any] | None = None

    def start(self, *, ready_timeout: float = 20.0) -> Pacer:
        self.stats_file.unlink(missing_ok=True)
        log = open(self.dir / "pacer.log", "ab")  # noqa: SIM115 (the child holds it)
        self.proc = self.vpc.popen_instance(
            [*AGENT[:-3], *self.env, *AGENT[-3:], "pacer", "--config", str(self.config),
             *self.extra],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.stats_file.exists():
                stats = read_pacer_stats(self.stats_file)
                if stats is not None and stats.pid == self.proc.pid:
                    return self
            assert self.proc.poll() is None, self.log()
            time.sleep(0.05)
        raise AssertionError(f"pacer not ready in {ready_timeout}s: {self.log()}")

    def log(self) -> str:
        return (self.dir / "pacer.log").read_text(errors="replace")[-3000:]

    def stats(self) -> Any:
        stats = read_pacer_stats(self.stats_file)
        assert stats is not None, self.log()
        return stats

    def wait_for(self, check: Any, timeout: float = 5.0) -> Any:
        """The stats once `check(stats)` holds (the file is rewritten every second)."""
        deadline = time.monotonic() + timeout
        stats = self.stats()
        while not check(stats) and time.monotonic() < deadline:
            time.sleep(0.2)
            stats = self.stats()
        return stats

    def stop(self) -> None:
        if self.proc is not None:
            netns.stop_process(self.proc)


@pytest.fixture
def pacers(vpc: SimulatedVpc) -> Iterator[list[Pacer]]:
    made: list[Pacer] = []
    yield made
    for p in made:
        p.stop()


def names(vpc: SimulatedVpc, count: int) -> list[tuple[str, str]]:
    recs = [r for r in workload_records(vpc.zone, with_special=False, with_nxdomain=False)
            if r.rtype == "A"]
    return [(r.name, r.rtype) for r in recs[:count]]


class CounterSampler(threading.Thread):
    """Reads the limit rule's counters about once a second until stopped."""

    def __init__(self, vpc: SimulatedVpc) -> None:
        super().__init__(daemon=True)
        self.vpc = vpc
        self.readings: list[tuple[float, nft.NftCounters]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.readings.append((time.monotonic(), self.vpc.counters()))
            self.done.wait(1.0)
        self.readings.append((time.monotonic(), self.vpc.counters()))

    def per_second(self) -> list[tuple[float, int, int]]:
        """(seconds, passed, dropped) between consecutive readings."""
        out = []
        for (t0, c0), (t1, c1) in zip(self.readings, self.readings[1:]):
            out.append((t1 - t0, c1.passed_packets - c0.passed_packets,
                        c1.dropped_packets - c0.dropped_packets))
        return out


def test_cold_burst_stays_under_the_limit_every_second(vpc: SimulatedVpc,
                                                       pacers: list[Pacer]) -> None:
    pacer = Pacer(vpc, "burst", "--no-warm")
    pacers.append(pacer.start())
    queries = write_queries_file(vpc.workdir / "burst.txt", names(vpc, 7500))
    before = vpc.counters()
    sampler = CounterSampler(vpc)
    sampler.start()
    try:
        # 2500 distinct names a second for 3 s: 2.4 x the limit, offered at once.
        result = vpc.dnsperf(queries, server="127.0.0.1", port=PORT, qps=2500, seconds=3,
                             clients=4, timeout=5)
        time.sleep(1.0)
    finally:
        sampler.done.set()
        sampler.join(15)
    after = vpc.counters()
    seconds = sampler.per_second()
    assert len(seconds) >= 6
    for span, passed, dropped in seconds:
        # each sample spans about a second; no sample may exceed the limit for its span
        assert passed + dropped <= LIMIT * max(span, 1.0), seconds
    assert after.dropped_packets == before.dropped_packets, seconds
    sent = after.passed_packets - before.passed_packets
    stats = pacer.wait_for(lambda s: s.totals["packets"] >= sent)
    assert result.completed > 2500 and sent >= 2500, (result, seconds)
    # one packet per distinct question: no retransmits were needed under the limit
    assert stats.totals["retransmits"] == 0 and stats.totals["upstream_timeouts"] == 0
    assert abs(stats.totals["packets"] - sent) <= 5
    print("per-second (span, passed, dropped):", seconds, "dnsperf:", result)


def test_tcp_query_costs_at_most_what_the_pacer_charges(vpc: SimulatedVpc,
                                                        pacers: list[Pacer]) -> None:
    pacer = Pacer(vpc, "tcp", "--no-warm")
    pacers.append(pacer.start())
    before = vpc.counters()
    cp = vpc.exec_instance(["dig", "@127.0.0.1", "-p", str(PORT), "+tcp", "+time=3",
                            "+tries=1", "bigtxt.vpc.test", "TXT"], timeout=20)
    assert "status: NOERROR" in cp.stdout and "chunk07" in cp.stdout, cp.stdout + cp.stderr
    time.sleep(0.5)  # the connection's last packets
    after = vpc.counters()
    used = after.passed_packets - before.passed_packets
    assert 3 <= used <= TCP_PACKETS_PER_QUERY, used
    print(f"one TCP query: {used} packets at the limit rule")
    stats = pacer.wait_for(lambda s: s.totals["tcp_queries"] >= 1)
    assert stats.totals["tcp_queries"] == 1
    assert stats.totals["tcp_packets"] == TCP_PACKETS_PER_QUERY


def test_kill_9_under_load_and_a_restart_resumes(vpc: SimulatedVpc,
                                                 pacers: list[Pacer]) -> None:
    pacer = Pacer(vpc, "kill", "--no-warm")
    pacers.append(pacer.start())
    queries = write_queries_file(vpc.workdir / "kill.txt", names(vpc, 3000))
    load = vpc.popen_instance(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(PORT), "-d", str(queries), "-Q", "400",
         "-l", "8", "-c", "2", "-t", "2", "-q", "2000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    assert pacer.proc is not None
    old_pid = pacer.proc.pid
    os.kill(old_pid, signal.SIGKILL)
    pacer.proc.wait(5)
    down = time.monotonic()
    pacer.start()  # the stale stats file and the bound ports do not stand in the way
    restart_s = time.monotonic() - down
    out, err = load.communicate(timeout=30)
    assert load.returncode == 0, err
    stats = pacer.wait_for(lambda s: s.totals["answers"] > 0)
    assert pacer.proc.pid != old_pid and stats.pid == pacer.proc.pid
    assert stats.totals["answers"] > 0, pacer.log()
    cp = vpc.exec_instance(["dig", "@127.0.0.1", "-p", str(PORT), "+time=2", "+tries=1",
                            "h1.vpc.test", "A"], timeout=15)
    assert "status: NOERROR" in cp.stdout
    assert restart_s < 10
    print(f"restart took {restart_s:.2f}s; dnsperf: {out[-600:]}")


def test_sigterm_saves_the_warm_list_and_a_restart_refetches_it(
        vpc: SimulatedVpc, pacers: list[Pacer]) -> None:
    # Warm-up through the pacer itself (named's place): the questions reach it from the
    # warm-up's own socket, are recognised as warm-up and paced like any other.
    pacer = Pacer(vpc, "warm", "--warm-via", f"127.0.0.1:{PORT}")
    pacers.append(pacer.start())
    asked = names(vpc, 60)
    queries = write_queries_file(vpc.workdir / "warm.txt", asked)
    for _ in range(2):  # asked again after the first answer: worth keeping
        vpc.dnsperf(queries, server="127.0.0.1", port=PORT, qps=200, seconds=0.3,
                    clients=1, timeout=2)
        time.sleep(1.5)  # past the window where a repeat is answered from the last answer
    assert pacer.proc is not None
    t0 = time.monotonic()
    pacer.proc.send_signal(signal.SIGTERM)
    assert pacer.proc.wait(5) == 0
    assert time.monotonic() - t0 < 1.5, "SIGTERM must stop the pacer within a second"
    assert not pacer.stats_file.exists()
    saved = json.loads(pacer.warm_file.read_text())
    saved_names = {name for name, _type, _when in saved["entries"]}
    assert {n.lower().rstrip(".") + "." for n, _ in asked} <= saved_names

    before = vpc.counters()
    pacer.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = pacer.stats()
        if stats.totals.get("warm_sent", 0) >= len(asked) and stats.warm_pending == 0:
            break
        time.sleep(0.2)
    stats = pacer.stats()
    refetched = vpc.counters().passed_packets - before.passed_packets
    assert stats.totals["warm_sent"] == len(asked), pacer.log()
    assert len(asked) <= refetched <= len(asked) + 2
    assert stats.warm_list >= len(asked)

    # SIGHUP (sent after a restart of named) runs the warm-up again (past the 1 s in which a
    # repeat is answered from the last answer).
    time.sleep(1.5)
    assert pacer.proc is not None
    pacer.proc.send_signal(signal.SIGHUP)
    stats = pacer.wait_for(lambda s: s.totals["warm_sent"] >= 2 * len(asked), timeout=10)
    assert stats.totals["warm_sent"] == 2 * len(asked), pacer.log()


def test_sd_notify_ready_watchdog_status_and_stopping(vpc: SimulatedVpc,
                                                     pacers: list[Pacer]) -> None:
    path = vpc.workdir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        pacer = Pacer(vpc, "notify", "--no-warm",
                      env=(f"NOTIFY_SOCKET={path}", "WATCHDOG_USEC=1000000"))
        pacers.append(pacer.start())
        messages: list[str] = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            messages.append(sock.recv(4096).decode())
        assert messages[0].startswith("READY=1\n")
        assert sum("WATCHDOG=1" in m for m in messages) >= 4  # every 0.5 s
        assert any(m.startswith("STATUS=queue 0, sent 0 packets/s") for m in messages)
        assert pacer.proc is not None
        pacer.proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in sock.recv(4096).decode():
            pass
        assert pacer.proc.wait(5) == 0
    finally:
        sock.close()
