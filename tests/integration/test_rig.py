"""The simulated VPC rig itself: addressing, authoritative answers, the limit, IMDS, cleanup."""
from __future__ import annotations

import json
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil
import pytest
import requests

from rig import FakeImds, ImdsBehaviour, ImdsFacts, SimulatedVpc, ZoneSpec, netns
from rig.workload import write_queries_file
from rig.zone import big_txt_strings


@dataclass(frozen=True)
class DigAnswer:
    status: str
    flags: set[str]
    answer: list[tuple[str, int, str, str]]  # name, ttl, type, data


def dig(vpc: SimulatedVpc, *args: str) -> DigAnswer:
    cp = vpc.dig(*args)
    status = re.search(r"status: (\w+)", cp.stdout)
    flags = re.search(r";; flags: ([\w ]+);", cp.stdout)
    assert status and flags, f"dig {args} gave no answer: {cp.stdout}{cp.stderr}"
    answer: list[tuple[str, int, str, str]] = []
    section = ""
    for line in cp.stdout.splitlines():
        if line.startswith(";; ") and "SECTION:" in line:
            section = line
        elif section.startswith(";; ANSWER") and line and not line.startswith(";"):
            name, ttl, _cls, rtype, data = line.split(None, 4)
            answer.append((name, int(ttl), rtype, data))
    return DigAnswer(status.group(1), set(flags.group(1).split()), answer)


def test_vpc_has_link_local_addresses_and_own_etc(vpc: SimulatedVpc) -> None:
    inst = vpc.exec_instance(["ip", "-4", "-o", "addr"], check=True).stdout
    assert "169.254.100.2/16" in inst and " lo " in inst
    side = vpc.exec_vpc(["ip", "-4", "-o", "addr"], check=True).stdout
    for addr in ("169.254.100.1/16", "169.254.169.253/32", "169.254.169.254/32"):
        assert addr in side
    assert vpc.exec_instance(["cat", "/etc/resolv.conf"]).stdout == (
        "nameserver 169.254.169.253\nsearch ec2.internal\n")
    assert (vpc.instance_etc / "bind" / "named.conf").is_file()
    assert vpc.exec_instance(["ls", "/etc/bind/named.conf.options"]).returncode == 0


def test_named_listens_on_resolver_and_veth_address(vpc: SimulatedVpc) -> None:
    out = vpc.exec_vpc(["ss", "-lntu"], check=True).stdout
    for sock in ("169.254.169.253:53", "169.254.100.1:53"):
        assert sock in out
    assert vpc.named is not None and vpc.named.pid in netns.pids(vpc.vpc_ns)
    # port 53 in the instance namespace is left free for the cache under test
    assert ":53 " not in vpc.exec_instance(["ss", "-lntu"], check=True).stdout


@pytest.mark.parametrize(
    ("qname", "qtype", "rtype", "count"),
    [("h1.vpc.test", "A", "A", 1), ("h10.vpc.test", "AAAA", "AAAA", 1),
     ("vpc.test", "MX", "MX", 1), ("txt.vpc.test", "TXT", "TXT", 1),
     ("_sip._tcp.vpc.test", "SRV", "SRV", 1)],
)
def test_authoritative_answers_record_types(
    vpc: SimulatedVpc, qname: str, qtype: str, rtype: str, count: int,
) -> None:
    ans = dig(vpc, qname, qtype)
    assert ans.status == "NOERROR" and "aa" in ans.flags
    assert [a[2] for a in ans.answer] == [rtype] * count


def test_ttls_cycle_5_60_300(vpc: SimulatedVpc) -> None:
    assert [dig(vpc, f"h{i}.vpc.test", "A").answer[0][1] for i in range(3)] == [5, 60, 300]


def test_cname_chain_ends_in_a(vpc: SimulatedVpc) -> None:
    ans = dig(vpc, "cname1.vpc.test", "A")
    assert [a[2] for a in ans.answer] == ["CNAME", "CNAME", "CNAME", "A"]


def test_nodata_and_nxdomain(vpc: SimulatedVpc) -> None:
    nodata = dig(vpc, "nodata.vpc.test", "AAAA")
    assert nodata.status == "NOERROR" and nodata.answer == []
    assert dig(vpc, "nothing-here.vpc.test", "A").status == "NXDOMAIN"


