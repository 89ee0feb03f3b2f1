"""Where the budget goes: classes of upstream questions, bounded minute/hour tallies, packets/s
and budget share, and the fix each class names (issue 13, section 2, pure part)."""
from __future__ import annotations

import json

import pytest

from dnscache_agent.resolv_conf import parse
from dnscache_agent.stats.top import (
    AAAA_NODATA,
    OTHER,
    REPEATED_NXDOMAIN,
    SEARCH_NXDOMAIN,
    SHORT_TTL,
    TCP_FALLBACK,
    SearchPolicy,
    TopTally,
    UpstreamQuestion,
)

T0 = 1_800_000_000.0  # a minute boundary
K8S = SearchPolicy.from_resolv_conf(parse(
    "nameserver 127.0.0.1\nsearch ns1.svc.cluster.local svc.cluster.local cluster.local "
    "ec2.internal\noptions ndots:5 timeout:1\n"))


def q(name: str, qtype: str = "A", rcode: int = 0, answers: int = 1, ttl: int | None = 300,
      tcp: bool = False, packets: int = 1) -> UpstreamQuestion:
    return UpstreamQuestion(name, qtype, rcode, answers, ttl, tcp, packets)


def test_search_policy_from_resolv_conf() -> None:
    assert K8S.ndots == 5 and K8S.search[-1] == "ec2.internal"
    assert SearchPolicy.from_resolv_conf(parse("search a.b\n")).ndots == 1
    assert SearchPolicy.from_resolv_conf(parse("options ndots:30\n")).ndots == 15


@pytest.mark.parametrize(("name", "expansion"), [
    ("api.example.com.ns1.svc.cluster.local.", True),
    ("api.example.com.ec2.internal", True),
    ("name.ec2.internal.ec2.internal", True),   # doubled search domain
    ("db.ec2.internal", False),                 # the search list doing its job
    ("redis.svc.cluster.local", False),         # `redis` + svc.cluster.local
    ("redis.svc.ns1.svc.cluster.local", True),  # `redis.svc` walking the list
    ("api.example.com", False),
    ("Api.Example.COM.EC2.internal.", True),    # case and trailing dot do not matter
])
def test_search_expansion_heuristic(name: str, expansion: bool) -> None:
    assert K8S.is_expansion(name) is expansion


def test_classes_and_their_precedence() -> None:
    t = TopTally(K8S, short_ttl=30)
    assert t.observe(q("big.example.com", "TXT", tcp=True, packets=6), T0) == TCP_FALLBACK
    assert t.observe(q("api.example.com.svc.cluster.local", rcode=3, answers=0), T0) == \
        SEARCH_NXDOMAIN
    assert t.observe(q("v4only.example.com", "AAAA", answers=0, ttl=60), T0) == AAAA_NODATA
    assert t.observe(q("typo.example.com", rcode=3, answers=0), T0) == OTHER  # first time
    assert t.observe(q("typo.example.com", rcode=3, answers=0), T0 + 1) == REPEATED_NXDOMAIN
    assert t.observe(q("fast.example.com", ttl=5), T0) == SHORT_TTL
    assert t.observe(q("www.example.com", ttl=300), T0) == OTHER
    assert t.observe(q("lost.example.com", rcode=-1, answers=0, ttl=None), T0) == OTHER
    # AAAA that exists is not NODATA; NXDOMAIN for AAAA of a search expansion is search
    assert t.observe(q("v6.example.com", "AAAA", answers=1), T0) == OTHER
    assert t.observe(q("x.y.ec2.internal", "AAAA", rcode=3, answers=0), T0) == SEARCH_NXDOMAIN


def test_minute_report_packets_per_second_and_budget_share() -> None:
    t = TopTally(K8S, limit_pps=1000)
    # 30 s at 100 AAAA NODATA/s and 50 repeated NXDOMAIN/s (one name), 20 other/s
    for s in range(30):
        for i in range(100):
            t.observe(q(f"h{i}.example.com", "AAAA", answers=0), T0 + s)
        for _ in range(50):
            t.observe(q("typo.example.com", rcode=3, answers=0), T0 + s)
        for i in range(20):
            t.observe(q(f"w{s}-{i}.example.com"), T0 + s)
    r = t.report("minute", T0 + 30)
    assert r.seconds == 30 and r.packets == 30 * 170
    by = {c.klass: c for c in r.classes}
    assert [c.klass for c in r.classes] == [AAAA_NODATA, REPEATED_NXDOMAIN, OTHER]
    assert by[AAAA_NODATA].pps == pytest.approx(100)
    assert by[AAAA_NODATA].share_of_budget == pytest.approx(0.10)
    assert by[REPEATED_NXDOMAIN].packets == 30 * 50 - 1  # the first NXDOMAIN is not a repeat
    assert by[REPEATED_NXDOMAIN].share_of_upstream == pytest.approx((1500 - 1) / 5100)
    assert by[REPEATED_NXDOMAIN].examples == ("typo.example.com A",)
    assert by[REPEATED_NXDOMAIN].setting == "[cache] min_ncache_ttl = 90"
    assert "filter-aaaa" in by[AAAA_NODATA].fix
    top = r.top[0]
    assert (top.name, top.qtype, top.packets, top.klass) == ("typo.example.com", "A", 1500,
                                                             REPEATED_NXDOMAIN)
    assert top.pps == pytest.approx(50)
    json.dumps(r.as_dict())  # the --json form is plain JSON


