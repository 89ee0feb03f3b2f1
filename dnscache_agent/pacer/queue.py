"""The pacer's queue: which question goes upstream next, and who gets its answer. Pure: every
method takes `now` (monotonic seconds) and returns what to send; the server does the I/O.

Order. Three priorities, FIFO by first ask within each:
  1. live cache misses: a client of named waits for them;
  2. named's prefetches: named still holds the answer and serves it meanwhile. A question is a
     prefetch when the answer the pacer last relayed for it expires within `prefetch_window`
     (named's `prefetch` trigger, 2 s by default, plus a second of slack): named prefetches
     only then. The pacer remembers the expiry of each relayed answer (bounded, least recently
     answered first out). A question asked while its relayed answer still has longer to live
     is a live miss: named lost the answer (a dropped datagram) or its cache (a restart);
  3. warm-up: questions the pacer itself asked named to refresh after a restart.
A question whose answer is overdue goes back to the head of its priority (a retransmit).

Coalescing. Identical questions (same name, type, class, RD and CD bits) share one entry and
one upstream packet; the answer goes to every waiter with its own ID and letter case. A repeat
of the same (address, ID) is a retransmit of a query already waiting and adds nothing.

Giving up. named 9.18 retransmits a question it still wants to its forwarder after 0.8, 0.8,
0.8, 1.6 and 3.2 s, and ends the fetch 10 s after it began (resolver-query-timeout); a stub
with `timeout:1 attempts:2` has given up long before. So an entry nobody asked for in
`give_up_after_ask` (4 s, above named's longest gap) or that is older than `max_age` (10 s,
named's whole fetch) is dropped unsent (or its in-flight attempt abandoned): its answer would
reach no one, and its packet would delay questions someone still waits for.
"""

from __future__ import annotations

import heapq
import random
import struct
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, NamedTuple

from . import wire


class Priority(IntEnum):
    LIVE = 0
    PREFETCH = 1
    WARM = 2


@dataclass(frozen=True)
class QueueLimits:
    """Timing and bounds of the queue (seconds and entry counts); see the module docstring."""

    give_up_after_ask: float = 4.0
    max_age: float = 10.0
    #: First retransmit when no answer came; doubled for each further attempt. The resolver
    #: answers in about a millisecond, so a second of silence means the packet was lost.
    first_retry: float = 1.0
    max_pending: int = 20000
    max_waiters: int = 16
    relayed_max: int = 50000
    #: How long a warm-up question keeps warm-up priority after the pacer asked named for it.
    warming_for: float = 10.0
    max_waits: int = 50000
    #: A newer query for the same question from the same host supersedes waiters asked at
    #: least this long before it: named abandons a query when it retransmits (0.8 s and
    #: more later, from a new port), so answering the old one only costs a datagram.
    supersede_after: float = 0.5
    #: A question asked again within this long of its answer (a retransmit that crossed the
    #: answer on its way) is answered from that answer, not sent upstream again.
    recent_window: float = 1.0
    #: A question whose relayed answer expires within this long is named's prefetch (named
    #: 9.18's `prefetch` trigger is 2 s by default; `[cache] prefetch_trigger` sets it).
    prefetch_window: float = 3.0


@dataclass
class Counters:
    """Running totals since start (the stats file's `totals`)."""

    queries: int = 0
    coalesced: int = 0
    duplicates: int = 0
    sent_udp: int = 0
    retransmits: int = 0
    answers: int = 0
    expired: int = 0
    upstream_timeouts: int = 0
    overflow: int = 0
    unmatched: int = 0
    warm_sent: int = 0
    prefetch_sent: int = 0
    answered_recent: int = 0
    tcp_queries: int = 0
    tcp_packets: int = 0

    @property
    def packets(self) -> int:
        """Packets towards the resolver, as the limit counts them (UDP + TCP's packets)."""
        return self.sent_udp + self.tcp_packets

    def as_dict(self) -> dict[str, int]:
        out = {f.name: int(getattr(self, f.name)) for f in fields(self)}
        out["packets"] = self.packets
        return out


