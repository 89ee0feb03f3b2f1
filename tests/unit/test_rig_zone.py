"""Pure parts of the test rig: zone text, workload, dnsperf parsing, nft, named.conf, IMDS tree."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.zone
import pytest

from rig.authoritative import ZoneFile, render_named_conf
from rig.dnsperf_output import DnsperfParseError, parse_dnsperf
from rig.fake_imds import ImdsFacts, InterfaceFacts, metadata_tree
from rig.netns import exec_argv, unique_name
from rig.nft import NftCounters, limit_rules, parse_counters, rate, render_replace, render_setup
from rig.workload import render_queries, zipf_queries
from rig.zone import (
    BIND_DEFAULT_UDP_SIZE,
    NODATA,
    NXDOMAIN,
    SearchZoneSpec,
    ZoneSpec,
    host_ipv4,
    render_search_zone,
    render_zone,
    workload_records,
)

# Captured (trailing blanks stripped) from dnsperf 2.10.0 (Debian 12) against the rig:
# 3000 qps offered for 3 s straight to 169.254.169.253 behind the 1024 packets/s limit.
DNSPERF_LIMITED = (
    """\
DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 169.254.169.253 -d /tmp/q.txt -Q 3000 -l 3 -t 1"""
    """ -q 5000 -O suppress=timeouts,unexpected
[Status] Sending queries (to 169.254.169.253:53)
[Status] Started at: Fri Nov 27 06:16:48 2026
[Status] Stopping after 3.000000 seconds
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         9000
  Queries completed:    3076 (34.18%)
  Queries lost:         5924 (65.82%)

  Response codes:       NOERROR 3076 (100.00%)
  Average packet size:  request 30, response 80
  Run time (s):         3.000205
  Queries per second:   1025.263274

  Average Latency (s):  0.000103 (min 0.000053, max 0.001985)
  Latency StdDev (s):   0.000073
"""
)

# Captured the same way: 500 qps of a mix giving NOERROR, NXDOMAIN and REFUSED.
DNSPERF_MIXED = (
    """\
DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 169.254.169.253 -d /tmp/q2.txt -Q 500 -l 2"""
    """ -t 1 -O suppress=timeouts
[Status] Sending queries (to 169.254.169.253:53)
[Status] Started at: Fri Nov 27 06:17:14 2026
[Status] Stopping after 2.000000 seconds
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         1000
  Queries completed:    996 (99.60%)
  Queries lost:         4 (0.40%)

  Response codes:       NOERROR 665 (66.77%), NXDOMAIN 165 (16.57%), REFUSED 166 (16.67%)
  Average packet size:  request 31, response 64
  Run time (s):         2.000214
  Queries per second:   497.946720

  Average Latency (s):  0.000177 (min 0.000059, max 0.002279)
  Latency StdDev (s):   0.000230
