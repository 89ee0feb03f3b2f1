"""The pacer's statistics file: what it writes once a second, and the reader `stats`, the
daemon and the sinks use.

A file, not a listener: only the pacer's user can write its runtime directory, so no other
local process can pose as the pacer (a loopback port could be taken by anyone first). The
writer replaces it atomically; the reader is defensive (size cap, JSON only, every field
type-checked). A missing file, or one not rewritten for `max_age` seconds, means the pacer is
not running: the reader returns None.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union

from ..errors import StatsParseError
from .files import read_source

FORMAT_VERSION = 1
MAX_BYTES = 256 * 1024
#: Counter names in `totals` and `interval` (see queue.Counters).
COUNTERS = ("queries", "coalesced", "duplicates", "sent_udp", "retransmits", "answers",
            "expired", "upstream_timeouts", "overflow", "unmatched", "warm_sent",
            "prefetch_sent", "answered_recent", "tcp_queries", "tcp_packets", "packets")

PathOrFile = Union[str, Path, IO[bytes]]


class PacerStatsError(StatsParseError):
    """The pacer's stats file exists but is not what the pacer writes."""


@dataclass(frozen=True)
class TopEntry:
    """One question's upstream cost over the last minute (`stats.top` classes)."""

    name: str
    qtype: str
    packets: int
    rcode: int
    ttl: int | None
    tcp: bool
    klass: str = "other"


@dataclass(frozen=True)
class PacerStats:
    """One reading of the pacer's stats file. Rates are per second over the pacer's last
    interval (`interval_s`); `totals` count since it started."""

    time: float
    pid: int
    started: float
    limit_pps: int
    rate_pps: float
    burst: int
    interval_s: float
    queue_depth: int
    queue_live: int
    queue_prefetch: int
    queue_warm: int
    in_flight: int
    wait_p50_ms: float | None
    wait_p99_ms: float | None
    warm_list: int
    warm_pending: int
    totals: Mapping[str, int] = field(default_factory=dict)
    interval: Mapping[str, int] = field(default_factory=dict)
    top: tuple[TopEntry, ...] = ()
    #: Upstream packets/s over the last minute by class (`stats.top.CLASSES`).
    classes: Mapping[str, float] = field(default_factory=dict)

    def per_second(self, counter: str) -> float | None:
        if counter not in self.interval or self.interval_s <= 0:
            return None
        return self.interval[counter] / self.interval_s

    # Properties the metric catalogue reads (`pacer.<name>`).
    @property
    def packets_ps(self) -> float | None:
        return self.per_second("packets")

    @property
    def tcp_packets_ps(self) -> float | None:
        return self.per_second("tcp_packets")

    @property
    def coalesced_ps(self) -> float | None:
        return self.per_second("coalesced")

    @property
    def expired_ps(self) -> float | None:
        return self.per_second("expired")

    @property
    def answers_ps(self) -> float | None:
        return self.per_second("answers")

    @property
    def upstream_timeouts_ps(self) -> float | None:
        return self.per_second("upstream_timeouts")

    @property
    def packets_total(self) -> int | None:
        return self.totals.get("packets")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1, nearest rank) of `values`, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def render(stats: PacerStats) -> bytes:
    """The file's bytes for `stats` (what `read_pacer_stats` parses back)."""
    doc: dict[str, Any] = {"version": FORMAT_VERSION}
    for name in ("time", "pid", "started", "limit_pps", "rate_pps", "burst", "interval_s",
                 "queue_depth", "queue_live", "queue_prefetch", "queue_warm", "in_flight",
                 "wait_p50_ms", "wait_p99_ms", "warm_list", "warm_pending"):
        value = getattr(stats, name)
        doc[name] = round(value, 3) if isinstance(value, float) else value
    doc["totals"] = dict(stats.totals)
    doc["interval"] = dict(stats.interval)
    doc["top"] = [[t.name, t.qtype, t.packets, t.rcode, t.ttl, t.tcp, t.klass]
                  for t in stats.top]
    doc["classes"] = dict(stats.classes)
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _num(doc: Mapping[str, Any], key: str, kind: type, *, optional: bool = False) -> Any:
    value = doc.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PacerStatsError(f"field {key!r} is not a number")
    if not math.isfinite(value) or value < 0:
        raise PacerStatsError(f"field {key!r} out of range: {value!r}")
    if kind is int:
        if not isinstance(value, int):
            raise PacerStatsError(f"field {key!r} is not an integer")
        return value
    return float(value)


