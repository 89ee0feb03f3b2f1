"""Prototype of a pacing forwarder between the local named and the Amazon resolver.

Why: named sends a cache miss upstream at once, so a cold-start burst of distinct names
goes over the 1024 packets/s budget and EC2 drops the excess; named's retries and SERVFAILs
follow. This forwarder queues instead of losing: named forwards to it (127.0.0.2:53), it
sends at most `rate` packets/s (token bucket, small burst) to the resolver, answers every
identical question waiting in its queue with one upstream packet (named's retransmits and
concurrent clients coalesce), and retransmits itself only when an answer is overdue.
TCP (truncated answers) is proxied connection by connection, paying tokens per packet.

No kernel feature is needed (no tc, no nftables): a userspace socket, like named's own.
A benchmark prototype: `python -m bench.pacer --listen 127.0.0.2 --upstream 169.254.169.253
--rate 900`. Bounded: entries older than `max_age` are dropped (named has given up by then).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
TCP_PACKETS_PER_QUERY = 5  # SYN, ACK, data, ACK, FIN towards the resolver


def question_key(msg: bytes) -> bytes | None:
    """Identity of a query for coalescing: lower-cased question section + CD/RD flag bits.
    None for anything that is not a one-question query."""
    if len(msg) < 17 or msg[2] & 0x80 or msg[4:6] != b"\x00\x01":
        return None
    i = 12
    while i < len(msg) and msg[i]:
        i += msg[i] + 1
    end = i + 5
    if end > len(msg):
        return None
    return bytes([msg[2] & 0x01, msg[3] & 0x10]) + msg[12:end].lower()


class TokenBucket:
    """`rate` tokens/s, at most `burst` saved; `clock` injectable."""

    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] | None = None) -> None:
        self.rate, self.burst = rate, burst
        self.clock = clock or time.monotonic
        self.tokens = burst
        self.t = self.clock()

    def take(self, n: float = 1.0) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


@dataclass
class Pending:
    """One distinct question: who waits for it, and its upstream attempts."""

    query: bytes
    created: float
    waiters: list[tuple[tuple[str, int], bytes]] = field(default_factory=list)
    upstream_id: int = -1
    sent_at: float = 0.0
    tries: int = 0
    queued: bool = True


class Pacer(asyncio.DatagramProtocol):
    """The UDP side: clients (named) on one socket, the resolver on another."""

    def __init__(self, upstream: tuple[str, int], bucket: TokenBucket, *, retry: float = 1.5,
                 max_age: float = 8.0) -> None:
        self.upstream = upstream
        self.bucket = bucket
        self.retry, self.max_age = retry, max_age
        self.pending: dict[bytes, Pending] = {}
        self.by_id: dict[int, bytes] = {}
        self.queue: deque[bytes] = deque()
        self.next_id = 0
        self.last_scan = 0.0
        self.transport: asyncio.DatagramTransport | None = None
        self.up: socket.socket | None = None
        self.stats = {"queries": 0, "coalesced": 0, "sent": 0, "answers": 0, "expired": 0}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        key = question_key(data)
        if key is None:
            return
        self.stats["queries"] += 1
        entry = self.pending.get(key)
        waiter = (addr, data[:2])
        if entry is None:
            entry = self.pending[key] = Pending(data, time.monotonic())
            self.queue.append(key)
        elif waiter in entry.waiters:
            return  # named's retransmit of a question already queued
        else:
            self.stats["coalesced"] += 1
        entry.waiters.append(waiter)

    def upstream_readable(self) -> None:
        assert self.up is not None and self.transport is not None
        while True:
            try:
                data = self.up.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(data) < 12:
                continue
            key = self.by_id.pop(struct.unpack("!H", data[:2])[0], None)
            entry = self.pending.pop(key, None) if key is not None else None
            if entry is None:
                continue
            self.stats["answers"] += 1
            for addr, qid in entry.waiters:
                self.transport.sendto(qid + data[2:], addr)

    def tick(self) -> None:
        """Send what the bucket allows; requeue overdue questions; drop stale ones."""
        assert self.up is not None
        now = time.monotonic()
        while self.queue and self.bucket.take():
            key = self.queue.popleft()
            entry = self.pending.get(key)
            if entry is not None:
                entry.queued = False
            if entry is None:
                self.bucket.tokens += 1
                continue
            if now - entry.created > self.max_age:
                self._expire(key, entry)
                self.bucket.tokens += 1
                continue
            self.by_id.pop(entry.upstream_id, None)
            self.next_id = (self.next_id + 1) & 0xFFFF
            while self.next_id in self.by_id:
                self.next_id = (self.next_id + 1) & 0xFFFF
            entry.upstream_id, entry.sent_at = self.next_id, now
            entry.tries += 1
            self.by_id[self.next_id] = key
            try:
                self.up.send(struct.pack("!H", self.next_id) + entry.query[2:])
                self.stats["sent"] += 1
            except OSError:
                pass
        if now - self.last_scan > 0.1:  # overdue answers: retransmit, oldest first
            self.last_scan = now
            for key, entry in list(self.pending.items()):
                if now - entry.created > self.max_age:
                    self._expire(key, entry)
                elif (not entry.queued and entry.tries
                      and now - entry.sent_at > self.retry * entry.tries):
                    entry.queued = True
                    self.queue.appendleft(key)

    def _expire(self, key: bytes, entry: Pending) -> None:
        self.pending.pop(key, None)
        self.by_id.pop(entry.upstream_id, None)
        self.stats["expired"] += 1


async def tcp_proxy(bucket: TokenBucket, upstream: tuple[str, int], reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
    """One client TCP connection → one upstream connection, paced per message."""
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readexactly(2), 10)
                msg = await reader.readexactly(struct.unpack("!H", head)[0])
            except (asyncio.IncompleteReadError, asyncio.TimeoutError):
                return
            while not bucket.take(TCP_PACKETS_PER_QUERY):
                await asyncio.sleep(0.005)
            ur, uw = await asyncio.wait_for(asyncio.open_connection(*upstream), 5)
            try:
                uw.write(head + msg)
                await uw.drain()
                rhead = await asyncio.wait_for(ur.readexactly(2), 5)
                resp = await ur.readexactly(struct.unpack("!H", rhead)[0])
            finally:
                uw.close()
            writer.write(rhead + resp)
            await writer.drain()
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def serve(listen: str, port: int, upstream: tuple[str, int], rate: float, burst: float,
                run_for: float | None = None) -> None:
    loop = asyncio.get_running_loop()
    bucket = TokenBucket(rate, burst)
    pacer = Pacer(upstream, bucket)
    transport, _ = await loop.create_datagram_endpoint(lambda: pacer, local_addr=(listen, port))
    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    up.connect(upstream)
    up.setblocking(False)
    pacer.up = up
    loop.add_reader(up.fileno(), pacer.upstream_readable)
    server = await asyncio.start_server(
        lambda r, w: tcp_proxy(bucket, upstream, r, w), listen, port)
    print(f"listening on {listen}:{port}", flush=True)
    end = None if run_for is None else time.monotonic() + run_for
    try:
        while end is None or time.monotonic() < end:
            pacer.tick()
            await asyncio.sleep(0.001)
    finally:
        server.close()
        transport.close()
        up.close()
        log.info("pacer stats: %s", pacer.stats)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pacer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="127.0.0.2")
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--upstream", default="169.254.169.253")
    p.add_argument("--rate", type=float, default=900.0)
    p.add_argument("--burst", type=float, default=5.0)
    p.add_argument("--run-for", type=float, default=3600.0, help="exit after this many seconds")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    asyncio.run(serve(a.listen, a.port, (a.upstream, 53), a.rate, a.burst, a.run_for))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
