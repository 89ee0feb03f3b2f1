"""Collector with an injected session: JSON first, XML fallback, size cap, errors typed."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from dnscache_agent.errors import StatsParseError
from dnscache_agent.stats.collector import BindStatsCollector, StatsUnavailableError

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "bind-stats"


class _Resp:
    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self.body = body
        self.closed = False

    def iter_content(self, chunk_size: int) -> Any:
        for i in range(0, len(self.body), chunk_size):
            yield self.body[i:i + chunk_size]

    def close(self) -> None:
        self.closed = True


class _Session:
    def __init__(self, routes: dict[str, Any]) -> None:
        self.routes = routes
        self.calls: list[tuple[str, float]] = []

    def get(self, url: str, **kw: Any) -> _Resp:
        self.calls.append((url, kw["timeout"]))
        r = self.routes[url.rsplit(":", 1)[1].split("/", 1)[1]]
        if isinstance(r, Exception):
            raise r
        return r


def test_json_first() -> None:
    s = _Session({"json/v1": _Resp(200, (FIX / "bind-9.18-json-v1.json").read_bytes())})
    snap = BindStatsCollector(8053, session=s, timeout=1.0).fetch()
    assert snap.source == "json" and s.calls == [("http://127.0.0.1:8053/json/v1", 1.0)]


def test_xml_fallback_is_remembered() -> None:
    s = _Session({"json/v1": _Resp(404, b"not found"),
                  "xml/v3": _Resp(200, (FIX / "bind-9.18-xml-v3.xml").read_bytes())})
    c = BindStatsCollector(8053, session=s)
    assert c.fetch().source == "xml"
    assert c.fetch().source == "xml"
    assert [u for u, _ in s.calls] == ["http://127.0.0.1:8053/json/v1",
                                       "http://127.0.0.1:8053/xml/v3",
                                       "http://127.0.0.1:8053/xml/v3"]


def test_unreachable_and_garbage_are_typed() -> None:
    down = _Session({"json/v1": requests.ConnectionError("refused"),
                     "xml/v3": requests.ConnectionError("refused")})
    with pytest.raises(StatsUnavailableError):
        BindStatsCollector(session=down).fetch()
    junk = _Session({"json/v1": _Resp(200, b"{nope"), "xml/v3": _Resp(200, b"<nope")})
    with pytest.raises(StatsParseError):
        BindStatsCollector(session=junk).fetch()


def test_oversized_response_is_refused() -> None:
    big = _Resp(200, b"{" + b" " * 5000 + b"}")
    s = _Session({"json/v1": big, "xml/v3": _Resp(200, b" " * 5000)})
    with pytest.raises(StatsParseError):
        BindStatsCollector(session=s, max_bytes=1000).fetch()
    assert big.closed
