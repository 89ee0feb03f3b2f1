"""The cache hit ratio second by second, read from named's statistics channel.

Worker: `ip netns exec NS python -m bench.cache_hits --seconds S [--until-stdin-closes]`
prints one JSON line per `--interval` with the monotonic time, named's boot time and its
QueryHits / QueryMisses (client lookups answered from the cache / not), or the error when
the channel does not answer (named stopped). Bounded by `--seconds` (≤ 300).

`per_second` turns those lines into hit ratios per interval. A restart of named resets the
counters; a sample whose boot time differs from the one before counts from zero. Pure.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_SECONDS = 300.0


@dataclass(frozen=True)
class HitInterval:
    """Client lookups named answered from its cache (`hits`) or not (`misses`) between
    `start` and `end` (monotonic seconds); `down` when the channel did not answer."""

    start: float
    end: float
    hits: int
    misses: int
    down: bool = False

    @property
    def ratio(self) -> float | None:
        n = self.hits + self.misses
        return self.hits / n if n else None


def per_second(samples: Sequence[dict[str, Any]]) -> list[HitInterval]:
    """Consecutive samples → intervals. After an unanswered sample, or when the boot time
    changed (named restarted), the next answered sample's counters count from zero."""
    out: list[HitInterval] = []
    prev: dict[str, Any] | None = None
    for cur in samples:
        if prev is not None:
            if "error" in cur:
                out.append(HitInterval(prev["t"], cur["t"], 0, 0, down=True))
            elif "error" in prev or prev.get("boot") != cur.get("boot"):
                out.append(HitInterval(prev["t"], cur["t"], int(cur["hits"]),
                                       int(cur["misses"]), down="error" in prev))
            else:
                out.append(HitInterval(prev["t"], cur["t"],
                                       max(0, int(cur["hits"]) - int(prev["hits"])),
                                       max(0, int(cur["misses"]) - int(prev["misses"]))))
        prev = cur
    return out


def ratio_between(intervals: Sequence[HitInterval], start: float,
                  end: float) -> float | None:
    """Hit ratio of the intervals whose midpoint lies in [start, end)."""
    sel = [iv for iv in intervals if start <= (iv.start + iv.end) / 2 < end]
    n = sum(iv.hits + iv.misses for iv in sel)
    return sum(iv.hits for iv in sel) / n if n else None


def seconds_to_ratio(intervals: Sequence[HitInterval], start: float, target: float,
                     horizon: float) -> float | None:
    """Seconds from `start` until the end of the first interval (within `horizon`) whose
    hit ratio is at least `target`, counting only intervals that had lookups; None if none."""
    for iv in intervals:
        if iv.end <= start or iv.start >= start + horizon:
            continue
        r = iv.ratio
        if r is not None and r >= target:
            return max(0.0, iv.end - start)
    return None


def sample(port: int) -> dict[str, Any]:
    """One reading (the shipped collector: JSON, falling back to XML)."""
    from dnscache_agent.errors import DnscacheError
    from dnscache_agent.stats.collector import BindStatsCollector

    t = time.monotonic()
    try:
        snap = BindStatsCollector(port, timeout=0.8).fetch()
    except DnscacheError as exc:
        return {"t": t, "error": str(exc)[:200]}
    return {"t": t, "boot": snap.boot_time, "hits": snap.cache.query_hits,
            "misses": snap.cache.query_misses}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cache_hits", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8053)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--until-stdin-closes", action="store_true")
    a = p.parse_args(argv)
    if not 0 < a.seconds <= MAX_SECONDS:
        p.error(f"--seconds must be in (0, {MAX_SECONDS:g}]")
    stop = threading.Event()
    if a.until_stdin_closes:
        def watch() -> None:
            sys.stdin.read()
            stop.set()

        threading.Thread(target=watch, daemon=True).start()
    end = time.monotonic() + a.seconds
    nxt = time.monotonic()
    while time.monotonic() < end and not stop.is_set():
        print(json.dumps(sample(a.port)), flush=True)
        nxt += a.interval
        stop.wait(max(0.0, nxt - time.monotonic()))
    print(json.dumps(sample(a.port)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