class Waiter(NamedTuple):
    """A client waiting for an answer: its address, its query ID and its question bytes.
    (Tuples, not dataclasses: one is made per query on the hot path.)"""

    addr: Any
    qid: bytes
    question: bytes
    asked: float


class Entry:
    """One distinct question waiting in the queue or in flight upstream."""

    __slots__ = ("key", "query", "qtype", "priority", "created", "last_asked", "waiters",
                 "ids", "sent_at", "tries", "queued")

    def __init__(self, key: bytes, query: bytes, qtype: int, priority: Priority,
                 now: float) -> None:
        self.key = key
        self.query = query
        self.qtype = qtype
        self.priority = priority
        self.created = now
        self.last_asked = now
        self.waiters: list[Waiter] = []
        self.ids: list[int] = []
        self.sent_at = 0.0
        self.tries = 0
        self.queued = True


class Send(NamedTuple):
    """One packet to send upstream: `payload` to forwarder number `upstream`."""

    key: bytes
    upstream_id: int
    payload: bytes
    upstream: int
    priority: Priority
    retransmit: bool


#: Called with (question key, qtype) when a question that already cost an upstream packet is
#: asked again (not by the warm-up): the warm list's input.
AskedAgain = Callable[[bytes, int], None]
#: Called with (entry, answer, its TTL or None, now) for every answer relayed: `top`'s input.
Answered = Callable[["Entry", bytes, "int | None", float], None]


