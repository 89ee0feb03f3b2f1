"""Upstream packets as EC2 counts them: the limit rule's nft counters in the vpc namespace.

Everything the instance sends to the resolver passes that rule, named's fetches and the
stubs' own fallback queries alike, so these counters (passed + dropped) are the figure the
1024 packets/s limit applies to. `UpstreamSampler` reads them once a second in a thread and
keeps each sample's time, so a caller can cut the series into phases afterwards.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rig import nft
from rig.vpc import SimulatedVpc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpstreamSample:
    """Packets that reached the limit rule between `start` and `end` (monotonic seconds)."""

    start: float
    end: float
    passed: int
    dropped: int

    @property
    def total(self) -> int:
        return self.passed + self.dropped

    @property
    def pps(self) -> float:
        return self.total / (self.end - self.start) if self.end > self.start else 0.0


def window(samples: Sequence[UpstreamSample], start: float, end: float) -> list[UpstreamSample]:
    """The samples whose midpoint lies in [start, end). Pure."""
    return [s for s in samples if start <= (s.start + s.end) / 2 < end]


class UpstreamSampler:
    """Samples the resolver's nft counters once per `interval` in a thread (a context
    manager). `rates` are packets/s per sample; `first`/`last` the readings at the ends."""

    def __init__(self, vpc: SimulatedVpc, interval: float = 1.0) -> None:
        self.vpc = vpc
        self.interval = interval
        self.samples: list[UpstreamSample] = []
        self.window = 0.0
        self.first: nft.NftCounters | None = None
        self.last: nft.NftCounters | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t = 0.0

    @property
    def rates(self) -> list[float]:
        return [s.pps for s in self.samples]

    def __enter__(self) -> UpstreamSampler:
        self.first = self.last = self.vpc.counters()
        self._t = time.monotonic()
        self._thread.start()
        return self

    def _take(self) -> None:
        cur, now = self.vpc.counters(), time.monotonic()
        assert self.last is not None
        dt = now - self._t
        if dt > 0.05:
            self.samples.append(UpstreamSample(
                self._t, now, cur.passed_packets - self.last.passed_packets,
                cur.dropped_packets - self.last.dropped_packets))
            self.window += dt
        self.last, self._t = cur, now

    def _loop(self) -> None:
        while not self._stop.wait(max(0.0, self._t + self.interval - time.monotonic())):
            try:
                self._take()
            except Exception:  # noqa: BLE001 - a lost sample must not kill the run
                log.exception("nft counter sample failed")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._take()