def test_big_txt_truncated_over_udp_full_over_tcp(vpc: SimulatedVpc) -> None:
    udp = dig(vpc, "bigtxt.vpc.test", "TXT", "+notcp", "+ignore")
    assert "tc" in udp.flags and udp.answer == []
    tcp = dig(vpc, "bigtxt.vpc.test", "TXT", "+tcp")
    assert len(tcp.answer) == 1
    assert all(s in tcp.answer[0][3] for s in big_txt_strings(vpc.zone))


def test_search_domain_resolves(vpc: SimulatedVpc) -> None:
    ans = dig(vpc, "+search", "ip-169-254-100-2")
    assert ans.answer[0][0] == "ip-169-254-100-2.ec2.internal." and ans.answer[0][3] == (
        "169.254.100.2")


def _queries(tmp_path: Path, n: int = 1000) -> Path:
    return write_queries_file(tmp_path / "q.txt", [(f"h{i}.vpc.test", "A") for i in range(n)])


def test_limit_drops_load_over_1024_pps(vpc: SimulatedVpc, tmp_path: Path) -> None:
    before = vpc.counters()
    r = vpc.dnsperf(_queries(tmp_path), server=vpc.addresses.resolver, qps=3000, seconds=3,
                    timeout=1)
    after = vpc.counters()
    assert r.sent > 7000 and r.lost > 0
    assert 800 <= r.completed / 3 <= 1300, r
    assert r.rcode("NOERROR") == r.completed
    assert after.dropped_packets - before.dropped_packets > 3000
    assert 2400 <= after.passed_packets - before.passed_packets <= 4000


def test_set_limit_changes_rate(vpc: SimulatedVpc, tmp_path: Path) -> None:
    try:
        vpc.set_limit(100)
        r = vpc.dnsperf(_queries(tmp_path), server=vpc.addresses.resolver, qps=500, seconds=2,
                        timeout=1)
        assert 60 <= r.completed / 2 <= 160, r
    finally:
        vpc.set_limit(1024)
    assert vpc.limit_pps == 1024


def test_blackhole_and_restore(vpc: SimulatedVpc) -> None:
    try:
        vpc.blackhole()
        before = vpc.counters().dropped_packets
        cp = vpc.dig("h1.vpc.test", "A")
        assert "status:" not in cp.stdout  # no answer at all
        assert vpc.counters().dropped_packets > before
    finally:
        vpc.restore()
    assert not vpc.blackholed
    assert dig(vpc, "h1.vpc.test", "A").status == "NOERROR"


def test_etc_overlay_rename_semantics(vpc: SimulatedVpc) -> None:
    host_resolv = Path("/etc/resolv.conf").read_bytes()
    probe = vpc.probe_etc_overlay()
    assert probe.resolv_conf_rename_error == "EBUSY"
    assert probe.bind_dir_rename_ok
    assert Path("/etc/resolv.conf").read_bytes() == host_resolv
    assert not list((vpc.instance_etc / "bind").glob(".rig-probe*"))


_HTTP = """
import sys, urllib.error, urllib.request
method, url, *headers = sys.argv[1:]
req = urllib.request.Request(url, method=method, headers=dict(h.split(": ", 1) for h in headers))
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        code, body = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    code, body = e.code, ""
sys.stdout.write(f"{code}\\n{body}")
"""


def _http(vpc: SimulatedVpc, method: str, url: str, *headers: str) -> tuple[int, str]:
    """An HTTP request made from inside the instance namespace (like the agent would)."""
    cp = vpc.exec_instance([sys.executable, "-c", _HTTP, method, url, *headers], timeout=15,
                           check=True)
    code, _, body = cp.stdout.partition("\n")
    return int(code), body


def test_imds_token_flow_from_instance(vpc: SimulatedVpc) -> None:
    base = "http://169.254.169.254"
    assert vpc.imds_url == base
    code, token = _http(vpc, "PUT", f"{base}/latest/api/token",
                        "X-aws-ec2-metadata-token-ttl-seconds: 60")
    assert code == 200 and len(token) > 20
    hdr = f"X-aws-ec2-metadata-token: {token}"
    assert _http(vpc, "GET", f"{base}/latest/meta-data/instance-id")[0] == 401
    assert _http(vpc, "GET", f"{base}/latest/meta-data/instance-id", hdr) == (
        200, "i-0123456789abcdef0")
    mac = _http(vpc, "GET", f"{base}/latest/meta-data/mac", hdr)[1]
    assert _http(vpc, "GET", f"{base}/latest/meta-data/network/interfaces/macs/", hdr) == (
        200, f"{mac}/")
    assert _http(vpc, "GET", f"{base}/latest/meta-data/network/interfaces/macs/{mac}/"
                 "local-ipv4s", hdr) == (200, "169.254.100.2")
    assert _http(vpc, "GET", f"{base}/latest/meta-data/no-such-thing", hdr)[0] == 404
    stats = vpc.imds_stats()
    assert stats["PUT /latest/api/token"] >= 1
    assert stats["GET /latest/meta-data/instance-id"] >= 2


