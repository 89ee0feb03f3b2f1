"""Collector with an injected transport: JSON first, XML fallback, size cap, one deadline for
the whole fetch, errors typed. The socket transport itself is tested against local servers in
tests/integration/test_collector_defensive.py."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import pytest

from dnscache_agent.errors import StatsParseError
from dnscache_agent.stats.collector import BindStatsCollector, HttpReply, StatsUnavailableError

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "bind-stats"

Route = Union[HttpReply, Exception]


class _Transport:
    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.calls: list[tuple[str, float, int]] = []

    def __call__(self, host: str, port: int, path: str, *, deadline: float,
                 max_bytes: int) -> HttpReply:
        self.calls.append((f"http://{host}:{port}{path}", deadline, max_bytes))
        r = self.routes[path]
        if isinstance(r, Exception):
            raise r
        return r


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_json_first() -> None:
    t = _Transport({"/json/v1": HttpReply(200, (FIX / "bind-9.18-json-v1.json").read_bytes())})
    snap = BindStatsCollector(8053, transport=t, timeout=1.0, clock=_Clock()).fetch()
    assert snap.source == "json"
    assert [u for u, _, _ in t.calls] == ["http://127.0.0.1:8053/json/v1"]


def test_xml_fallback_is_remembered() -> None:
    t = _Transport({"/json/v1": HttpReply(404, b"not found"),
                    "/xml/v3": HttpReply(200, (FIX / "bind-9.18-xml-v3.xml").read_bytes())})
    c = BindStatsCollector(8053, transport=t)
    assert c.fetch().source == "xml"
    assert c.fetch().source == "xml"
    assert [u for u, _, _ in t.calls] == ["http://127.0.0.1:8053/json/v1",
                                          "http://127.0.0.1:8053/xml/v3",
                                          "http://127.0.0.1:8053/xml/v3"]


def test_one_deadline_covers_both_paths() -> None:
    """The XML fallback gets what is left of the fetch's deadline, not a fresh timeout."""
    clock = _Clock()
    t = _Transport({"/json/v1": HttpReply(404, b""),
                    "/xml/v3": HttpReply(200, (FIX / "bind-9.18-xml-v3.xml").read_bytes())})
    BindStatsCollector(8053, transport=t, timeout=1.5, clock=clock).fetch()
    assert [d for _, d, _ in t.calls] == [101.5, 101.5]


def test_unreachable_and_garbage_are_typed() -> None:
    down = _Transport({"/json/v1": StatsUnavailableError("refused"),
                       "/xml/v3": StatsUnavailableError("refused")})
    with pytest.raises(StatsUnavailableError):
        BindStatsCollector(transport=down).fetch()
    junk = _Transport({"/json/v1": HttpReply(200, b"{nope"), "/xml/v3": HttpReply(200, b"<nope")})
    with pytest.raises(StatsParseError):
        BindStatsCollector(transport=junk).fetch()


def test_oversized_response_is_refused() -> None:
    t = _Transport({"/json/v1": HttpReply(200, b"{" + b" " * 5000 + b"}"),
                    "/xml/v3": HttpReply(200, b" " * 5000)})
    with pytest.raises(StatsParseError):
        BindStatsCollector(transport=t, max_bytes=1000).fetch()
    assert {m for _, _, m in t.calls} == {1000}


def test_probe_reports_status_and_errors_as_text() -> None:
    ok = _Transport({"/json/v1": HttpReply(200, b"{}")})
    assert BindStatsCollector(transport=ok).probe() == (True,
                                                        "http://127.0.0.1:8053/json/v1: HTTP 200")
    down = _Transport({"/json/v1": StatsUnavailableError("channel down")})
    assert BindStatsCollector(transport=down).probe() == (False, "channel down")
