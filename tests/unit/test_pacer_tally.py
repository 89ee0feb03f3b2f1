"""The pacer's feed into `stats.top`: answered questions with their packets, the costliest
of the last minute with rcode, TTL, class and TCP, and packets/s by class."""
from __future__ import annotations

import dns.message
import dns.rcode
import dns.rrset

from dnscache_agent.pacer.tally import Tally
from dnscache_agent.pacer.wire import answer_ttl, parse_query
from dnscache_agent.stats.top import SearchPolicy


def key_and_answer(name: str, qtype: str = "A", *, rcode: int = 0, ttl: int = 300,
                   records: bool = True) -> tuple[bytes, int, bytes]:
    q = dns.message.make_query(name, qtype)
    parsed = parse_query(q.to_wire())
    assert parsed is not None
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if rcode == 0 and records:
        r.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", "192.0.2.1"))
    return parsed.key, parsed.qtype, r.to_wire()


def test_top_and_classes_of_the_last_minute() -> None:
    t = Tally(SearchPolicy(("ec2.internal",), 5), limit_pps=1000, period=0.0)
    k, qt, r = key_and_answer("short.example.", ttl=5)
    for i in range(3):
        t.answered(k, qt, r, 10.0 + i, ttl=answer_ttl(r))
    k, qt, r = key_and_answer("api.example.com.ec2.internal.", rcode=dns.rcode.NXDOMAIN)
    t.answered(k, qt, r, 11.0, packets=2, ttl=answer_ttl(r))  # after a retransmit
    k, qt, r = key_and_answer("v4only.example.", "AAAA", records=False)
    t.answered(k, qt, r, 11.0)
    k, qt, r = key_and_answer("big.example.")
    t.answered_tcp(k, qt, r, 12.0, 6)
    top = {e.name: e for e in t.top(13.0)}
    assert top["big.example"].packets == 6 and top["big.example"].tcp
    assert top["big.example"].klass == "tcp-fallback"
    assert top["short.example"].packets == 3 and top["short.example"].ttl == 5
    assert top["short.example"].klass == "short-ttl" and not top["short.example"].tcp
    assert top["api.example.com.ec2.internal"].rcode == dns.rcode.NXDOMAIN
    classes = t.classes(13.0)
    assert set(classes) == {"tcp-fallback", "short-ttl", "search-nxdomain", "aaaa-nodata"}
    assert classes["tcp-fallback"] > 0


def test_report_is_refreshed_at_most_every_period() -> None:
    t = Tally(period=5.0)
    k, qt, r = key_and_answer("a.example.")
    t.answered(k, qt, r, 0.0)
    assert [e.name for e in t.top(0.0)] == ["a.example"]
    k2, qt2, r2 = key_and_answer("b.example.")
    t.answered(k2, qt2, r2, 1.0)
    assert len(t.top(1.0)) == 1  # cached
    assert len(t.top(5.0)) == 2
