"""Pure parts of the glibc bench mode: outcome classes, the open-loop pool, the summary, the
questions getaddrinfo asks (for the compulsory minimum), hit ratios across a restart, and
the report's glibc and restart tables."""
from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from bench import glibc_load as gl
from bench import report
from bench.cache_hits import per_second, ratio_between, seconds_to_ratio
from bench.minimum import fetch_times, getaddrinfo_questions, lookup_phase


def test_classify_tells_answers_from_failures() -> None:
    assert gl.classify(None) == gl.OK
    assert gl.classify(socket.gaierror(socket.EAI_NONAME, "x")) == gl.NEGATIVE
    assert gl.classify(socket.gaierror(socket.EAI_AGAIN, "x")) == gl.AGAIN
    assert gl.classify(socket.gaierror(socket.EAI_FAIL, "x")) == gl.FAIL
    assert gl.classify(OSError("boom")) == gl.ERROR
    assert gl.NEGATIVE not in gl.FAILED_CODES and gl.AGAIN in gl.FAILED_CODES


def test_summarize_counts_failures_as_infinite_latency() -> None:
    codes = [gl.OK] * 97 + [gl.NEGATIVE, gl.AGAIN, gl.UNFINISHED]
    lat = [0.001] * 98 + [4.0, -1.0]
    lags = [0.0] * 100
    r = gl.summarize(100.0, 1.0, 5.0, lat, codes, lags, threads_peak=7, max_threads=50)
    assert (r.sent, r.answered, r.failed) == (100, 98, 2)
    assert r.outcomes == {"ok": 97, "negative": 1, "EAI_AGAIN": 1, "unfinished": 1}
    assert r.p50 == 0.001 and r.p99 is None  # 2% failed: no finite p99
    assert r.failed_indexes == [98, 99]
    assert r.per_second_sent == [100, 0] and r.per_second_failed == [2, 0]
    assert r.threads_peak == 7 and r.t0_monotonic == 5.0


def test_summarize_reports_the_rate_lookups_actually_started() -> None:
    # 10 lookups due over 0.1 s, but the last one started 0.9 s late: 10 in ~1 s.
    lags = [0.0] * 9 + [0.9]
    r = gl.summarize(100.0, 0.1, 0.0, [0.01] * 10, [gl.OK] * 10, lags, 1, 1)
    assert r.achieved_qps == pytest.approx(10 / 0.99)
    never = gl.summarize(100.0, 0.1, 0.0, [-1.0] * 10, [gl.NOT_STARTED] * 10, [-1.0] * 10, 1, 1)
    assert never.failed == 10 and never.achieved_qps == 0.0


def test_thread_limit_stays_under_the_open_files_limit() -> None:
    assert gl.thread_limit(7500, 20000) == 7500
    assert gl.thread_limit(7500, 1024) == 1024 - gl.FD_RESERVE
    assert gl.thread_limit(50000, 10**6) == gl.MAX_THREADS
    assert gl.thread_limit(0, 10) == 1


def test_parse_names_drops_types_and_trailing_dots() -> None:
    assert gl.parse_names("h1.vpc.test. A\nh2.vpc.test AAAA\n\nvpc.test. MX\n") == [
        "h1.vpc.test", "h2.vpc.test", "vpc.test"]


def test_pool_grows_when_no_thread_is_idle_and_records_lag() -> None:
    """Open loop: blocked lookups do not hold back the next one, up to the bound."""
    gate = threading.Event()
    pool = gl.OpenLoopPool(lambda i: gate.wait(5) and gl.OK, total=6, max_threads=4)
    now = time.monotonic()
    for i in range(6):
        pool.submit(i, now)
    time.sleep(0.2)
    assert pool.threads == 4  # bounded: two lookups wait for a thread
    assert sum(1 for x in pool.start_lag if x >= 0) == 4
    gate.set()
    assert pool.wait_all(6, time.monotonic() + 5)
    assert list(pool.codes) == [gl.OK] * 6
    assert all(x >= 0 for x in pool.latency)


def test_run_load_with_an_injected_lookup_is_bounded_and_complete() -> None:
    seen: list[str] = []
    r = gl.run_load(["a.test", "b.test"], 200.0, 0.05, drain=2.0,
                    fn=lambda n: seen.append(n) or gl.OK)
    assert r.sent == 10 and r.failed == 0 and len(seen) == 10
    assert seen[:2] == ["a.test", "b.test"]
    with pytest.raises(ValueError):
        gl.run_load(["a"], 10.0, 301.0)


def test_run_load_stops_when_asked() -> None:
    stop = threading.Event()
    stop.set()
    r = gl.run_load(["a.test"], 100.0, 10.0, fn=lambda n: gl.OK, stop=stop)
    assert r.sent == 0


# --------------------------------------------------------------------- getaddrinfo questions

