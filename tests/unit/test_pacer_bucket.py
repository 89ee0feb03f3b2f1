"""The pacer's rate: derived from the limit with a margin, and never more than the ceiling in
any sliding 1 s window, whatever the arrival pattern (injected clock, the real scheduler)."""
from __future__ import annotations

import bisect
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnscache_agent.pacer.bucket import Pacing, TokenBucket, pacing_from_limit
from dnscache_agent.pacer.queue import PacerQueue, Priority, QueueLimits
from dnscache_agent.pacer.scheduler import Scheduler
from dnscache_agent.pacer.wire import build_query


def test_pacing_from_limit_keeps_burst_plus_rate_under_the_margin() -> None:
    p = pacing_from_limit(1024, 5.0, 5)
    assert p.ceiling == pytest.approx(1024 * 0.95)
    assert p.rate == pytest.approx(1024 * 0.95 - 5)
    assert p.ceiling <= 1024


@pytest.mark.parametrize(("limit", "margin", "burst"), [(0, 5, 5), (1024, 100, 5),
                                                         (1024, 5, 0), (10, 50, 5)])
def test_pacing_rejects_impossible_combinations(limit: int, margin: float, burst: int) -> None:
    with pytest.raises(ValueError):
        pacing_from_limit(limit, margin, burst)


def test_bucket_starts_full_and_refills_at_rate() -> None:
    b = TokenBucket(100.0, 5, now=0.0)
    assert all(b.take(0.0) for _ in range(5))
    assert not b.take(0.0)
    assert b.time_until(0.0) == pytest.approx(0.01)
    assert not b.take(0.009)
    assert b.take(0.0101)
    assert b.available(10.0) == 5  # capped at the capacity


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """Most events in any closed interval [t, t + window]."""
    times = sorted(times)
    best = 0
    for i, t in enumerate(times):
        best = max(best, bisect.bisect_right(times, t + window + 1e-12) - i)
    return best


def drive(pacing: Pacing, arrivals: list[tuple[float, int]], until: float) -> list[float]:
    """Feed `count` distinct questions at each arrival time to the real scheduler, pumping it
    at every arrival and every wake-up it asks for; returns the send times."""
    # Nothing is given up here: this is about the rate alone.
    q = PacerQueue(QueueLimits(give_up_after_ask=1e9, max_age=1e9, first_retry=1e9))
    sched = Scheduler(q, pacing, now=0.0)
    sent: list[float] = []
    events = sorted(arrivals)
    i, n, now = 0, 0, 0.0
    while now <= until:
        while i < len(events) and events[i][0] <= now:
            for _ in range(events[i][1]):
                n += 1
                q.ask(build_query(n & 0xFFFF, f"h{n}.example.", 1) or b"", ("c", n), now)
            i += 1
        sends, _ = sched.pump(now)
        sent += [now] * len(sends)
        nxt = [t for t in (sched.next_wakeup(now),
                           events[i][0] if i < len(events) else None) if t is not None]
        if not nxt:
            break
        now = max(min(nxt), now + 1e-6)
    return sent


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 4.0), st.integers(1, 400)), min_size=1, max_size=40),
       st.sampled_from([(1024, 5.0, 5), (1024, 0.0, 1), (100, 10.0, 8), (50, 0.0, 10)]))
def test_no_sliding_window_exceeds_the_ceiling(arrivals: list[tuple[float, int]],
                                               params: tuple[int, float, int]) -> None:
    pacing = pacing_from_limit(*params)
    sent = drive(pacing, arrivals, until=6.0)
    assert max_in_window(sent) <= math.floor(pacing.ceiling + 1e-9) <= pacing.limit_pps


def test_a_backlog_drains_at_the_full_rate() -> None:
    pacing = pacing_from_limit(1024, 5.0, 5)
    sent = drive(pacing, [(0.0, 5000)], until=3.0)
    # burst + 3 s at the rate, less the batch still filling when the run stops
    assert len(sent) >= int(pacing.burst + 3 * pacing.rate) - (pacing.burst - 1)
    assert max_in_window(sent) <= math.floor(pacing.ceiling)


def test_random_greedy_takes_never_exceed_the_ceiling() -> None:
    import random

    rng = random.Random(7)
    pacing = pacing_from_limit(1024, 5.0, 5)
    b = TokenBucket(pacing.rate, pacing.burst, now=0.0)
    t, sent = 0.0, []
    while t < 5.0:
        t += rng.expovariate(3000)
        while b.take(t):
            sent.append(t)
    assert max_in_window(sent) <= math.floor(pacing.ceiling)


def test_warm_up_waits_for_spare_tokens_and_live_goes_first() -> None:
    pacing = pacing_from_limit(1024, 5.0, 5)
    q = PacerQueue()
    sched = Scheduler(q, pacing, now=0.0)
    q.mark_warming("w.example.", 1, 0.0)
    q.ask(build_query(1, "w.example.", 1) or b"", ("n", 1), 0.0)
    q.ask(build_query(2, "live.example.", 1) or b"", ("n", 2), 0.0)
    sends, _ = sched.pump(0.0)
    assert [s.priority for s in sends] == [Priority.LIVE, Priority.WARM]
    # with one token left (the reserve), a warm-up question waits
    sched.bucket.tokens = 1.0
    q.mark_warming("w2.example.", 1, 0.0)
    q.ask(build_query(3, "w2.example.", 1) or b"", ("n", 3), 0.0)
    assert sched.pump(0.0)[0] == []
    assert not sched.spare(0.0)
    wake = sched.next_wakeup(0.0)
    assert wake is not None and wake == pytest.approx(1 / pacing.rate)


def test_tcp_collects_its_tokens_before_udp() -> None:
    pacing = pacing_from_limit(1024, 5.0, 5)
    q = PacerQueue()
    sched = Scheduler(q, pacing, now=0.0, tcp_cost=5)
    sched.bucket.tokens = 3.0
    ticket = sched.request_tcp()
    q.ask(build_query(1, "a.example.", 1) or b"", ("n", 1), 0.0)
    sends, grants = sched.pump(0.0)
    assert sends == [] and grants == [] and ticket.collected == 3
    sends, grants = sched.pump(2.5 / pacing.rate)
    assert grants == [ticket] and ticket.granted and sends == []
    assert q.counters.tcp_packets == 5 and q.counters.packets == 5
