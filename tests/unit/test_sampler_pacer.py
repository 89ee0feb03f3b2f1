"""The budget charges what the pacer sent, from its running total: its file is rewritten once a
second, out of phase with the sampler, so its per-interval figure alone would double count a
second (the same file read twice) or miss one (a file replaced twice between reads)."""

from __future__ import annotations

from typing import Any

from dnscache_agent.pacer.stats_file import PacerStats
from dnscache_agent.stats.budget import BudgetTracker
from dnscache_agent.stats.sampler import Sampler


def stats(t: float, total: int, interval_pps: float) -> PacerStats:
    return PacerStats(
        time=t, pid=1, started=0.0, limit_pps=1024, rate_pps=968.8, burst=4, interval_s=1.0,
        queue_depth=0, queue_live=0, queue_prefetch=0, queue_warm=0, in_flight=0,
        wait_p50_ms=None, wait_p99_ms=None, warm_list=0, warm_pending=0,
        totals={"packets": total}, interval={"packets": int(interval_pps)})


def test_rates_come_from_the_running_total_over_the_pacer_s_own_time() -> None:
    none: Any = None
    sampler = Sampler(none, none, BudgetTracker(1024), upstream_interface="eth0",
                      interfaces=())
    readings = [stats(10.0, 1000, 150), stats(11.0, 1150, 150), stats(11.0, 1150, 150),
                stats(13.0, 1450, 150), stats(14.0, 1600, 150), stats(2.0, 40, 40)]
    rates = [sampler._pacer_rate(r) for r in readings]
    # first: its own figure; the same file twice: the last rate again; two seconds between
    # reads: their average; a restart (the total went down): its own figure again.
    assert rates == [150, 150, 150, 150, 150, 40]
    assert sum(rates[1:5]) * 1.0 == 600  # == what the pacer sent from t=10 to t=14
    assert sampler._pacer_rate(None) is None
