"""The packet budget: peaks per minute, warning and recovery with hysteresis."""
from __future__ import annotations

import logging

import pytest

from dnscache_agent.stats.budget import BudgetTracker


class Clock:
    def __init__(self, t: float = 6000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_minute_keeps_peak_second_and_mean() -> None:
    clock = Clock()
    b = BudgetTracker(1024, clock=clock)
    for pps in [100.0] * 59 + [1500.0]:
        b.record("eth0", pps)
        clock.t += 1
    b.record("eth0", 10.0)  # first second of the next minute closes the previous one
    (minute,) = b.minutes("eth0")
    assert minute.peak_pps == 1500.0 and minute.samples == 60
    assert minute.mean_pps == pytest.approx((59 * 100 + 1500) / 60)
    assert minute.min_headroom_ratio == pytest.approx((1024 - 1500) / 1024)
    st = b.status("eth0")
    assert st.pps == 10.0 and st.minute_peak_pps == 10.0


def test_one_warning_and_one_recovery(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    b = BudgetTracker(1000, warn_headroom_pct=20, recover_headroom_pct=30, clock=clock)
    caplog.set_level(logging.INFO, logger="dnscache_agent.stats.budget")
    kinds = []
    # 850 (15% headroom) warns; 71-81% use stays quiet; 690 (31%) recovers; 800 is not < 20%.
    for pps in [100, 850, 900, 790, 810, 750, 720, 690, 800, 690]:
        kinds += [e.kind for e in b.record("eth0", pps)]
        clock.t += 1
    assert kinds == ["warning", "recovery"]
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [lvl for lvl, _ in lines] == ["WARNING", "INFO"]
    assert "850 packets/s" in lines[0][1] and "690 packets/s" in lines[1][1]


def test_hysteresis_suppresses_flapping() -> None:
    b = BudgetTracker(1000, warn_headroom_pct=20, recover_headroom_pct=30, clock=Clock())
    events = []
    for pps in [850, 790, 810, 790, 810, 790, 650, 790, 800, 700]:
        events += b.record("eth0", pps)
    assert [e.kind for e in events] == ["warning", "recovery"]
    warning, recovery = events
    assert warning.pps == 850 and warning.headroom_ratio == pytest.approx(0.15)
    assert recovery.pps == 650 and "eth0" in recovery.message


def test_interfaces_are_independent_and_unknown_is_idle() -> None:
    b = BudgetTracker(1024, clock=Clock())
    assert b.record("eth0", 1100) and not b.record("eth1", 10)
    assert b.status("eth0").warning and not b.status("eth1").warning
    assert b.status("eth9").headroom_ratio == 1.0
    assert b.interfaces() == ("eth0", "eth1")


def test_bad_samples_count_as_zero_and_bad_limits_raise() -> None:
    b = BudgetTracker(1024, clock=Clock())
    b.record("eth0", float("nan"))
    assert b.status("eth0").pps == 0.0
    with pytest.raises(ValueError):
        BudgetTracker(0)
    with pytest.raises(ValueError):
        BudgetTracker(1024, warn_headroom_pct=30, recover_headroom_pct=10)
