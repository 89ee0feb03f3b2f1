"""The statistics collector against hostile local HTTP servers on loopback: one that drips
bytes (each read is quick, the response never ends), one that never stops sending, one that
answers compressed, and an honest one. A fetch must end by its total deadline and hold at
most its byte cap, with a typed error.

Loopback sockets only, no root: these run anywhere the suite runs."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dnscache_agent.errors import StatsParseError
from dnscache_agent.stats.collector import BindStatsCollector, StatsUnavailableError

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "bind-stats"
#: Every server gives up after this long, so a collector that does not stop still ends.
SERVER_LIMIT_S = 8.0

Handler = Callable[[socket.socket, threading.Event], None]


@contextmanager
def _server(handler: Handler) -> Iterator[int]:
    """A TCP server on 127.0.0.1 running `handler(conn, stop)` for each connection, one thread
    each. Yields its port; closes everything within a second after the block."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(1.0)
                conn.recv(4096)  # the request
                handler(conn, stop)
            except OSError:
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            t = threading.Thread(target=serve, args=(conn,), daemon=True)
            t.start()
            threads.append(t)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        acceptor.join(timeout=2)
        for t in threads:
            t.join(timeout=2)
        listener.close()


def _drip(head: bytes, body: bytes, every: float) -> Handler:
    """Send `head` at once, then `body` one byte every `every` seconds (each read is quick;
    the whole response takes len(body) * every)."""
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head)
        end = time.monotonic() + SERVER_LIMIT_S
        for i in range(len(body)):
            if stop.is_set() or time.monotonic() > end:
                return
            conn.sendall(body[i:i + 1])
            time.sleep(every)
    return handler


def _timed(fn: Callable[[], object]) -> tuple[BaseException | None, float]:
    start = time.monotonic()
    try:
        fn()
    except (StatsUnavailableError, StatsParseError) as exc:
        return exc, time.monotonic() - start
    return None, time.monotonic() - start


def test_a_dripping_body_ends_at_the_total_deadline() -> None:
    body = (FIX / "bind-9.18-json-v1.json").read_bytes()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    with _server(_drip(head, body, every=0.05)) as port:
        err, elapsed = _timed(BindStatsCollector(port, timeout=1.0).fetch)
    assert isinstance(err, StatsUnavailableError), err
    assert "deadline" in str(err)
    assert elapsed < 2.5, f"fetch took {elapsed:.1f}s with a 1s deadline"


def test_dripping_headers_end_at_the_total_deadline() -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 4000 + b"\r\n\r\n{}"
    with _server(_drip(b"", head, every=0.05)) as port:
        err, elapsed = _timed(BindStatsCollector(port, timeout=1.0).fetch)
    assert isinstance(err, StatsUnavailableError), err
    assert elapsed < 2.5, f"fetch took {elapsed:.1f}s with a 1s deadline"


def test_an_endless_body_is_cut_at_the_cap() -> None:
    def endless(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":\"")
        end = time.monotonic() + SERVER_LIMIT_S
        while not stop.is_set() and time.monotonic() < end:
            conn.sendall(b"x" * 65536)

    with _server(endless) as port:
        err, elapsed = _timed(BindStatsCollector(port, timeout=5.0, max_bytes=200_000).fetch)
    assert isinstance(err, StatsParseError), err
    assert "larger than 200000 bytes" in str(err)
    assert elapsed < 4.0


def test_a_declared_oversized_body_is_refused_before_reading_it() -> None:
    with _server(_drip(b"HTTP/1.0 200 OK\r\nContent-Length: 999999999\r\n\r\n", b"{}", 0.5)) \
            as port:
        err, _ = _timed(BindStatsCollector(port, timeout=2.0, max_bytes=100_000).fetch)
    assert isinstance(err, StatsParseError), err


def test_a_compressed_answer_is_refused() -> None:
    head = b"HTTP/1.0 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}"
    with _server(_drip(head, b"", 0)) as port:
        err, _ = _timed(BindStatsCollector(port, timeout=2.0).fetch)
    assert isinstance(err, StatsParseError) and "compressed" in str(err)


@pytest.mark.parametrize("reply", [b"", b"garbage\r\n\r\n", b"HTTP/1.0 200 OK\r\n"])
def test_not_http_is_a_typed_error(reply: bytes) -> None:
    with _server(_drip(reply, b"", 0)) as port:
        err, _ = _timed(BindStatsCollector(port, timeout=2.0).fetch)
    assert isinstance(err, (StatsUnavailableError, StatsParseError)), err


def test_an_honest_server_is_read_with_and_without_content_length() -> None:
    json_body = (FIX / "bind-9.18-json-v1.json").read_bytes()
    for head in (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(json_body),
                 b"HTTP/1.0 200 OK\r\n\r\n"):
        with _server(_drip(head + json_body, b"", 0)) as port:
            snap = BindStatsCollector(port, timeout=2.0).fetch()
        assert snap.source == "json" and snap.client.requestv4 == 13


def test_a_refused_port_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connect is refused
        err, _ = _timed(BindStatsCollector(port, timeout=1.0).fetch)
    assert isinstance(err, StatsUnavailableError), err
