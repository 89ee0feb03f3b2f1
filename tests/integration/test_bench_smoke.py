"""The benchmark harness in --smoke mode, end to end, so it cannot rot.

Asserts the structure of what it produces (phases per peer, mode and scenario, counts that
add up, the compulsory minimum, the glibc mode and the restart scenario, the docs block and
PNG), never wall-clock figures.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench.run import SMOKE
from tests.integration.conftest import rig_unavailable_reason
from tests.machinery import skip_or_fail

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:  # type: ignore[type-arg]
    reason = rig_unavailable_reason()
    if reason:
        skip_or_fail(reason)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        skip_or_fail("the bench extra (matplotlib) draws the plot: pip install .[bench]")
    out = tmp_path_factory.mktemp("bench")
    docs = out / "docs"
    cp = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--results-dir", str(out / "results"),
         "--docs-dir", str(docs)],
        cwd=REPO, capture_output=True, text=True, timeout=420)
    assert cp.returncode == 0, cp.stderr[-3000:]
    doc = json.loads((out / "results" / "latest-smoke.json").read_text())
    return doc, docs


def test_every_peer_runs_every_scenario(smoke: tuple[dict, Path]) -> None:  # type: ignore[type-arg]
    doc, _ = smoke
    udp = {(ph["peer"], ph["scenario"], ph["qps"]) for ph in doc["phases"]
           if ph["mode"] == "udp"}
    want = {(p, "cold", q) for p in SMOKE.peers for q in SMOKE.rates}
    # Without a cache, warm is cold again: only caches get the warm session.
    want |= {(p, "warm", q) for p in SMOKE.peers if p != "nocache" for q in SMOKE.rates}
    want |= {(p, s, SMOKE.degraded_qps) for p in SMOKE.peers
             for s in ("warmup", "throttled", "blackholed")}
    assert udp == want
    glibc = {(ph["peer"], ph["scenario"], ph["qps"]) for ph in doc["phases"]
             if ph["mode"] == "glibc"}
    want = {(p, "cold", q) for p in SMOKE.peers for q in SMOKE.glibc_rates}
    want |= {(p, "warm", q) for p in SMOKE.peers if p != "nocache" for q in SMOKE.glibc_rates}
    want |= {(p, "warmup", SMOKE.degraded_qps) for p in SMOKE.peers if p != "nocache"}
    want |= {("agent", "restart", SMOKE.restart_qps)}
    assert glibc == want


def test_counts_add_up(smoke: tuple[dict, Path]) -> None:  # type: ignore[type-arg]
    doc, _ = smoke
    for ph in doc["phases"]:
        if ph["mode"] != "udp":
            continue
        load = ph["load"]
        assert load["sent"] == int(ph["qps"] * ph["seconds"]), ph["scenario"]
        assert load["answered"] + load["lost"] == load["sent"]
        assert sum(load["rcodes"].values()) == load["answered"]
        assert ph["upstream_total"] == ph["upstream_passed"] + ph["upstream_dropped"]
        assert ph["upstream_pps"], "no per-second upstream samples"
        assert 0 < ph["minimum"] <= load["sent"]


def test_no_cache_sends_every_query_upstream(smoke: tuple[dict, Path]) -> None:  # type: ignore[type-arg]
    doc, _ = smoke
    cold = next(ph for ph in doc["phases"] if ph["peer"] == "nocache" and ph["scenario"] == "cold")
    assert cold["upstream_total"] >= cold["load"]["sent"]
    assert cold["load"]["lost"] == 0  # 400 qps is under the limit


def test_blackholed_resolver_fails_without_cache(smoke: tuple[dict, Path]) -> None:  # type: ignore[type-arg]
    doc, _ = smoke
    bh = next(ph for ph in doc["phases"] if ph["peer"] == "nocache"
              and ph["scenario"] == "blackholed")
    assert report.failed(bh) == bh["load"]["sent"]
    assert bh["upstream_passed"] == 0


def test_agent_cache_cuts_upstream_and_serves_stale(smoke: tuple[dict, Path]) -> None:  # type: ignore[type-arg]
    doc, _ = smoke
    by = {(ph["peer"], ph["scenario"]): ph for ph in doc["phases"]}
    agent, direct = by[("agent", "warm")], by[("nocache", "cold")]
    assert report.failed(agent) == 0
    assert agent["upstream_total"] < direct["upstream_total"]
    bh = by[("agent", "blackholed")]
    assert bh["cached_queries"] > 0
    assert bh["cached_failed"] < bh["cached_queries"]


def test_docs_block_and_plot_are_written(smoke: tuple[dict, Path]) -> None:  # type: ignore[type-arg]
    doc, docs = smoke
    md = (docs / "benchmarks.md").read_text()
    assert report.BEGIN in md and report.END in md
    assert "| goal | measured | met |" in md
    table = md[md.index("### Every resolver, every phase (raw UDP)"):
               md.index("### Against the baselines")]
    assert table.count("| cold | 400 |") == len(SMOKE.peers)
    side = md[md.index("### Both modes side by side"):md.index("### named restarted")]
    assert side.count("| cold | 400 |") == len(SMOKE.peers)
    assert (docs / "benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Regenerating keeps hand-written text outside the markers.
    (docs / "benchmarks.md").write_text("# B\n\nintro\n\n" + md[md.index(report.BEGIN):]
                                        + "\nafter\n")
    report.write_docs(doc, docs)
    again = (docs / "benchmarks.md").read_text()
    assert again.startswith("# B\n\nintro\n") and again.rstrip().endswith("after")


def test_glibc_mode_counts_are_consistent(smoke: tuple[dict, Path]) -> None:  # type: ignore[type-arg]
    """Every lookup has one outcome; the pool reports what it did; upstream was sampled at
    the limit rule and includes the stubs' own packets (no cache: at least A + AAAA)."""
    doc, _ = smoke
    phases = [ph for ph in doc["phases"] if ph["mode"] == "glibc" and ph["scenario"] != "restart"]
    assert phases
    for ph in phases:
        load = ph["load"]
        assert load["sent"] == int(ph["qps"] * ph["seconds"]), ph["scenario"]
        assert sum(load["outcomes"].values()) == load["sent"]
        assert load["answered"] + load["failed"] == load["sent"]
        assert 1 <= load["threads_peak"] <= load["max_threads"]
        assert load["achieved_qps"] > 0
        assert ph["upstream_pps"], "no per-second upstream samples"
        assert ph["upstream_total"] == ph["upstream_passed"] + ph["upstream_dropped"]
        assert ph["minimum"] > 0
    direct = next(ph for ph in phases if ph["peer"] == "nocache" and ph["scenario"] == "cold")
    assert direct["upstream_total"] >= 2 * direct["load"]["answered"]
    cached = next(ph for ph in phases if ph["peer"] == "agent" and ph["scenario"] == "warm")
    assert cached["upstream_total"] < direct["upstream_total"]


def test_restart_scenario_reports_window_and_hit_ratio(smoke: tuple[dict, Path]) -> None:  # type: ignore[type-arg]
    doc, docs = smoke
    rs = [ph for ph in doc["phases"] if ph["scenario"] == "restart"]
    assert len(rs) == 1 and not rs[0]["extra"]["warm_list"]
    r = rs[0]
    assert r["load"]["sent"] > 0
    assert r["load"]["answered"] + r["load"]["failed"] == r["load"]["sent"]
    assert r["extra"]["named_down_s"] > 0
    ratios = [x for x in r["extra"]["hit_ratio_per_second"] if x is not None]
    assert ratios and all(0.0 <= x <= 1.0 for x in ratios)
    md = (docs / "benchmarks.md").read_text()
    assert "### named restarted under load" in md
    assert "pending: `--warm-list`" in md