def test_getaddrinfo_asks_a_and_aaaa_then_the_search_list_only_without_data() -> None:
    answered = {("h1.vpc.test", "A")}
    assert getaddrinfo_questions("h1.vpc.test", answered, ("ec2.internal",)) == [
        ("h1.vpc.test", "A"), ("h1.vpc.test", "AAAA")]
    assert getaddrinfo_questions("nx1.vpc.test", answered, ("ec2.internal",)) == [
        ("nx1.vpc.test", "A"), ("nx1.vpc.test", "AAAA"),
        ("nx1.vpc.test.ec2.internal", "A"), ("nx1.vpc.test.ec2.internal", "AAAA")]


def test_lookup_phase_fetches_each_question_once_per_ttl() -> None:
    answered = {("h1.vpc.test", "A")}
    ph = lookup_phase(0.0, 10.0, ["h1.vpc.test", "h1.vpc.test", "nx.vpc.test"], answered,
                      ("ec2.internal",))
    assert ph.offsets == [0.0, 0.0, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2]
    ttls = {("h1.vpc.test", "A"): 60, ("h1.vpc.test", "AAAA"): 30}
    (times,) = fetch_times([ph], ttls, default_ttl=30)
    assert times == [0.0, 0.0, 0.2, 0.2, 0.2, 0.2]


# --------------------------------------------------------------------- hit ratio

def _s(t: float, boot: str | None, hits: int = 0, misses: int = 0) -> dict[str, Any]:
    if boot is None:
        return {"t": t, "error": "refused"}
    return {"t": t, "boot": boot, "hits": hits, "misses": misses}


def test_hit_ratio_counts_from_zero_after_a_restart() -> None:
    samples = [_s(0, "b1", 100, 100), _s(1, "b1", 190, 110), _s(2, None),
               _s(3, "b2", 5, 15), _s(4, "b2", 95, 25)]
    iv = per_second(samples)
    assert [(i.hits, i.misses, i.down) for i in iv] == [
        (90, 10, False), (0, 0, True), (5, 15, True), (90, 10, False)]
    assert ratio_between(iv, 0, 1.0) == 0.9
    assert ratio_between(iv, 2.0, 4.0) == pytest.approx(95 / 120)
    assert seconds_to_ratio(iv, 2.0, 0.9, 10.0) == 2.0
    assert seconds_to_ratio(iv, 2.0, 0.95, 10.0) is None


# --------------------------------------------------------------------- report

def _glibc_phase(peer: str, scenario: str, qps: int, failed: int, **extra: Any) -> dict[str, Any]:
    return {"peer": peer, "label": peer, "scenario": scenario, "qps": qps, "seconds": 5.0,
            "mode": "glibc", "minimum": 100, "upstream_total": 100, "upstream_passed": 100,
            "upstream_dropped": 0, "upstream_pps": [100.0], "upstream_window": 5.0,
            "load": {"sent": 1000, "answered": 1000 - failed, "failed": failed,
                     "outcomes": {"ok": 1000 - failed, "EAI_AGAIN": failed},
                     "p50": 0.001, "p99": 0.01 if failed < 10 else None,
                     "achieved_qps": float(qps), "threads_peak": 3, "timeout": 10.0},
            "extra": extra}


def test_report_judges_glibc_phases_and_marks_the_warm_list_pending() -> None:
    doc = {"budget_pps": 1024, "cpus": 2,
           "config": {"restart_window": 10.0},
           "phases": [_glibc_phase("agent", "cold", 2000, 40),
                      _glibc_phase("agent", "warm", 2000, 0),
                      _glibc_phase("agent", "restart", 2000, 0, warm_list=False,
                                   seconds_to_90pct=3.0, hit_ratio_before=0.95,
                                   hit_ratio_window=0.9, named_down_s=2.5)]}
    goals = {g: (m, ok) for g, m, ok in report.goals(doc)}
    zero = goals["0 failed lookups cold and warm at 400/2000/5000/s (glibc)"]
    assert zero == ("cold 2000: 40", False)
    restart = next(v for k, v in goals.items() if k.startswith("restart under load"))
    assert restart == ("warm list off: 0 failed, hits 95% before, back after 3.0 s", True)
    table = report.render_restart(doc)
    assert "| agent | off | 2000 | 0 of 1000 |" in table
    assert "| 3.0 | not within 10 s |" in table
    assert "pending: `--warm-list`" in table
    assert "| cold | 2000 | 2000 | agent | 4.00 | 40 | 0 |" in report.render_glibc_table(doc)


def test_upstream_summary_from_cumulative_counter_readings() -> None:
    s = gl.upstream_summary([(10.0, 100, 0), (11.0, 600, 0), (12.0, 1100, 400)])
    assert s == {"upstream_packets": 1400, "upstream_dropped": 400,
                 "upstream_mean_pps": 700.0, "upstream_peak_pps": 900.0}
    assert gl.upstream_summary([(1.0, 5, 5)])["upstream_packets"] == 0