"""
)

SMALL = ZoneSpec(hosts=30)


def _zone(spec: ZoneSpec = SMALL) -> dns.zone.Zone:
    return dns.zone.from_text(render_zone(spec), origin=spec.origin, relativize=False)


def _rrset(zone: dns.zone.Zone, name: str, rtype: str):  # type: ignore[no-untyped-def]
    return zone.get_rrset(name, dns.rdatatype.from_text(rtype))


def test_zone_parses_and_hosts_cycle_ttls() -> None:
    z = _zone()
    ttls = [_rrset(z, f"h{i}.vpc.test.", "A").ttl for i in range(6)]
    assert ttls == [5, 60, 300, 5, 60, 300]
    assert _rrset(z, "h29.vpc.test.", "A") is not None
    assert _rrset(z, "h30.vpc.test.", "A") is None


def test_zone_default_has_10000_hosts() -> None:
    z = _zone(ZoneSpec())
    assert _rrset(z, "h9999.vpc.test.", "A") is not None
    assert _rrset(z, "h10000.vpc.test.", "A") is None


def test_aaaa_only_for_every_tenth_host() -> None:
    z = _zone()
    assert _rrset(z, "h10.vpc.test.", "AAAA") is not None
    assert _rrset(z, "h11.vpc.test.", "AAAA") is None


def test_cname_chain_three_links_to_an_a_record() -> None:
    z = _zone()
    name, hops = "cname1.vpc.test.", 0
    while (rr := _rrset(z, name, "CNAME")) is not None:
        name, hops = str(rr[0].target), hops + 1
    assert hops == 3 and _rrset(z, name, "A") is not None


def test_mx_txt_srv_present() -> None:
    z = _zone()
    for name, rtype in [("vpc.test.", "MX"), ("txt.vpc.test.", "TXT"),
                        ("_sip._tcp.vpc.test.", "SRV"), ("_dns._udp.vpc.test.", "SRV")]:
        assert _rrset(z, name, rtype) is not None, (name, rtype)


def test_big_txt_answer_exceeds_bind_udp_size() -> None:
    z = _zone()
    q = dns.message.make_query("bigtxt.vpc.test.", "TXT")
    resp = dns.message.make_response(q)
    resp.answer.append(_rrset(z, "bigtxt.vpc.test.", "TXT"))
    assert len(resp.to_wire()) > BIND_DEFAULT_UDP_SIZE


def test_nodata_name_has_a_but_no_aaaa() -> None:
    z = _zone()
    assert _rrset(z, "nodata.vpc.test.", "A") is not None
    assert _rrset(z, "nodata.vpc.test.", "AAAA") is None


def test_workload_records_ttls_and_outcomes() -> None:
    recs = workload_records(SMALL)
    by_key = {(r.name, r.rtype): r for r in recs}
    assert len(by_key) == len(recs)  # distinct
    assert by_key[("h1.vpc.test.", "A")].ttl == 60
    assert by_key[("h10.vpc.test.", "AAAA")].ttl == 60  # same TTL as its A
    assert by_key[("h11.vpc.test.", "AAAA")].outcome == NODATA
    assert by_key[("nodata.vpc.test.", "AAAA")].ttl == SMALL.negative_ttl
    nx = [r for r in recs if r.outcome == NXDOMAIN]
    assert len(nx) == SMALL.nxdomain_names
    z = _zone()
    assert all(z.get_node(r.name) is None for r in nx)
    assert len(workload_records(SMALL, with_aaaa=False, with_special=False,
                                with_nxdomain=False)) == 30


def test_search_zone_has_instance_name() -> None:
    spec = SearchZoneSpec(instance_ip="169.254.100.2")
    z = dns.zone.from_text(render_search_zone(spec), origin=spec.origin, relativize=False)
    assert str(_rrset(z, "ip-169-254-100-2.ec2.internal.", "A")[0]) == "169.254.100.2"


def test_zone_spec_rejects_relative_origin_and_addresses_stay_in_range() -> None:
    with pytest.raises(ValueError, match="dot"):
        ZoneSpec(origin="vpc.test")
    assert host_ipv4(65536 + 1) == "198.19.0.1"
    with pytest.raises(ValueError):
        host_ipv4(2 * 65536)


def test_zipf_is_seeded_and_skewed() -> None:
    recs = workload_records(SMALL, with_aaaa=False, with_special=False, with_nxdomain=False)
    a = zipf_queries(recs, 5000, seed=7, exponent=1.2)
    assert a == zipf_queries(recs, 5000, seed=7, exponent=1.2)
    assert a != zipf_queries(recs, 5000, seed=8, exponent=1.2)
    counts = sorted((a.count(q) for q in set(a)), reverse=True)
    assert counts[0] > 5 * counts[len(counts) // 2]  # head much heavier than the median
    assert {q for q in a} <= {(r.name, r.rtype) for r in recs}
    assert render_queries(a[:2]).count("\n") == 2 and render_queries(a[:1]).endswith(" A\n")
    with pytest.raises(ValueError):
        zipf_queries([], 1)


def test_parse_dnsperf_limited_run() -> None:
    r = parse_dnsperf(DNSPERF_LIMITED)
    assert (r.sent, r.completed, r.lost) == (9000, 3076, 5924)
    assert r.rcodes == {"NOERROR": 3076}
    assert r.qps == pytest.approx(1025.263274)
    assert r.run_time == pytest.approx(3.000205)
    assert r.avg_latency == pytest.approx(0.000103)
    assert (r.min_latency, r.max_latency) == (0.000053, 0.001985)
    assert r.stddev_latency == pytest.approx(0.000073)
    assert r.completed_ratio == pytest.approx(3076 / 9000)


def test_parse_dnsperf_mixed_rcodes() -> None:
    r = parse_dnsperf(DNSPERF_MIXED)
    assert r.rcodes == {"NOERROR": 665, "NXDOMAIN": 165, "REFUSED": 166}
    assert r.rcode("SERVFAIL") == 0 and r.rcode("REFUSED") == 166


def test_parse_dnsperf_without_statistics_raises() -> None:
    with pytest.raises(DnsperfParseError):
        parse_dnsperf("Error: could not open queries file\n")


def test_nft_scripts() -> None:
    setup = render_setup("169.254.169.253", 1024)
    assert "limit rate over 1024/second burst 5 packets" in setup
    assert "meta l4proto { udp, tcp } th dport 53" in setup
    assert 'counter name "resolver_dropped" drop' in setup
    assert "add counter ip rig_limit resolver_passed" in setup
    repl = render_replace("169.254.169.253", 100)
    assert repl.startswith("flush chain ip rig_limit input\n") and "over 100/second" in repl
    hole = limit_rules("169.254.169.253", None)
    assert hole == ['ip daddr 169.254.169.253 counter name "resolver_dropped" drop']
    with pytest.raises(ValueError):
        limit_rules("169.254.169.253", 0)


def test_nft_counter_parse_and_rate() -> None:
    text = json.dumps({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"counter": {"family": "ip", "name": "resolver_passed", "table": "rig_limit",
                     "handle": 2, "packets": 3092, "bytes": 182336}},
        {"counter": {"family": "ip", "name": "resolver_dropped", "table": "rig_limit",
                     "handle": 3, "packets": 5925, "bytes": 348929}}]})
    c = parse_counters(text)
    assert c == NftCounters(3092, 5925, 182336, 348929)
    r = rate(NftCounters(92, 925), c, 2.0)
    assert (r.passed_pps, r.dropped_pps) == (1500.0, 2500.0)
    with pytest.raises(ValueError, match="missing"):
        parse_counters('{"nftables": []}')


def test_named_conf_keeps_every_file_in_workdir() -> None:
    conf = render_named_conf(Path("/tmp/w"), ["169.254.169.253", "169.254.100.1"],
                             [ZoneFile("vpc.test.", Path("/tmp/w/vpc.test.zone"))])
    assert 'lock-file "/tmp/w/named.lock";' in conf
    assert 'pid-file "/tmp/w/named.pid";' in conf
    assert 'directory "/tmp/w";' in conf
    assert "recursion no;" in conf
    assert "listen-on port 53 { 169.254.169.253; 169.254.100.1; };" in conf
    assert 'zone "vpc.test" { type primary; file "/tmp/w/vpc.test.zone"; };' in conf
    assert "/run/named" not in conf and "/var/cache/bind" not in conf


def test_imds_metadata_tree() -> None:
    facts = ImdsFacts(interfaces=(
        InterfaceFacts(mac="0a:00:00:00:00:01", vpc_ipv4_cidr_blocks=("10.0.0.0/16",
                                                                      "100.64.0.0/16")),
        InterfaceFacts(mac="0a:00:00:00:00:02", device_number=1)))
    t = metadata_tree(facts)
    assert t["mac"] == "0a:00:00:00:00:01"
    assert t["network/interfaces/macs/"] == "0a:00:00:00:00:01/\n0a:00:00:00:00:02/"
    assert t["network/interfaces/macs/0a:00:00:00:00:01/vpc-ipv4-cidr-block"] == "10.0.0.0/16"
    assert t["network/interfaces/macs/0a:00:00:00:00:01/vpc-ipv4-cidr-blocks"] == (
        "10.0.0.0/16\n100.64.0.0/16")
    assert t["network/interfaces/macs/0a:00:00:00:00:02/device-number"] == "1"
    assert "device-number" in t["network/interfaces/macs/0a:00:00:00:00:02/"]
    assert t["placement/availability-zone"] == "us-east-1a"
    assert ImdsFacts.from_dict(json.loads(json.dumps(asdict(facts)))) == facts


def test_namespace_names_unique_and_exec_prefix() -> None:
    assert unique_name("dca", "inst", pid=42, token="abc") == "dca-42-abc-inst"
    assert unique_name("dca", "inst") != unique_name("dca", "inst")
    assert exec_argv("ns1", ["dig", "x"]) == ["ip", "netns", "exec", "ns1", "dig", "x"]
