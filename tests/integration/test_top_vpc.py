"""`dnscache-agent top` in the simulated VPC: the real pacer in the instance namespace in front
of the resolver and its limit rule, fed by dnsperf with one name failing again and again (the
chatty client) over a light background of other classes. `top` must name the flooding (name,
type) and its class, with packets within 15% of what the limit rule counted, and name the
class's fix; its search-list class comes from the instance's resolv.conf."""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from rig import SimulatedVpc, write_queries_file
from rig.zone import SearchZoneSpec, ZoneSpec
from tests.integration.test_pacer_vpc import AGENT, PORT, Pacer

REPO = Path(__file__).resolve().parents[2]
FLOOD = ("typo.vpc.test.", "A")
RESOLV = ("nameserver 127.0.0.1\nsearch svc.cluster.local cluster.local\n"
          "options ndots:5 timeout:1\n")


def queries() -> list[tuple[str, str]]:
    """19 flood lines for each background line; background: AAAA of IPv4-only hosts and
    search-list expansions, each name once per pass of the file."""
    out: list[tuple[str, str]] = []
    for i in range(200):
        out += [FLOOD] * 19
        out.append((f"h{i}.vpc.test.", "AAAA") if i % 2 else
                   (f"api{i}.example.com.svc.cluster.local.", "A"))
    return out


def test_top_names_the_flooding_name_and_class(
        make_vpc: Callable[..., SimulatedVpc]) -> None:
    vpc = make_vpc(
        zone=ZoneSpec(hosts=500, negative_ttl=5), resolv_conf=RESOLV,
        search_zone=SearchZoneSpec(origin="cluster.local.", negative_ttl=5))
    pacer = Pacer(vpc, "top", "--no-warm").start()
    try:
        top_file = pacer.dir / "top.json"
        deadline = time.monotonic() + 5
        while not top_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert top_file.exists(), "the pacer publishes no top.json: " + pacer.log()
        qfile = write_queries_file(vpc.workdir / "top-queries.txt", queries())
        before = vpc.counters()
        result = vpc.dnsperf(qfile, server="127.0.0.1", port=PORT, qps=400,
                             seconds=8, clients=2, timeout=2)
        time.sleep(1.0)  # the last answers
        after = vpc.counters()
        counted = (after.passed_packets - before.passed_packets
                   + after.dropped_packets - before.dropped_packets)
        time.sleep(1.5)  # the next publication covers them
        cp = subprocess.run([*AGENT, "top", "--json", "--file", str(top_file)],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
        assert cp.returncode == 0, cp.stderr
        report = json.loads(cp.stdout)
        text = subprocess.run([*AGENT, "top", "--file", str(top_file)], capture_output=True,
                              text=True, timeout=60, cwd=REPO).stdout
    finally:
        pacer.stop()
    first = report["top"][0]
    print(f"limit rule counted {counted}; dnsperf {result}; top:\n{text}")
    assert (first["name"], first["type"]) == ("typo.vpc.test", "A"), report["top"][:3]
    assert first["class"] == "repeated-nxdomain"
    assert counted > 1000
    # the flood is 95% of the questions; the pacer saw every packet the rule counted
    assert abs(report["packets"] - counted) <= 0.15 * counted, (report["packets"], counted)
    assert abs(first["packets"] - 0.95 * counted) <= 0.15 * counted, (first, counted)
    by = {c["class"]: c for c in report["classes"]}
    assert by["repeated-nxdomain"]["setting"] == "[cache] min_ncache_ttl = 90"
    assert "search-nxdomain" in by and "aaaa-nodata" in by, list(by)
    assert by["search-nxdomain"]["setting"] == "resolv.conf: options ndots:1"
    assert abs(by["repeated-nxdomain"]["share_of_budget"]
               - by["repeated-nxdomain"]["pps"] / 1024) < 1e-6
    assert any(line.startswith("typo.vpc.test") for line in text.splitlines()), text
