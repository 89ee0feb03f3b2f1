"""The health check against stray UDP: a fake resolver on loopback receives the query, then
sprays the querying port with packets from another socket, short and malformed datagrams and
replies with the wrong id, before (or instead of) the real answer. The check must ignore them
and pass on the real answer, or fail cleanly at its deadline; it must never raise.

Only loopback sockets, no root: these run anywhere the suite runs."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dns.message
import dns.rcode
import dns.rrset

from dnscache_agent.health import Health, query_once, wait_healthy


def _junk(query: dns.message.Message) -> list[bytes]:
    """Datagrams that must not end the wait: each one crashed or misled dnspython's default."""
    wrong_id = dns.message.make_response(query)
    wrong_id.id = (query.id + 1) % 65536
    right_id_garbage = query.id.to_bytes(2, "big") + b"\x81\x80\x00\x01\x00\x01\xff\xff"
    other_question = dns.message.make_response(dns.message.make_query("example.org", "A"))
    other_question.id = query.id
    return [
        b"",                                 # empty datagram
        b"\x00\x01\x02",                     # ShortHeader
        right_id_garbage,                    # right id, truncated body (FormError)
        b"\xff" * 512,                       # noise
        wrong_id.to_wire(),                  # a real reply to some other query
        other_question.to_wire(),            # right id, wrong question
    ]


def _answer(query: dns.message.Message) -> bytes:
    resp = dns.message.make_response(query)
    resp.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "192.0.2.1"))
    return resp.to_wire()


@contextmanager
def _spraying_resolver(*, answer: bool, rounds: int = 3) -> Iterator[int]:
    """A resolver on 127.0.0.1:PORT that, for each query, sprays the querier from a second
    socket (wrong source) and from its own socket (malformed, wrong id) `rounds` times, then
    sends the real answer when `answer`. Yields PORT; stops within a second after the block."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.1)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = server.recvfrom(4096)
            except socket.timeout:
                continue
            query = dns.message.from_wire(wire)
            for _ in range(rounds):
                for junk in _junk(query):
                    stranger.sendto(_answer(query), peer)  # well-formed, wrong source port
                    server.sendto(junk, peer)
                time.sleep(0.01)
            if answer:
                server.sendto(_answer(query), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()
        stranger.close()


def test_stray_packets_are_ignored_until_the_real_answer() -> None:
    with _spraying_resolver(answer=True) as port:
        health = query_once("health.example", "127.0.0.1", port, timeout=3.0)
    assert isinstance(health, Health)
    assert health.ok, health.detail
    assert health.rcode == "NOERROR"


def test_only_junk_fails_at_the_deadline_without_raising() -> None:
    with _spraying_resolver(answer=False) as port:
        start = time.monotonic()
        health = query_once("health.example", "127.0.0.1", port, timeout=1.0)
        elapsed = time.monotonic() - start
    assert not health.ok
    assert "no answer in 1s" in health.detail
    assert elapsed < 5.0  # bounded by the timeout, not by how long the spray goes on


def test_wait_healthy_passes_through_the_spray() -> None:
    """Both queries of the check (the name, then an uncached label) survive the spray."""
    with _spraying_resolver(answer=True, rounds=1) as port:
        health = wait_healthy("health.example", deadline_s=5.0, server="127.0.0.1", port=port)
    assert health.ok, health.detail
