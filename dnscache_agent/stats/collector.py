"""Fetches bind's statistics channel over HTTP on loopback and parses it.

`/json/v1` first; `/xml/v3` when the build has no JSON support (404/501: bind 9.11 serves JSON
only when built with libjson) or the JSON is unusable. The format that worked is remembered,
so a JSON-less build costs one extra request once, not every second.

Whatever listens on the port may be any local user (before named binds it, or while it
restarts), so a fetch is bounded in time and size, not only checked:

* one **total** deadline per `fetch()` (both paths together): every socket operation waits
  at most for the time that is left, so a server that drips one byte a second cannot hold the
  loop past it (requests' timeouts are per read, and a drip resets them);
* at most `max_bytes` of body (and a few KiB of headers) are ever held in memory;
* plain HTTP/1.0, no compression asked for and any `Content-Encoding` refused (nothing to
  inflate), no redirects.

The transport is injectable (`transport=`), so tests need no sockets.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from ..errors import DnscacheError, StatsParseError
from .bind_stats import MAX_PAYLOAD_BYTES, BindSnapshot, parse_json, parse_xml

log = logging.getLogger(__name__)

JSON_PATH = "/json/v1"
XML_PATH = "/xml/v3"
#: Status line and headers; bind's are under 300 bytes.
MAX_HEADER_BYTES = 8192
_RECV_BYTES = 65536


class StatsUnavailableError(DnscacheError):
    """The statistics channel could not be reached (named down, channel not configured)."""

    exit_code = 9


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes


class Transport(Protocol):
    def __call__(self, host: str, port: int, path: str, *, deadline: float,
                 max_bytes: int) -> HttpReply: ...


def http_get(host: str, port: int, path: str, *, deadline: float, max_bytes: int,
             clock: Callable[[], float] = time.monotonic) -> HttpReply:
    """GET `path` with HTTP/1.0, finished by `deadline` (a `clock()` value) or not at all.

    Raises StatsUnavailableError (refused, reset, deadline passed, truncated) and
    StatsParseError (more than `max_bytes` of body, not HTTP, compressed)."""
    url = f"http://{host}:{port}{path}"

    def remaining() -> float:
        left = deadline - clock()
        if left <= 0:
            raise StatsUnavailableError(f"bind statistics channel {url}: no complete response "
                                        "before the deadline")
        return left

    buf = bytearray()
    try:
        with socket.create_connection((host, port), timeout=remaining()) as sock:
            sock.settimeout(remaining())
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n"
                         "Accept-Encoding: identity\r\n\r\n".encode("ascii"))
            head_end = -1
            length: int | None = None
            while True:
                if head_end < 0:
                    head_end = buf.find(b"\r\n\r\n")
                    if head_end >= 0:
                        length = _content_length(bytes(buf[:head_end]), url, max_bytes)
                    elif len(buf) > MAX_HEADER_BYTES:
                        raise StatsParseError(f"bind statistics channel {url}: headers longer "
                                              f"than {MAX_HEADER_BYTES} bytes")
                if head_end >= 0:
                    body_len = len(buf) - head_end - 4
                    if body_len > max_bytes:
                        raise StatsParseError(f"bind statistics channel {url}: response larger "
                                              f"than {max_bytes} bytes")
                    if length is not None and body_len >= length:
                        break
                sock.settimeout(remaining())
                chunk = sock.recv(_RECV_BYTES)
                if not chunk:
                    break
                buf += chunk
    except socket.timeout:
        raise StatsUnavailableError(f"bind statistics channel {url}: no complete response "
                                    "before the deadline") from None
    except OSError as exc:
        raise StatsUnavailableError(f"bind statistics channel {url}: "
                                    f"{exc.strerror or type(exc).__name__}") from None
    if head_end < 0:
        raise StatsUnavailableError(f"bind statistics channel {url}: connection closed before "
                                    "the headers ended")
    status = _status(bytes(buf[:head_end]), url)
    body = bytes(buf[head_end + 4:])
    if length is not None:
        if len(body) < length:
            raise StatsUnavailableError(f"bind statistics channel {url}: response truncated "
                                        f"at {len(body)} of {length} bytes")
        body = body[:length]
    return HttpReply(status, body)


def _status(head: bytes, url: str) -> int:
    line = head.split(b"\r\n", 1)[0].split()
    if len(line) < 2 or not line[0].startswith(b"HTTP/1.") or not line[1].isdigit() \
            or len(line[1]) != 3:
        raise StatsParseError(f"bind statistics channel {url}: not an HTTP response")
    return int(line[1])


def _content_length(head: bytes, url: str, max_bytes: int) -> int | None:
    """Content-Length when given; refuses bodies we would have to decode or could not bound."""
    length: int | None = None
    for raw in head.split(b"\r\n")[1:]:
        name, _, value = raw.partition(b":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-encoding" and value not in (b"", b"identity"):
            raise StatsParseError(f"bind statistics channel {url}: compressed response "
                                  "refused")
        if name == b"transfer-encoding" and value not in (b"", b"identity"):
            raise StatsParseError(f"bind statistics channel {url}: transfer-encoding refused")
        if name == b"content-length":
            if not value.isdigit() or len(value) > 12:
                raise StatsParseError(f"bind statistics channel {url}: bad Content-Length")
            length = int(value)
            if length > max_bytes:
                raise StatsParseError(f"bind statistics channel {url}: response larger than "
                                      f"{max_bytes} bytes")
    return length


class BindStatsCollector:
    """Reads one snapshot per `fetch()`, within `timeout` seconds in total. Raises
    StatsUnavailableError when the channel cannot be reached in time and StatsParseError when
    neither format parses."""

    def __init__(self, port: int = 8053, *, host: str = "127.0.0.1",
                 transport: Transport | None = None, timeout: float = 2.0,
                 max_bytes: int = MAX_PAYLOAD_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.port = int(port)
        self.base = f"http://{host}:{self.port}"
        self.clock = clock
        self.transport: Transport = transport if transport is not None else \
            _SocketTransport(clock)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._prefer_xml = False

    def fetch(self) -> BindSnapshot:
        deadline = self.clock() + self.timeout
        order = ((XML_PATH, parse_xml), (JSON_PATH, parse_json)) if self._prefer_xml else \
            ((JSON_PATH, parse_json), (XML_PATH, parse_xml))
        last: DnscacheError | None = None
        for path, parser in order:
            try:
                snapshot = parser(self._get(path, deadline))
            except (StatsUnavailableError, StatsParseError) as exc:
                log.debug("bind statistics %s: %s", path, exc)
                last = exc
                continue
            self._prefer_xml = path == XML_PATH
            return snapshot
        assert last is not None
        raise last

    def probe(self) -> tuple[bool, str]:
        """Whether `/json/v1` answers 200 (for verify), with the same bounds as `fetch`."""
        url = self.base + JSON_PATH
        try:
            reply = self.transport(self.host, self.port, JSON_PATH,
                                   deadline=self.clock() + self.timeout,
                                   max_bytes=self.max_bytes)
        except DnscacheError as exc:
            return False, str(exc)
        return reply.status == 200, f"{url}: HTTP {reply.status}"

    def _get(self, path: str, deadline: float) -> bytes:
        reply = self.transport(self.host, self.port, path, deadline=deadline,
                               max_bytes=self.max_bytes)
        if reply.status != 200:
            raise StatsUnavailableError(f"bind statistics channel {self.base + path}: "
                                        f"HTTP {reply.status}")
        if len(reply.body) > self.max_bytes:  # an injected transport may not check
            raise StatsParseError(f"bind statistics channel {self.base + path}: response "
                                  f"larger than {self.max_bytes} bytes")
        return reply.body


class _SocketTransport:
    """`http_get` with the collector's clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock

    def __call__(self, host: str, port: int, path: str, *, deadline: float,
                 max_bytes: int) -> HttpReply:
        return http_get(host, port, path, deadline=deadline, max_bytes=max_bytes,
                        clock=self.clock)