def _counters(doc: Mapping[str, Any], key: str) -> dict[str, int]:
    raw = doc.get(key)
    if not isinstance(raw, dict):
        raise PacerStatsError(f"field {key!r} is not an object")
    out: dict[str, int] = {}
    for name in COUNTERS:
        if name in raw:
            out[name] = _num(raw, name, int)
    return out


def _top(doc: Mapping[str, Any]) -> tuple[TopEntry, ...]:
    raw = doc.get("top", [])
    if not isinstance(raw, list):
        raise PacerStatsError("field 'top' is not a list")
    out = []
    for item in raw[:100]:
        if (not isinstance(item, list) or len(item) not in (6, 7)
                or not isinstance(item[0], str)
                or not isinstance(item[1], str) or not isinstance(item[2], int)
                or not isinstance(item[3], int) or not isinstance(item[5], bool)
                or not (item[4] is None or isinstance(item[4], int))
                or (len(item) == 7 and not isinstance(item[6], str))):
            raise PacerStatsError("an entry of 'top' is malformed")
        klass = item[6][:32] if len(item) == 7 else "other"
        out.append(TopEntry(item[0][:255], item[1][:16], item[2], item[3], item[4], item[5],
                            klass))
    return tuple(out)


def _classes(doc: Mapping[str, Any]) -> dict[str, float]:
    raw = doc.get("classes", {})
    if not isinstance(raw, dict) or len(raw) > 32:
        raise PacerStatsError("field 'classes' is not an object of at most 32 classes")
    out: dict[str, float] = {}
    for name in raw:
        if not isinstance(name, str) or not 0 < len(name) <= 32:
            raise PacerStatsError("field 'classes' has a bad class name")
        try:
            out[name] = _num(raw, name, float)
        except PacerStatsError as exc:
            raise PacerStatsError(f"field 'classes': {exc}") from None
    return out


def parse(data: bytes, source: str = "pacer stats") -> PacerStats:
    """Parse the file's bytes. Raises PacerStatsError naming `source`."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PacerStatsError(f"{source}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PacerStatsError(f"{source}: not a JSON object")
    if doc.get("version") != FORMAT_VERSION:
        raise PacerStatsError(f"{source}: unknown version {doc.get('version')!r}")
    try:
        return PacerStats(
            time=_num(doc, "time", float), pid=_num(doc, "pid", int),
            started=_num(doc, "started", float), limit_pps=_num(doc, "limit_pps", int),
            rate_pps=_num(doc, "rate_pps", float), burst=_num(doc, "burst", int),
            interval_s=_num(doc, "interval_s", float),
            queue_depth=_num(doc, "queue_depth", int), queue_live=_num(doc, "queue_live", int),
            queue_prefetch=_num(doc, "queue_prefetch", int),
            queue_warm=_num(doc, "queue_warm", int), in_flight=_num(doc, "in_flight", int),
            wait_p50_ms=_num(doc, "wait_p50_ms", float, optional=True),
            wait_p99_ms=_num(doc, "wait_p99_ms", float, optional=True),
            warm_list=_num(doc, "warm_list", int), warm_pending=_num(doc, "warm_pending", int),
            totals=_counters(doc, "totals"), interval=_counters(doc, "interval"),
            top=_top(doc), classes=_classes(doc))
    except PacerStatsError as exc:
        raise PacerStatsError(f"{source}: {exc}") from None


def read_pacer_stats(source: PathOrFile, *, now: float | None = None,
                     max_age: float = 5.0) -> PacerStats | None:
    """The pacer's latest statistics, or None when the pacer is not running (no file, or
    one older than `max_age` seconds by its own `time` against `now`, default time.time()).
    Raises PacerStatsError for a file over MAX_BYTES, not JSON, or with a bad field."""
    name = str(source) if isinstance(source, (str, Path)) else "pacer stats"
    try:
        data = read_source(source, MAX_BYTES)
    except ValueError as exc:
        raise PacerStatsError(f"{name}: {exc}") from None
    except OSError as exc:
        raise PacerStatsError(f"{name}: cannot read: {exc.strerror}") from None
    if data is None:
        return None
    stats = parse(data, name)
    current = time.time() if now is None else now
    if current - stats.time > max_age:
        return None
    return stats
