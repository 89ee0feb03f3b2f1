"""Parser tests on payloads captured from a real named 9.18 (tests/fixtures/bind-stats)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnscache_agent.errors import StatsParseError
from dnscache_agent.stats.bind_stats import BindSnapshot, parse, parse_json, parse_xml

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "bind-stats"
JSON_BYTES = (FIXTURES / "bind-9.18-json-v1.json").read_bytes()
XML_BYTES = (FIXTURES / "bind-9.18-xml-v3.xml").read_bytes()


def test_json_fixture_counters() -> None:
    s = parse_json(JSON_BYTES)
    assert s.source == "json"
    assert s.boot_time == "2026-11-27T06:09:04.487Z"
    assert s.version.startswith("9.18")
    assert (s.client.requestv4, s.client.qry_udp, s.client.qry_tcp) == (13, 12, 1)
    assert (s.client.qry_servfail, s.client.qry_nxdomain, s.client.qry_used_stale) == (1, 3, 2)
    assert s.client.qry_try_stale == 15 and s.client.prefetch == 0
    assert dict(s.qtypes) == {"A": 9, "AAAA": 3, "TXT": 1}
    assert s.qtype("AAAA") == 3 and s.qtype("MX") == 0 and s.qtype_total == 13
    u = s.upstream
    assert (u.queryv4, u.responsev4, u.retry, u.query_timeout, u.nxdomain) == (14, 7, 5, 6, 3)
    assert u.rtt == (7, 0, 0, 0, 0, 0)
    assert (s.cache.query_hits, s.cache.query_misses) == (6, 17)
    assert s.client_queries == 13 and s.upstream_queries == 14


def test_xml_fixture_matches_json() -> None:
    j, x = parse_json(JSON_BYTES), parse_xml(XML_BYTES)
    assert x.source == "xml"
    assert (x.client, x.upstream, x.cache, x.qtypes, x.boot_time, x.config_time) == \
        (j.client, j.upstream, j.cache, j.qtypes, j.boot_time, j.config_time)


def test_parse_sniffs_format() -> None:
    assert parse(JSON_BYTES).source == "json"
    assert parse(XML_BYTES.decode()).source == "xml"


def test_missing_sections_are_zero() -> None:
    s = parse_json(b'{"boot-time": "x", "nsstats": {"Requestv4": 4}}')
    assert s.client.requestv4 == 4 and s.client.qry_dropped == 0
    assert s.upstream.queryv4 == 0 and s.cache.query_hits == 0 and s.qtypes == ()


def test_internal_view_is_ignored_and_views_are_summed() -> None:
    doc = {"views": {
        "_bind": {"resolver": {"stats": {"Queryv4": 1000}}},
        "a": {"resolver": {"stats": {"Queryv4": 2}, "cachestats": {"QueryHits": 1}}},
        "b": {"resolver": {"stats": {"Queryv4": 3}}},
    }}
    s = parse_json(json.dumps(doc))
    assert s.upstream.queryv4 == 5 and s.cache.query_hits == 1


@pytest.mark.parametrize("payload", [
    b"", b"   ", b"{", b"[]", b"null", b'"x"', b'{"nsstats": []}',
    b'{"nsstats": {"Requestv4": -1}}', b'{"nsstats": {"Requestv4": 1.5}}',
    b'{"nsstats": {"Requestv4": true}}', b'{"nsstats": {"Requestv4": "3"}}',
    b'{"nsstats": {"Requestv4": 18446744073709551616}}', b'{"nsstats": {"Requestv4": NaN}}',
    b'{"views": {"_default": []}}', b'{"boot-time": 5}', b'{"boot-time": "a\\u0000b"}',
    b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe{", b"hello",
])
def test_malformed_json_raises_typed_error(payload: bytes) -> None:
    with pytest.raises(StatsParseError):
        parse_json(payload)


@pytest.mark.parametrize("payload", [
    b"<statistics", b"<other version='3.1'/>", b"<statistics version='2.0'/>",
    b"<statistics version='3.13'><server><counters type='nsstat'>"
    b"<counter name='Requestv4'>-4</counter></counters></server></statistics>",
    b"<statistics version='3.13'><server><counters type='nsstat'>"
    b"<counter name='Requestv4'>\xd9\xa3</counter></counters></server></statistics>",
    # billion laughs and external entities are refused before parsing
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
    b"<statistics version='3.13'>&lol2;</statistics>",
    b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><statistics version="3.1">&e;'
    b"</statistics>",
])
def test_malformed_xml_raises_typed_error(payload: bytes) -> None:
    with pytest.raises(StatsParseError):
        parse_xml(payload)


def test_truncated_fixtures_raise_typed_error() -> None:
    for data in (JSON_BYTES, XML_BYTES):
        for cut in (1, 10, len(data) // 3, len(data) // 2, len(data) - 20):
            with pytest.raises(StatsParseError):
                parse(data[:cut])


def _safe_parse(data: bytes) -> None:
    with contextlib.suppress(StatsParseError):
        assert isinstance(parse(data), BindSnapshot)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes_only_raise_stats_parse_error(data: bytes) -> None:
    _safe_parse(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(JSON_BYTES)), st.integers(0, len(XML_BYTES)), st.binary(max_size=40))
def test_fuzz_truncated_and_spliced_fixtures(cut_j: int, cut_x: int, junk: bytes) -> None:
    _safe_parse(JSON_BYTES[:cut_j] + junk)
    _safe_parse(XML_BYTES[:cut_x] + junk)
    _safe_parse(JSON_BYTES[:cut_j] + junk + JSON_BYTES[cut_j:])
    _safe_parse(XML_BYTES[:cut_x] + junk + XML_BYTES[cut_x:])


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)
_section = st.sampled_from(["nsstats", "qtypes", "views", "boot-time", "version", "x"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_section, _json_values, max_size=5),
       st.dictionaries(st.sampled_from(["stats", "cachestats", "qtypes"]), _json_values,
                       max_size=3))
def test_fuzz_hostile_json_structures(doc: dict, resolver: dict) -> None:
    _safe_parse(json.dumps(doc).encode())
    _safe_parse(json.dumps({"views": {"_default": {"resolver": resolver}}}).encode())


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30),
       st.text(max_size=10), st.sampled_from(["nsstat", "qtype", "resstats", "cachestats"]))
def test_fuzz_hostile_xml_counters(name: str, value: str, kind: str) -> None:
    from xml.sax.saxutils import escape, quoteattr
    body = (f"<statistics version='3.13'><server><counters type='{kind}'>"
            f"<counter name={quoteattr(name)}>{escape(value)}</counter></counters></server>"
            f"<views><view name='_default'><counters type='{kind}'><counter name="
            f"{quoteattr(name)}>{escape(value)}</counter></counters></view></views>"
            "</statistics>")
    _safe_parse(body.encode("utf-8", "surrogatepass"))


def test_unknown_xml_encoding_is_a_parse_error() -> None:
    """Found by the fuzzer: an XML declaration naming an unknown encoding raised LookupError."""
    with pytest.raises(StatsParseError):
        parse_xml(b'<?xml version="1.0" encoding="U-TF-8"?><statistics/>')
