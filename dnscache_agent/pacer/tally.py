"""Which questions cost upstream packets: a bounded per-question tally over about the last
minute, for the stats file's `top` (the 50 costliest, with rcode, TTL and whether TCP was
needed). It answers "who spends the budget?" without logging queries.

Bounded: two one-minute generations of at most `max_keys` questions each; questions beyond
that in a minute are not tallied (the busiest ones have been seen by then). Pure: `now` is
passed in.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from . import wire
from .stats_file import TopEntry

WINDOW = 60.0


@dataclass
class _Cost:
    qtype: int
    packets: int = 0
    response: bytes | None = None  # the last answer, parsed only for the top entries
    tcp: bool = False


class Tally:
    """Per-question upstream packets over the current and the previous minute."""

    def __init__(self, max_keys: int = 20000, top_n: int = 50) -> None:
        self.max_keys = max_keys
        self.top_n = top_n
        self._cur: dict[bytes, _Cost] = {}
        self._prev: dict[bytes, _Cost] = {}
        self._rotated = 0.0

    def _rotate(self, now: float) -> None:
        if now - self._rotated >= WINDOW:
            self._prev, self._cur = self._cur, {}
            self._rotated = now

    def _cost(self, key: bytes) -> _Cost | None:
        cost = self._cur.get(key)
        if cost is None and len(self._cur) < self.max_keys:
            qtype = (key[-4] << 8) | key[-3] if len(key) >= 7 else 0
            cost = self._cur[key] = _Cost(qtype)
        return cost

    def sent(self, key: bytes, now: float, packets: int = 1) -> None:
        self._rotate(now)
        cost = self._cost(key)
        if cost is not None:
            cost.packets += packets

    def answered(self, key: bytes, response: bytes) -> None:
        cost = self._cur.get(key) or self._prev.get(key)
        if cost is not None:
            cost.response = response

    def sent_tcp(self, key: bytes, response: bytes, now: float, packets: int) -> None:
        self.sent(key, now, packets)
        cost = self._cur.get(key)
        if cost is not None:
            cost.tcp = True
            cost.response = response

    def top(self, now: float) -> tuple[TopEntry, ...]:
        """The `top_n` questions by packets over the current and previous minute."""
        self._rotate(now)
        merged: dict[bytes, _Cost] = {}
        for gen in (self._prev, self._cur):
            for key, cost in gen.items():
                seen = merged.get(key)
                if seen is None:
                    merged[key] = _Cost(cost.qtype, cost.packets, cost.response, cost.tcp)
                else:
                    seen.packets += cost.packets
                    seen.response = cost.response or seen.response
                    seen.tcp = seen.tcp or cost.tcp
        best = heapq.nlargest(self.top_n, merged.items(), key=lambda kv: kv[1].packets)
        out = []
        for key, c in best:
            r = c.response
            out.append(TopEntry(wire.name_text(key) or "?", wire.type_text(c.qtype), c.packets,
                                wire.rcode(r) if r else -1, wire.answer_ttl(r) if r else None,
                                c.tcp or (r is not None and wire.is_truncated(r))))
        return tuple(out)
