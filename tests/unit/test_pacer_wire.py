"""The pacer's hand-written wire parsing agrees with dnspython and never raises."""
from __future__ import annotations

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from hypothesis import given
from hypothesis import strategies as st

from dnscache_agent.pacer import wire


def test_parse_query_keys_on_name_type_class_and_flags() -> None:
    q = dns.message.make_query("WwW.Example.COM", "A")
    p = wire.parse_query(q.to_wire())
    assert p is not None and p.qtype == 1
    same = wire.parse_query(dns.message.make_query("www.example.com", "A").to_wire())
    assert same is not None and same.key == p.key
    cd = dns.message.make_query("www.example.com", "A")
    cd.flags |= dns.flags.CD
    other = wire.parse_query(cd.to_wire())
    assert other is not None and other.key != p.key
    aaaa = wire.parse_query(dns.message.make_query("www.example.com", "AAAA").to_wire())
    assert aaaa is not None and aaaa.key != p.key


def test_type_bytes_are_not_case_folded() -> None:
    https = wire.parse_query(dns.message.make_query("a.example", 65).to_wire())  # 0x0041
    other = wire.parse_query(dns.message.make_query("a.example", 97).to_wire())  # 0x0061
    assert https is not None and other is not None and https.key != other.key
    assert https.qtype == 65


def test_parse_query_rejects_responses_and_other_opcodes() -> None:
    q = dns.message.make_query("a.example", "A")
    assert wire.parse_query(dns.message.make_response(q).to_wire()) is None
    notify = dns.message.make_query("a.example", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert wire.parse_query(notify.to_wire()) is None
    assert wire.parse_query(b"") is None


@given(st.binary(max_size=300))
def test_parsers_never_raise(data: bytes) -> None:
    wire.parse_query(data)
    wire.answer_ttl(data)
    wire.rcode(data)
    wire.is_truncated(data)


def _response(rcode: int = 0) -> dns.message.Message:
    r = dns.message.make_response(dns.message.make_query("a.example", "A"))
    r.set_rcode(rcode)
    return r


def test_answer_ttl_is_the_lowest_answer_ttl() -> None:
    r = _response()
    r.answer.append(dns.rrset.from_text("a.example.", 300, "IN", "CNAME", "b.example."))
    r.answer.append(dns.rrset.from_text("b.example.", 5, "IN", "A", "192.0.2.1"))
    assert wire.answer_ttl(r.to_wire()) == 5


def test_negative_answer_ttl_from_soa() -> None:
    r = _response(dns.rcode.NXDOMAIN)
    r.authority.append(dns.rrset.from_text("example.", 900, "IN", "SOA",
                                           "ns.example. h.example. 1 2 3 4 60"))
    assert wire.answer_ttl(r.to_wire()) == 60
    nodata = _response()
    nodata.authority.append(dns.rrset.from_text("example.", 30, "IN", "SOA",
                                                "ns.example. h.example. 1 2 3 4 60"))
    assert wire.answer_ttl(nodata.to_wire()) == 30


def test_errors_have_no_ttl() -> None:
    assert wire.answer_ttl(_response(dns.rcode.SERVFAIL).to_wire()) is None
    assert wire.answer_ttl(_response().to_wire()) is None  # NOERROR, nothing at all


def test_build_query_matches_dnspython_and_round_trips_names() -> None:
    raw = wire.build_query(0x1234, "Host-1.example.com.", 28)
    assert raw is not None
    m = dns.message.from_wire(raw)
    assert m.id == 0x1234 and m.question[0].rdtype == dns.rdatatype.AAAA
    assert m.flags & dns.flags.RD
    key = wire.question_key("host-1.example.com", 28)
    assert key is not None and wire.name_text(key) == "host-1.example.com."
    assert wire.build_query(1, "a..b", 1) is None
    assert wire.build_query(1, "x" * 64 + ".example", 1) is None


def test_type_text_and_code() -> None:
    assert wire.type_code("aaaa") == 28 and wire.type_code("TYPE65") == 65
    assert wire.type_code("BOGUS") is None and wire.type_code("TYPE0") is None
    assert wire.type_text(28) == "AAAA" and wire.type_text(999) == "TYPE999"
