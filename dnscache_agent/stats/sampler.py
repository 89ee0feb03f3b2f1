"""One sample a second: bind's statistics channel, ENA counters and the per-interface budget,
flattened through the metric catalogue. Shared by `stats`, `stats --watch` and the daemon, so
all three report the same figures. Collaborators and the clock are injected."""

from __future__ import annotations

import logging
import time
from typing import Callable

from ..pacer.stats_file import PacerStats, PacerStatsError
from .bind_stats import BindSnapshot
from .budget import BudgetEvent, BudgetTracker
from .catalogue import Sample, build_sample
from .collector import BindStatsCollector
from .ena import EnaCounters, EnaDelta, EthtoolReader, OptionalEnaReader, ena_delta
from .rates import Rates, compute_rates

#: Reads the pacer's stats file: its latest figures, or None when it is not running.
PacerReader = Callable[[], "PacerStats | None"]

log = logging.getLogger(__name__)


class Sampler:
    """Call `sample()` about once a second; the first call only primes the counters."""

    def __init__(self, collector: BindStatsCollector, ethtool: EthtoolReader | OptionalEnaReader,
                 budget: BudgetTracker, *, upstream_interface: str,
                 interfaces: tuple[str, ...], clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 pacer: PacerReader | None = None) -> None:
        self.collector = collector
        self.pacer = pacer
        self._pacer_error: str | None = None
        self._pacer_prev: tuple[float, int] | None = None
        self._pacer_last_pps: float | None = None
        self.ethtool = ethtool
        self.budget = budget
        self.upstream_interface = upstream_interface
        self.interfaces = tuple(dict.fromkeys((upstream_interface, *interfaces)))
        self.clock = clock
        self.monotonic = monotonic
        self._prev: tuple[float, BindSnapshot, dict[str, EnaCounters]] | None = None
        self.last: Sample | None = None
        self.last_rates: Rates | None = None
        self.events: list[BudgetEvent] = []

    def sample(self) -> Sample | None:
        """Read everything once; returns a Sample from the second call on.
        Raises StatsUnavailableError when named's statistics channel does not answer."""
        now = self.monotonic()
        snap = self.collector.fetch()
        ena = self.ethtool.read_all(list(self.interfaces))
        prev, self._prev = self._prev, (now, snap, ena)
        if prev is None:
            return None
        then, prev_snap, prev_ena = prev
        elapsed = max(now - then, 1e-3)
        rates = compute_rates(prev_snap, snap, elapsed)
        pacer = self._read_pacer()
        # With the pacer running, named's upstream is the pacer on loopback: what leaves the
        # interface is what the pacer sent.
        upstream = rates.upstream_pps
        pacer_pps = self._pacer_rate(pacer)
        if pacer_pps is not None:
            upstream = pacer_pps
        self.events = self.budget.record(self.upstream_interface, upstream)
        deltas: dict[str, EnaDelta] = {
            name: ena_delta(prev_ena[name], ena[name], elapsed)
            for name in ena if name in prev_ena
        }
        self.last_rates = rates
        self.last = build_sample(self.clock(), rates=rates, snapshot=snap,
                                 budgets=self.budget.statuses(), ena=deltas, pacer=pacer)
        return self.last

    def _pacer_rate(self, pacer: PacerStats | None) -> float | None:
        """Packets/s the pacer sent since the previous reading, from its running total and
        its own timestamps: its file is rewritten once a second, out of phase with this
        sampler, so its per-interval figure would be counted twice or missed now and then.
        The same file read twice keeps the last rate; a restart (total went down) starts
        over from its figure."""
        if pacer is None:
            return None
        total = pacer.totals.get("packets")
        if total is None:
            return pacer.packets_ps
        prev, self._pacer_prev = self._pacer_prev, (pacer.time, total)
        if prev is None or total < prev[1]:
            self._pacer_last_pps = pacer.packets_ps
        elif pacer.time > prev[0]:
            self._pacer_last_pps = (total - prev[1]) / (pacer.time - prev[0])
        return self._pacer_last_pps

    def _read_pacer(self) -> PacerStats | None:
        """The pacer's figures; a bad stats file is logged once and treated as absent."""
        if self.pacer is None:
            return None
        try:
            stats = self.pacer()
        except PacerStatsError as exc:
            if str(exc) != self._pacer_error:
                log.warning("%s", exc)
                self._pacer_error = str(exc)
            return None
        self._pacer_error = None
        return stats
