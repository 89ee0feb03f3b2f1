"""`dnscache-agent top` in the simulated VPC: the real pacer in the instance namespace in front
of the resolver and its limit rule (as tests/integration/test_pacer_vpc.py runs it), fed by
dnsperf with a chatty client: 200 generated names under one domain that fail again and again
(`r17.typo.vpc.test`), over a background of AAAA NODATA and search-list expansions. The pacer
answers a repeat within a second itself, so no single name floods: `top` must name the
flooding domain and its class, with packets within 15% of what the limit rule counted, its
total within 15% of the rule's count, and each class's fix (search-list classes come from the
instance's resolv.conf); a TCP query shows as a TCP fallback, and a stopped pacer leaves no
top file behind."""
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
FLOOD_NAMES = 200
BACKGROUND_EVERY = 10
RESOLV = ("nameserver 127.0.0.1\nsearch svc.cluster.local cluster.local\n"
          "options ndots:5 timeout:1\n")


def queries() -> list[tuple[str, str]]:
    """One pass: the flood's names in turn, a background line after every tenth."""
    out: list[tuple[str, str]] = []
    for i in range(FLOOD_NAMES):
        out.append((f"r{i}.typo.vpc.test.", "A"))
        if i % BACKGROUND_EVERY == BACKGROUND_EVERY - 1:
            j = i // BACKGROUND_EVERY
            out.append((f"h{2 * j + 1}.vpc.test.", "AAAA") if j % 2 else
                       (f"api{j}.example.com.svc.cluster.local.", "A"))
    return out


def test_top_names_the_flooding_domain_and_class(
        make_vpc: Callable[..., SimulatedVpc]) -> None:
    vpc = make_vpc(zone=ZoneSpec(hosts=500, negative_ttl=5), resolv_conf=RESOLV,
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
        result = vpc.dnsperf(qfile, server="127.0.0.1", port=PORT, qps=300, seconds=15,
                             clients=2, timeout=2)
        big = vpc.exec_instance(["dig", "@127.0.0.1", "-p", str(PORT), "+tcp", "+time=3",
                                 "+tries=1", "bigtxt.vpc.test", "TXT"], timeout=20)
        assert "chunk07" in big.stdout, big.stdout + big.stderr
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
    assert not top_file.exists()  # a stopped pacer leaves no figures to mistake for live ones
    print(f"limit rule counted {counted}; dnsperf {result}; top:\n{text}")
    assert counted > 1000
    # every packet the rule counted went through the pacer's tally
    assert abs(report["packets"] - counted) <= 0.15 * counted, (report["packets"], counted)
    flood_share = FLOOD_NAMES / len(queries())
    domain = report["domains"][0]
    assert domain["domain"] == "typo.vpc.test" and domain["names"] == FLOOD_NAMES, domain
    assert abs(domain["packets"] - flood_share * counted) <= 0.15 * counted, (domain, counted)
    klass = report["classes"][0]
    assert klass["class"] == "repeated-nxdomain", report["classes"]
    assert klass["setting"] == "[cache] min_ncache_ttl = 90"
    assert all(e.endswith(".typo.vpc.test A") for e in klass["examples"]), klass
    assert report["top"][0]["name"].endswith(".typo.vpc.test")
    by = {c["class"]: c for c in report["classes"]}
    assert by["search-nxdomain"]["setting"] == "resolv.conf: options ndots:1"
    assert "aaaa-nodata" in by, list(by)
    assert by["tcp-fallback"]["examples"] == ["bigtxt.vpc.test TXT"], by["tcp-fallback"]
    assert abs(klass["share_of_budget"] - klass["pps"] / 1024) < 1e-6
    assert any(line.startswith("typo.vpc.test") for line in text.splitlines()), text
