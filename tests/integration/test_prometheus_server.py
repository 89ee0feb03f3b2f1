"""The Prometheus endpoint against idle and slow local clients, on loopback: an idle
connection must not block a scrape, a half-sent request is dropped after the connection
timeout, too many connections are refused rather than each holding a thread, and `close()`
returns within its bound while a connection is open.

Loopback sockets only, no root."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from dnscache_agent.sinks.prometheus import PrometheusServer
from dnscache_agent.stats.catalogue import Sample


def _sample() -> Sample:
    return Sample(timestamp=0.0, host={"client_qps": 12.0}, interfaces={})


@contextmanager
def _idle(port: int, request: bytes = b"") -> Iterator[socket.socket]:
    """A connection that sends `request` (maybe nothing, maybe half a request) and then
    nothing more."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        if request:
            conn.sendall(request)
        time.sleep(0.2)  # let the server accept it before the test goes on
        yield conn
    finally:
        conn.close()


def _scrape(port: int, timeout: float = 3.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _close_within(server: PrometheusServer, bound: float) -> float:
    """Call close() in a thread (so a close that hangs cannot hang the suite); return how long
    it took, or fail after `bound`."""
    start = time.monotonic()
    t = threading.Thread(target=server.close, daemon=True)
    t.start()
    t.join(timeout=bound)
    assert not t.is_alive(), f"close() still running after {bound}s"
    return time.monotonic() - start


def test_an_idle_connection_does_not_block_a_scrape() -> None:
    server = PrometheusServer(_sample, port=0)
    try:
        with _idle(server.port), _idle(server.port, b"GET /metrics HTTP/1.1\r\n"):
            body = _scrape(server.port)
        assert body.startswith(b"HTTP/1.0 200")
    finally:
        _close_within(server, 10)


def test_close_returns_while_a_connection_is_idle() -> None:
    server = PrometheusServer(_sample, port=0, connection_timeout=30.0)
    with _idle(server.port):
        assert _close_within(server, 5.0) < 3.5
    # the port is released
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", server.port))


def test_a_half_sent_request_is_dropped_after_the_connection_timeout() -> None:
    server = PrometheusServer(_sample, port=0, connection_timeout=0.5)
    try:
        with _idle(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n") as conn:
            start = time.monotonic()
            conn.settimeout(5)
            while conn.recv(4096):  # the server may answer 408 before closing
                pass
            assert time.monotonic() - start < 3.0
    finally:
        _close_within(server, 10)


def test_connections_over_the_cap_are_refused_and_scrapes_resume() -> None:
    server = PrometheusServer(_sample, port=0, max_connections=3, connection_timeout=1.0)
    try:
        with ExitStack() as stack:
            for _ in range(3):
                stack.enter_context(_idle(server.port))
            with _idle(server.port) as extra:
                extra.settimeout(2)
                assert extra.recv(1) == b""  # closed on accept, not queued behind the others
        time.sleep(1.5)  # the idle ones have timed out
        assert _scrape(server.port).startswith(b"HTTP/1.0 200")
    finally:
        _close_within(server, 10)
