"""Fetches bind's statistics channel over HTTP (requests, short timeout) and parses it.

`/json/v1` first; `/xml/v3` when the build has no JSON support (404/501) or the JSON is
unusable. The format that worked is remembered, so a JSON-less build costs one extra request
once, not every second. The session is injectable for tests.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, cast

import requests

from ..errors import DnscacheError, StatsParseError
from .bind_stats import MAX_PAYLOAD_BYTES, BindSnapshot, parse_json, parse_xml

log = logging.getLogger(__name__)

JSON_PATH = "/json/v1"
XML_PATH = "/xml/v3"


class StatsUnavailableError(DnscacheError):
    """The statistics channel could not be reached (named down, channel not configured)."""

    exit_code = 9


class _Session(Protocol):
    def get(self, url: str, **kwargs: Any) -> Any: ...


class BindStatsCollector:
    """Reads one snapshot per `fetch()`. Raises StatsUnavailableError when the channel cannot
    be reached and StatsParseError when neither format parses."""

    def __init__(self, port: int = 8053, *, host: str = "127.0.0.1",
                 session: _Session | None = None, timeout: float = 2.0,
                 max_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self.base = f"http://{host}:{int(port)}"
        self.session: _Session = session if session is not None else \
            cast(_Session, requests.Session())
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._prefer_xml = False

    def fetch(self) -> BindSnapshot:
        order = ((XML_PATH, parse_xml), (JSON_PATH, parse_json)) if self._prefer_xml else \
            ((JSON_PATH, parse_json), (XML_PATH, parse_xml))
        last: DnscacheError | None = None
        for path, parser in order:
            try:
                snapshot = parser(self._get(path))
            except (StatsUnavailableError, StatsParseError) as exc:
                log.debug("bind statistics %s: %s", path, exc)
                last = exc
                continue
            self._prefer_xml = path == XML_PATH
            return snapshot
        assert last is not None
        raise last

    def _get(self, path: str) -> bytes:
        url = self.base + path
        try:
            resp = self.session.get(url, timeout=self.timeout, stream=True)
        except requests.RequestException as exc:
            raise StatsUnavailableError(f"bind statistics channel {url}: "
                                        f"{type(exc).__name__}") from None
        try:
            if resp.status_code != 200:
                raise StatsUnavailableError(f"bind statistics channel {url}: "
                                            f"HTTP {resp.status_code}")
            chunks: list[bytes] = []
            size = 0
            try:
                for chunk in resp.iter_content(chunk_size=65536):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise StatsParseError(f"bind statistics channel {url}: response "
                                              f"larger than {self.max_bytes} bytes")
                    chunks.append(chunk)
            except requests.RequestException as exc:
                raise StatsUnavailableError(f"bind statistics channel {url}: "
                                            f"{type(exc).__name__}") from None
            return b"".join(chunks)
        finally:
            close = getattr(resp, "close", None)
            if close is not None:
                close()
