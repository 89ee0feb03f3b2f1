"""Which questions cost upstream packets, for the stats file's `top` and `classes`: each
answered question goes to `stats.top.TopTally` (bounded minute and hour tallies by (name, type)
and by class: TCP fallback, search-list NXDOMAIN, AAAA NODATA, repeated NXDOMAIN, short TTL).
It answers "who spends the budget?" without logging queries.

The report sorts up to thousands of keys, so it is refreshed every `period` seconds, not on
every stats write. Pure: `now` is passed in.
"""

from __future__ import annotations

from ..stats.top import TCP_FALLBACK, SearchPolicy, TopTally, UpstreamQuestion, question_from_wire
from . import wire
from .stats_file import TopEntry

TOP_N = 50
#: Question keys whose text is kept: decoding a name is the costliest step per answer, and
#: the costly names repeat. The cache is dropped whole when full.
NAME_CACHE = 20000


class Tally:
    """Feeds answered questions to a `TopTally`; `top()` and `classes()` read its last-minute
    report (refreshed at most every `period` seconds)."""

    def __init__(self, policy: SearchPolicy | None = None, *, limit_pps: float = 1024.0,
                 period: float = 5.0) -> None:
        self.top_tally = TopTally(policy, limit_pps=limit_pps)
        self.period = period
        self._at: float | None = None
        self._top: tuple[TopEntry, ...] = ()
        self._classes: dict[str, float] = {}
        self._names: dict[bytes, str | None] = {}

    def answered(self, key: bytes, qtype: int, response: bytes, now: float,
                 packets: int = 1, ttl: int | None = None) -> None:
        """A question answered over UDP after `packets` attempts; `ttl` is the answer's
        (`wire.answer_ttl`), already parsed by the queue on the hot path."""
        if key in self._names:
            name = self._names[key]
        else:
            name = wire.name_text(key)
            if len(self._names) >= NAME_CACHE:
                self._names.clear()
            self._names[key] = name
        if name is None or len(response) < wire.HEADER:
            return
        answers = (response[6] << 8) | response[7]
        self.top_tally.observe(UpstreamQuestion(name, wire.type_text(qtype),
                                                wire.rcode(response), answers, ttl, False,
                                                packets), now)

    def answered_tcp(self, key: bytes, qtype: int, response: bytes | None, now: float,
                     packets: int) -> None:
        """A TCP query (after a truncated answer) that cost `packets` packets."""
        q = question_from_wire(key, qtype, response, tcp=True, packets=packets)
        if q is not None:
            self.top_tally.observe(q, now)

    def _refresh(self, now: float) -> None:
        if self._at is not None and now - self._at < self.period:
            return
        self._at = now
        report = self.top_tally.report("minute", now, top_n=TOP_N)
        self._top = tuple(TopEntry(k.name, k.qtype, k.packets, k.rcode, k.ttl,
                                   k.klass == TCP_FALLBACK, k.klass) for k in report.top)
        self._classes = {c.klass: round(c.pps, 3) for c in report.classes}

    def top(self, now: float) -> tuple[TopEntry, ...]:
        """The costliest questions of the last minute (up to TOP_N)."""
        self._refresh(now)
        return self._top

    def classes(self, now: float) -> dict[str, float]:
        """Upstream packets/s by class over the last minute."""
        self._refresh(now)
        return dict(self._classes)
