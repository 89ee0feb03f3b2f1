"""When the queue may send: the token bucket in front of the queue, TCP queries' tokens, and
the time of the next wake-up, so the server sleeps until a token or an event instead of
ticking. Pure: `now` is passed in, sends are returned.

Policy:
- a TCP query (named's retry of a truncated answer) is first in line: it collects
  `tcp_cost` tokens one at a time, then may connect;
- then live misses, then prefetches; warm-up questions only while the bucket holds more than
  `warm_reserve` spare tokens, so a live miss arriving next never waits for a warm-up packet;
- when a backlog waits, the server wakes once `batch` tokens are there (at most burst - 1)
  rather than for every token: fewer wake-ups, and still no more than the burst at once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .bucket import TCP_PACKETS_PER_QUERY, Pacing, TokenBucket
from .queue import PacerQueue, Priority, Send


@dataclass
class TcpTicket:
    """A TCP query waiting for its tokens; `granted` once it holds them all."""

    collected: int = 0
    granted: bool = False
    cancelled: bool = False


class Scheduler:
    """The bucket and the queue together; `pump(now)` returns what may leave now."""

    def __init__(self, queue: PacerQueue, pacing: Pacing, now: float, *,
                 tcp_cost: int = TCP_PACKETS_PER_QUERY, warm_reserve: int = 1) -> None:
        self.queue = queue
        self.pacing = pacing
        self.bucket = TokenBucket(pacing.rate, pacing.burst, now)
        self.tcp_cost = tcp_cost
        self.warm_reserve = min(warm_reserve, pacing.burst - 1)  # a burst of 1 keeps none
        self.tcp: deque[TcpTicket] = deque()
        self.batch = int(__import__("os").environ.get("PACER_BATCH", "1"))

    def request_tcp(self) -> TcpTicket:
        ticket = TcpTicket()
        self.tcp.append(ticket)
        return ticket

    def pump(self, now: float) -> tuple[list[Send], list[TcpTicket]]:
        """Requeue overdue questions, then spend the tokens there are: returns the UDP
        packets to send and the TCP tickets granted, in order."""
        self.queue.requeue_overdue(now)
        sends: list[Send] = []
        grants: list[TcpTicket] = []
        bucket, queue = self.bucket, self.queue
        while True:
            while self.tcp and self.tcp[0].cancelled:
                self.tcp.popleft()
            if self.tcp:
                if not bucket.take(now):
                    break
                ticket = self.tcp[0]
                ticket.collected += 1
                if ticket.collected >= self.tcp_cost:
                    self.tcp.popleft()
                    ticket.granted = True
                    queue.counters.tcp_queries += 1
                    queue.counters.tcp_packets += self.tcp_cost
                    grants.append(ticket)
                continue
            tokens = bucket.available(now)
            if tokens < 1:
                break
            up_to = Priority.WARM if tokens >= 1 + self.warm_reserve else Priority.PREFETCH
            entry = queue.pop(now, up_to)
            if entry is None:
                break
            bucket.take(now)
            sends.append(queue.sent(entry, now))
        return sends, grants

    def next_wakeup(self, now: float) -> float | None:
        """When `pump` next has something to do (None: only when a packet arrives)."""
        times: list[float] = []
        deadline = self.queue.next_deadline()
        if deadline is not None:
            times.append(deadline)
        if self.tcp:
            times.append(now + self.bucket.time_until(now, 1))
        else:
            ready = self.queue.ready(Priority.PREFETCH)
            if ready:
                times.append(now + self.bucket.time_until(now, min(ready, self.batch)))
            elif self.queue.depth(Priority.WARM):
                times.append(now + self.bucket.time_until(now, 1 + self.warm_reserve))
        return min(times) if times else None

    def spare(self, now: float) -> bool:
        """Nothing but warm-up waits and the bucket has spare tokens: the warm-up may ask
        named for more."""
        return (not self.tcp and self.queue.ready(Priority.PREFETCH) == 0
                and self.bucket.available(now) >= 1 + self.warm_reserve)
