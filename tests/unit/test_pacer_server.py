"""The pacer process's pure parts, without sockets: the adaptive receive batch, the stats
snapshot (interval deltas, wait percentiles) and the warm-list input."""
from __future__ import annotations

from pathlib import Path

from dnscache_agent.pacer import wire
from dnscache_agent.pacer.bucket import pacing_from_limit
from dnscache_agent.pacer.server import (
    BURST_GAP,
    RECV_BATCH,
    PacerConfig,
    PacerServer,
    _next_batch,
)


def test_receive_batch_stays_at_one_unless_a_burst_fills_it() -> None:
    assert _next_batch(1, 1, gap=0.001) == 1  # steady traffic: never an EAGAIN read
    assert _next_batch(1, 1, gap=BURST_GAP / 2) == 2  # a burst: read more per wake-up
    assert _next_batch(RECV_BATCH, RECV_BATCH, gap=0.0) == RECV_BATCH
    assert _next_batch(64, 3, gap=0.0) == 3  # drained early: read what came
    assert _next_batch(64, 0, gap=0.0) == 1


def server(tmp_path: Path) -> PacerServer:
    cfg = PacerConfig(listen="127.0.0.1", port=5354, upstreams=("192.0.2.53",),
                      pacing=pacing_from_limit(1024, 5, 4), stats_file=tmp_path / "s.json",
                      warm_file=tmp_path / "w.json", warm_seed=None, warm_max=10,
                      warm_via=None)
    return PacerServer(cfg, wallclock=lambda: 1_800_000_000.0)


def test_snapshot_reports_interval_deltas_and_wait_percentiles(tmp_path: Path) -> None:
    s = server(tmp_path)
    q = s.queue
    for i in range(4):
        q.ask(wire.build_query(i, f"n{i}.example.", 1) or b"", ("127.0.0.1", 1000 + i), 0.0)
    for t in (0.001, 0.002, 0.003, 0.100):
        e = q.pop(t)
        assert e is not None
        q.sent(e, t)
    first = s.snapshot(1.0, 1.0)
    assert first.queue_depth == 0 and first.in_flight == 4
    assert first.interval["sent_udp"] == 4 and first.packets_ps == 4
    assert first.wait_p50_ms == 2.0 and first.wait_p99_ms == 100.0
    second = s.snapshot(2.0, 1.0)
    assert second.interval["sent_udp"] == 0 and second.totals["sent_udp"] == 4
    assert second.wait_p99_ms is None and second.limit_pps == 1024 and second.burst == 4


def test_questions_asked_again_go_on_the_warm_list(tmp_path: Path) -> None:
    s = server(tmp_path)
    key = wire.question_key("db.example", 28)
    assert key is not None
    s._asked_again(key, 28)
    assert [(e.name, e.qtype) for e in s.warm.entries()] == [("db.example.", 28)]