class PacerQueue:
    """Pending questions by priority, their waiters and their upstream attempts."""

    def __init__(self, limits: QueueLimits | None = None, *, upstreams: int = 1,
                 rng: random.Random | None = None,
                 on_asked_again: AskedAgain | None = None,
                 on_answer: Answered | None = None) -> None:
        self.limits = limits or QueueLimits()
        self.upstreams = max(1, upstreams)
        # Seeded from os.urandom; IDs are visible only on the path to the resolver, where
        # an attacker could spoof answers anyway. SystemRandom cost a syscall per packet.
        self.rng = rng or random.Random()
        self.on_asked_again = on_asked_again
        self.on_answer = on_answer
        self.counters = Counters()
        self.pending: dict[bytes, Entry] = {}
        self.by_id: dict[int, bytes] = {}
        self._queues: tuple[deque[bytes], ...] = (deque(), deque(), deque())
        self._queued = [0, 0, 0]
        self._overdue: list[tuple[float, int, bytes, int]] = []
        self._seq = 0
        #: question key -> monotonic time its relayed answer expires (LRU by last answer).
        self.relayed: OrderedDict[bytes, float] = OrderedDict()
        #: warm_key -> until when a question counts as warm-up.
        self.warming: dict[bytes, float] = {}
        self.waits: list[float] = []
        #: question key -> (time, answer) for the last `recent_window` seconds.
        self.recent: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._replies: list[tuple[Any, bytes]] = []

    # ------------------------------------------------------------------ questions in
    def ask(self, msg: bytes, addr: Any, now: float) -> Priority | None:
        """A query from a client (named). Returns the priority it waits at, or None when it
        waits for nothing: not a query, the queue is full, or it was answered at once from
        an answer relayed within `recent_window` (collect those with `take_replies`)."""
        q = wire.parse_query(msg)
        if q is None:
            return None
        c = self.counters
        c.queries += 1
        key = q.key
        waiter = Waiter(addr, msg[:2], msg[wire.HEADER:q.end], now)
        entry = self.pending.get(key)
        if entry is None and key in self.recent:
            at, data = self.recent[key]
            if now - at <= self.limits.recent_window:
                c.answered_recent += 1
                self._replies.append((addr, _reply(waiter, data)))
                return None
        prio = self._classify(key, now)
        if entry is None:
            if len(self.pending) >= self.limits.max_pending:
                c.overflow += 1
                return None
            if prio != Priority.WARM and key in self.relayed and self.on_asked_again:
                self.on_asked_again(key, q.qtype)
            entry = self.pending[key] = Entry(key, msg, q.qtype, prio, now)
            self._enqueue(entry, prio, front=False)
        else:
            entry.last_asked = now
            if any(w.addr == addr and w.qid == waiter.qid for w in entry.waiters):
                c.duplicates += 1
                return entry.priority
            c.coalesced += 1
            if prio < entry.priority:
                self._upgrade(entry, prio)
            host, old = addr[0], now - self.limits.supersede_after
            entry.waiters = [w for w in entry.waiters if w.addr[0] != host or w.asked > old]
        if len(entry.waiters) >= self.limits.max_waiters:
            del entry.waiters[0]  # the oldest: named has retransmitted since
        entry.waiters.append(waiter)
        return entry.priority

    def _classify(self, key: bytes, now: float) -> Priority:
        until = self.warming.get(wire.warm_key(key))
        if until is not None:
            if until > now:
                return Priority.WARM
            del self.warming[wire.warm_key(key)]
        expires = self.relayed.get(key)
        if expires is not None and 0 < expires - now <= self.limits.prefetch_window:
            return Priority.PREFETCH
        return Priority.LIVE

    def mark_warming(self, name: str, qtype: int, now: float) -> bool:
        """The warm-up is about to ask named for (name, qtype): when named forwards it, it
        waits at warm-up priority. False for a name that cannot be encoded."""
        key = wire.question_key(name, qtype)
        if key is None:
            return False
        self.warming[wire.warm_key(key)] = now + self.limits.warming_for
        return True

    def _enqueue(self, entry: Entry, prio: Priority, *, front: bool) -> None:
        entry.priority = prio
        entry.queued = True
        self._queued[prio] += 1
        if front:
            self._queues[prio].appendleft(entry.key)
        else:
            self._queues[prio].append(entry.key)

    def _upgrade(self, entry: Entry, prio: Priority) -> None:
        if entry.queued:
            # The reference left in the lower queue is skipped when popped (priority differs).
            self._queued[entry.priority] -= 1
            self._enqueue(entry, prio, front=False)
        else:
            entry.priority = prio

    # ------------------------------------------------------------------ questions out
    def depth(self, priority: Priority | None = None) -> int:
        """Questions waiting to be sent (all priorities, or one)."""
        return sum(self._queued) if priority is None else self._queued[priority]

    def ready(self, up_to: Priority) -> int:
        """Questions waiting at `up_to` priority or better."""
        return sum(self._queued[: up_to + 1])

    @property
    def in_flight(self) -> int:
        return len(self.pending) - sum(self._queued)

    def gave_up(self, entry: Entry, now: float) -> bool:
        lim = self.limits
        return (now - entry.last_asked > lim.give_up_after_ask
                or now - entry.created > lim.max_age)

    def pop(self, now: float, up_to: Priority = Priority.WARM) -> Entry | None:
        """The next question to send (best priority first), dropping given-up ones."""
        for prio in range(up_to + 1):
            dq = self._queues[prio]
            while dq:
                entry = self.pending.get(dq.popleft())
                if entry is None or not entry.queued or entry.priority != prio:
                    continue
                entry.queued = False
                self._queued[prio] -= 1
                if self.gave_up(entry, now):
                    self._drop(entry)
                    continue
                return entry
        return None

    def sent(self, entry: Entry, now: float) -> Send:
        """Record that `entry` goes upstream now; returns the packet (a fresh random ID)."""
        c = self.counters
        uid = self.rng.getrandbits(16)
        while uid in self.by_id:
            uid = self.rng.getrandbits(16)
        self.by_id[uid] = entry.key
        entry.ids.append(uid)
        entry.tries += 1
        entry.sent_at = now
        c.sent_udp += 1
        retransmit = entry.tries > 1
        if retransmit:
            c.retransmits += 1
        else:
            if len(self.waits) < self.limits.max_waits:
                self.waits.append(now - entry.created)
            if entry.priority == Priority.WARM:
                c.warm_sent += 1
            elif entry.priority == Priority.PREFETCH:
                c.prefetch_sent += 1
        self._seq += 1
        deadline = now + self.limits.first_retry * (2 ** (entry.tries - 1))
        heapq.heappush(self._overdue, (deadline, self._seq, entry.key, entry.tries))
        return Send(entry.key, uid, struct.pack("!H", uid) + entry.query[2:],
                    (entry.tries - 1) % self.upstreams, entry.priority, retransmit)

    def unsend(self, send: Send) -> None:
        """The packet could not leave (a socket error): forget its ID so it is retried
        when overdue, and do not count it."""
        self.by_id.pop(send.upstream_id, None)
        self.counters.sent_udp -= 1

    def next_deadline(self) -> float | None:
        """When the oldest in-flight attempt becomes overdue (None when nothing is)."""
        return self._overdue[0][0] if self._overdue else None

    def requeue_overdue(self, now: float) -> int:
        """Put questions whose answer is overdue back at the head of their priority;
        returns how many timed out."""
        n = 0
        while self._overdue and self._overdue[0][0] <= now:
            _, _, key, tries = heapq.heappop(self._overdue)
            entry = self.pending.get(key)
            if entry is None or entry.tries != tries or entry.queued:
                continue
            n += 1
            self.counters.upstream_timeouts += 1
            if self.gave_up(entry, now):
                self._drop(entry)
            else:
                self._enqueue(entry, entry.priority, front=True)
        return n

    def sweep(self, now: float) -> int:
        """Drop every entry given up on (waiting or in flight); returns how many."""
        dropped = [e for e in self.pending.values() if self.gave_up(e, now)]
        for entry in dropped:
            if entry.queued:
                entry.queued = False
                self._queued[entry.priority] -= 1
            self._drop(entry)
        for wkey in [k for k, until in self.warming.items() if until <= now]:
            del self.warming[wkey]
        return len(dropped)

    def _drop(self, entry: Entry) -> None:
        self.pending.pop(entry.key, None)
        for uid in entry.ids:
            self.by_id.pop(uid, None)
        self.counters.expired += 1

    # ------------------------------------------------------------------ answers in
    def answer(self, data: bytes, now: float) -> list[tuple[Any, bytes]]:
        """An upstream answer: (address, datagram) for every waiter, each with its own ID
        and question bytes. Answers to an unknown ID or another question are ignored."""
        if len(data) < wire.HEADER or not data[2] & 0x80:
            return []
        uid = (data[0] << 8) | data[1]
        key = self.by_id.get(uid)
        entry = self.pending.get(key) if key is not None else None
        qend = wire.HEADER + (len(key) - 2 if key is not None else 0)
        if (entry is None or key is None or len(data) < qend
                or _lower_name(data[wire.HEADER:qend]) != key[2:]):
            self.counters.unmatched += 1
            return []
        if entry.queued:  # answered while waiting for its retransmit
            entry.queued = False
            self._queued[entry.priority] -= 1
        del self.pending[key]
        for other in entry.ids:
            self.by_id.pop(other, None)
        self.counters.answers += 1
        ttl = wire.answer_ttl(data)
        if self.on_answer is not None:
            self.on_answer(entry, data, ttl, now)
        self.relayed[key] = now + (ttl if ttl is not None else 0)
        self.relayed.move_to_end(key)
        while len(self.relayed) > self.limits.relayed_max:
            self.relayed.popitem(last=False)
        recent = self.recent
        recent[key] = (now, data)
        recent.move_to_end(key)
        horizon = now - self.limits.recent_window
        while recent and next(iter(recent.values()))[0] < horizon:
            recent.popitem(last=False)
        head, tail = data[2:wire.HEADER], data[qend:]
        return [(w.addr, w.qid + head + w.question + tail) for w in entry.waiters]

    def take_replies(self) -> list[tuple[Any, bytes]]:
        """Replies made by `ask` from recent answers since the last call."""
        replies, self._replies = self._replies, []
        return replies

    def take_waits(self) -> list[float]:
        """Queue waits (first ask to first send, seconds) since the last call."""
        waits, self.waits = self.waits, []
        return waits

    def entries(self) -> Iterator[Entry]:
        return iter(self.pending.values())


def _reply(waiter: Waiter, data: bytes) -> bytes:
    """`data` (an answer to the same question) as the answer to `waiter`'s query."""
    qend = wire.HEADER + len(waiter.question)
    return waiter.qid + data[2:wire.HEADER] + waiter.question + data[qend:]


def _lower_name(question: bytes) -> bytes:
    """A question section with only its name lower-cased (type and class bytes untouched)."""
    end = len(question) - 4
    return question[:end].lower() + question[end:]