def test_search_advisory_names_the_resolv_conf_line() -> None:
    t = TopTally(K8S)
    for domain in K8S.search:
        t.observe(q(f"api.example.com.{domain}", rcode=3, answers=0), T0)
    t.observe(q("api.example.com"), T0)
    (search, other) = t.report("minute", T0 + 10).classes
    assert search.klass == SEARCH_NXDOMAIN and search.packets == 4
    assert search.setting == "resolv.conf: options ndots:1"
    assert "ndots:5" in search.fix and "`options ndots:1`" in search.fix
    assert SearchPolicy(("ec2.internal",), 1).advisory().startswith("names with dots")


def test_minute_window_rolls_and_hour_keeps_sixty_minutes() -> None:
    t = TopTally(limit_pps=1024)
    for minute in range(90):  # 10 packets a minute of one name, for 90 minutes
        for i in range(10):
            t.observe(q("a.example.com"), T0 + 60 * minute + i)
    now = T0 + 60 * 89 + 30
    m = t.report("minute", now)
    assert m.seconds == 90 and m.packets == 20  # the minute in progress and the one before
    h = t.report("hour", now)
    assert h.packets == 600 and h.seconds == 59 * 60 + 30
    assert h.pps == pytest.approx(600 / h.seconds)
    # a quiet stretch: the window still spans its seconds
    later = t.report("minute", now + 600)
    assert later.packets == 0 and later.seconds == 60 + (now + 600) % 60


def test_memory_is_bounded() -> None:
    t = TopTally(max_keys=100, keep=10)
    for minute in range(120):
        for i in range(300):  # 300 distinct names a minute, 100 tallied
            t.observe(q(f"n{minute}-{i}.example.com"), T0 + 60 * minute + i / 10)
    assert len(t._history) == 59
    assert all(len(m.keys) <= 10 for m in t._history)
    assert t._current is not None and len(t._current.keys) <= 100
    r = t.report("minute", T0 + 60 * 119 + 30)
    assert r.packets == 600 and r.untallied == 400  # class totals stay exact
    assert sum(c.packets for c in r.classes) == 600


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        TopTally(max_keys=0)
    with pytest.raises(ValueError):
        TopTally(repeat_threshold=1)
    with pytest.raises(ValueError):
        TopTally().report("day", T0)


def test_question_from_wire_reads_the_pacer_question_and_answer() -> None:
    import dns.message
    import dns.rcode
    import dns.rrset

    from dnscache_agent.pacer import wire
    from dnscache_agent.stats.top import question_from_wire

    query = dns.message.make_query("v4only.example.com.", "AAAA")
    parsed = wire.parse_query(query.to_wire())
    assert parsed is not None
    nodata = dns.message.make_response(query)
    nodata.authority.append(dns.rrset.from_text(
        "example.com.", 300, "IN", "SOA", "ns. host. 1 2 3 4 60"))
    event = question_from_wire(parsed.key, parsed.qtype, nodata.to_wire())
    assert event == UpstreamQuestion("v4only.example.com.", "AAAA", 0, 0, 60, False, 1)
    assert TopTally().observe(event, T0) == AAAA_NODATA
    nx = dns.message.make_response(query)
    nx.set_rcode(dns.rcode.NXDOMAIN)
    event = question_from_wire(parsed.key, parsed.qtype, nx.to_wire(), tcp=False)
    assert event is not None and event.rcode == 3
    lost = question_from_wire(parsed.key, parsed.qtype, None, packets=2)
    assert lost is not None and (lost.rcode, lost.packets) == (-1, 2)


def test_render_top_shows_classes_fixes_and_names() -> None:
    from dnscache_agent.stats.top import render_top

    t = TopTally(K8S, limit_pps=1024)
    for s in range(10):
        for _ in range(40):
            t.observe(q("typo.example.com", rcode=3, answers=0), T0 + s)
        t.observe(q("api.example.com.ec2.internal", rcode=3, answers=0), T0 + s)
    text = render_top(t.report("minute", T0 + 10))
    lines = text.splitlines()
    assert lines[0] == "last minute (10 s): 41.0 upstream packets/s, 4% of the 1024/s budget"
    assert any(line.startswith("repeated-nxdomain") and "[cache] min_ncache_ttl = 90" in line
               for line in lines)
    assert any(line.startswith("search-nxdomain") and "options ndots:1" in line
               for line in lines)
    assert any(line.startswith("typo.example.com") and "repeated-nxdomain" in line
               for line in lines)


def test_domains_add_up_names_a_client_generates() -> None:
    """Random labels under one domain: each name is cheap (the pacer answers repeats within a
    second), the domain shows what they cost together, and memory stays bounded."""
    from dnscache_agent.stats.top import parent, render_top

    assert parent("r1.typo.example.com.") == "typo.example.com"
    assert parent("example.com") == "example.com" and parent("com") == "com"
    t = TopTally(K8S, limit_pps=1000, max_keys=50, keep=5)
    for s in range(30):
        for i in range(20):
            t.observe(q(f"r{s}-{i}.typo.example.com", rcode=3, answers=0), T0 + s)
        t.observe(q("www.example.com"), T0 + s)
    r = t.report("minute", T0 + 30)
    first = r.domains[0]
    # every packet counts for the domain; `names` counts the names under the key cap (49 +
    # www.example.com = max_keys)
    assert (first.domain, first.packets, first.names) == ("typo.example.com", 600, 49)
    assert first.pps == pytest.approx(20) and first.share_of_budget == pytest.approx(0.02)
    assert r.top[0].packets == 30  # no single name stands out: www.example.com, once a second
    text = render_top(r)
    assert any(line.startswith("typo.example.com") and " 49 " in line
               for line in text.splitlines()), text
    for minute in range(1, 70):  # a new domain every event: bounded per minute and compacted
        for i in range(100):
            t.observe(q(f"x.d{minute}-{i}.example.com"), T0 + 60 * minute + i / 10)
    assert all(len(m.domains) <= 5 for m in t._history)
    assert t._current is not None and len(t._current.domains) <= 50