def test_cleanup_leaves_no_namespace_process_or_dir(
    make_vpc: Callable[..., SimulatedVpc],
) -> None:
    v = make_vpc(zone=ZoneSpec(hosts=10), imds=True)
    tracked = v.popen_instance(["sleep", "60"])
    # A daemon the rig did not start itself: found in the namespace and ended by PID.
    v.exec_instance(["sh", "-c", "sleep 61 </dev/null >/dev/null 2>&1 &"], check=True)
    stray = [p for p in netns.pids(v.instance_ns) if p != tracked.pid]
    assert stray
    assert v.named is not None
    pids = [v.named.pid, tracked.pid, *stray]
    names = (v.instance_ns, v.vpc_ns)
    v.close()
    assert not set(names) & set(netns.names())
    assert not [p for p in pids if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not v.instance_etc.exists() and not v.workdir.exists()


def test_cleanup_on_exception(rig_required: None) -> None:
    seen: list[SimulatedVpc] = []
    with pytest.raises(RuntimeError, match="boom"), SimulatedVpc.create(
            name_prefix="dca", zone=ZoneSpec(hosts=10)) as v:
        seen.append(v)
        raise RuntimeError("boom")
    assert not {seen[0].instance_ns, seen[0].vpc_ns} & set(netns.names())
    assert not seen[0].instance_etc.exists()


# --- fake IMDS in process, on loopback (no namespace needed) --------------------------
def test_fake_imds_in_process_token_rules() -> None:
    with FakeImds.serve(facts=ImdsFacts(instance_type="m5.xlarge")) as imds:
        url = imds.url
        assert url.startswith("http://127.0.0.1:")
        assert requests.put(f"{url}/latest/api/token", timeout=5).status_code == 400
        tok = requests.put(f"{url}/latest/api/token", timeout=5,
                           headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
        assert tok.status_code == 200
        h = {"X-aws-ec2-metadata-token": tok.text}
        r = requests.get(f"{url}/latest/meta-data/instance-type", headers=h, timeout=5)
        assert r.text == "m5.xlarge"
        assert requests.get(f"{url}/latest/meta-data/instance-type", timeout=5,
                            headers={"X-aws-ec2-metadata-token": "bogus"}).status_code == 401
        assert imds.requests("GET", "/latest/meta-data/instance-type") == 2
        assert imds.requests("PUT") == 2


def test_fake_imds_token_expires_with_injected_clock() -> None:
    now = [1000.0]
    with FakeImds.serve(clock=lambda: now[0]) as imds:
        tok = requests.put(f"{imds.url}/latest/api/token", timeout=5,
                           headers={"X-aws-ec2-metadata-token-ttl-seconds": "10"}).text
        h = {"X-aws-ec2-metadata-token": tok}
        assert requests.get(f"{imds.url}/latest/meta-data/mac", headers=h,
                            timeout=5).status_code == 200
        now[0] += 11
        assert requests.get(f"{imds.url}/latest/meta-data/mac", headers=h,
                            timeout=5).status_code == 401


def test_fake_imds_delay_and_hang() -> None:
    with FakeImds.serve(behaviour=ImdsBehaviour(delay=0.3)) as imds:
        t0 = time.monotonic()
        requests.put(f"{imds.url}/latest/api/token", timeout=5,
                     headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        assert time.monotonic() - t0 >= 0.3
        imds.behaviour.hang = True
        with pytest.raises(requests.exceptions.Timeout):
            requests.put(f"{imds.url}/latest/api/token", timeout=0.5,
                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    # stop() released the hung handler thread
    assert not [t for t in threading.enumerate() if t.name == "fake-imds"]


def test_fake_imds_stats_endpoint_needs_no_token() -> None:
    with FakeImds.serve() as imds:
        requests.get(f"{imds.url}/latest/meta-data/", timeout=5)
        stats = json.loads(requests.get(f"{imds.url}/_rig/stats", timeout=5).text)
        assert stats["GET /latest/meta-data/"] == 1
