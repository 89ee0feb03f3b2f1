"""The pacer as the product runs it, not as a bench prototype: `dnscache-agent apply` in the
simulated VPC's instance namespace starts it (a supervised process: this machine's PID 1 is not
systemd), points named at it, and health-checks through it.

- A cold burst through the cache keeps the limit rule's counters at or under the limit in
  every second, and nothing is dropped there.
- The pacer killed under load: lookups keep being answered (named retries its forwarder, the
  supervisor restarts the pacer) and it is back within a second.
- `rollback` leaves no pacer process and nothing listening on its port.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from rig import SimulatedVpc, nft
from rig.workload import write_queries_file
from rig.zone import workload_records

AGENT = [sys.executable, "-m", "dnscache_agent"]
ENV = ["env", "-u", "DNSCACHE_AGENT_IMDS_ENDPOINT",
       "PYTHONPATH=" + str(Path(__file__).parents[2])]
PID_FILE = "/run/dnscache-agent-pacer/supervisor.pid"
PORT = 5354


def agent(vpc: SimulatedVpc, *args: str, timeout: float = 120.0) -> tuple[int, str, str]:
    cp = vpc.exec_instance([*ENV, *AGENT, *args[:1], "--config",
                            str(vpc.workdir / "agent.toml"), *args[1:]], timeout=timeout)
    return cp.returncode, cp.stdout, cp.stderr


def pacer_pids() -> tuple[int, list[int]]:
    """The supervisor's pid (from its pid file) and its children (the pacer)."""
    supervisor = int(Path(PID_FILE).read_text().strip())
    return supervisor, [c.pid for c in psutil.Process(supervisor).children()]


def listening(vpc: SimulatedVpc, port: int) -> bool:
    cp = vpc.exec_instance(["ss", "-H", "-lnu", f"sport = :{port}"])
    return bool(cp.stdout.strip())


@pytest.fixture(scope="module")
def applied(vpc: SimulatedVpc) -> Iterator[SimulatedVpc]:
    settings = vpc.agent_toml('[cache]\nhealth_name = "h1.vpc.test"\n')
    (vpc.workdir / "agent.toml").write_text(settings)
    code, out, err = agent(vpc, "apply")
    assert code == 0, out + err
    assert "pacer started" in out, out
    yield vpc
    agent(vpc, "rollback")


def test_named_forwards_through_the_pacer_and_verify_sees_it(applied: SimulatedVpc) -> None:
    options = (applied.instance_etc / "bind" / "named.conf.options").read_text()
    assert "127.0.0.1 port 5354;" in options
    code, out, err = agent(applied, "verify")
    assert code == 0, out + err
    assert "ok   pacer running: running (process), listening on 127.0.0.1:5354" in out, out
    assert listening(applied, PORT)


def test_a_cold_burst_stays_under_the_limit_at_the_rule(applied: SimulatedVpc) -> None:
    """3000 distinct-ish lookups/s for 6 s on a cold cache: the resolver's limit rule passes
    at most the limit in every second and drops nothing (the pacer queues instead)."""
    queries = [(r.name, r.rtype) for r in workload_records(applied.zone)][:20000]
    qfile = write_queries_file(applied.workdir / "cold.txt", queries)
    samples: list[nft.CounterRate] = []
    sampler = threading.Thread(target=lambda: samples.extend(applied.sample_rates(9.0)))
    before = applied.counters()
    sampler.start()
    result = applied.dnsperf(qfile, qps=3000, seconds=6, timeout=5.0)
    sampler.join()
    after = applied.counters()
    passed = [s.passed_pps for s in samples]
    print(f"dnsperf: sent {result.sent}, completed {result.completed}, lost {result.lost}; "
          f"rule passed per second {[round(p) for p in passed]}")
    assert after.dropped_packets - before.dropped_packets == 0, "the limit rule dropped packets"
    # One sample spans a little more than a second when the machine is busy: allow for it.
    assert max(passed) <= applied.limit_pps * 1.02, passed


def test_a_killed_pacer_comes_back_and_lookups_keep_being_answered(
        applied: SimulatedVpc) -> None:
    # Names the cold burst did not ask: each one is a cache miss through the pacer.
    records = workload_records(applied.zone)[20000:24000]
    qfile = write_queries_file(applied.workdir / "kill.txt", [(r.name, r.rtype) for r in records])
    supervisor, children = pacer_pids()
    assert len(children) == 1
    killed = children[0]
    back_after: list[float] = []

    def kill_soon() -> None:
        time.sleep(2.0)
        t0 = time.monotonic()
        psutil.Process(killed).kill()
        deadline = t0 + 10
        while time.monotonic() < deadline:
            try:
                kids = psutil.Process(supervisor).children()
            except psutil.Error:
                break
            if kids and kids[0].pid != killed and listening(applied, PORT):
                back_after.append(time.monotonic() - t0)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    result = applied.dnsperf(qfile, qps=300, seconds=8, timeout=5.0)
    killer.join()
    print(f"pacer back after {back_after}; dnsperf sent {result.sent}, completed "
          f"{result.completed}, lost {result.lost}, rcodes {result.rcodes}")
    assert back_after and back_after[0] < 2.0, back_after
    assert result.lost == 0, result
    assert result.rcode("SERVFAIL") == 0, result.rcodes


def test_rollback_leaves_no_pacer_process_or_listener(applied: SimulatedVpc) -> None:
    """Last in this module: it rolls the agent back (the fixture's rollback is then a no-op)."""
    vpc = applied
    supervisor, children = pacer_pids()
    code, out, err = agent(vpc, "rollback")
    assert code == 0 and "pacer stopped" in out, out + err
    for pid in (supervisor, *children):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not listening(vpc, PORT)
    assert not Path(PID_FILE).exists()
