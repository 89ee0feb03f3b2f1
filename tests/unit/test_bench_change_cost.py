"""`python -m bench.change_cost`: cutting the lookups into phases, the goal, the daemon's
events per phase, and the generated section of docs/service.md, which must match the
committed results (docs/results/change-cost.json)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench import change_cost as cc
from bench.glibc_load import AGAIN, NEGATIVE, OK

REPO = Path(__file__).resolve().parents[2]


def test_phase_figures_charge_each_lookup_to_the_phase_it_was_due_in() -> None:
    # 10 lookups/s from t0 = 100: phase A holds lookups 0-9, phase B 10-19.
    windows = [cc.PhaseWindow("baseline", 100.0, 100.0, end=101.0),
               cc.PhaseWindow("kill", 101.0, 101.2, end=102.0, notes={"x": 1})]
    lat = [0.002] * 10 + [0.002] * 7 + [1.202, 0.5, -1.0]
    codes = [OK] * 10 + [OK] * 6 + [NEGATIVE, OK, OK, AGAIN]
    ups = [(100.0, 101.0, 400, 0), (101.0, 102.0, 900, 12)]
    base, kill = cc.phase_figures(windows, 100.0, 10.0, lat, codes, ups,
                                  [f"n{i}" for i in range(20)])
    assert (base.lookups, base.failed, base.p50) == (10, 0, 0.002)
    assert (kill.lookups, kill.failed, kill.failed_by) == (10, 1, {"EAI_AGAIN": 1})
    assert kill.max_added == pytest.approx(1.2)
    assert kill.slow_1s == 1 and kill.slowest[0] == (0.7, 1.202)
    assert kill.failures == [(0.9, "n19", "EAI_AGAIN")]
    assert (kill.upstream_packets, kill.upstream_peak_pps, kill.upstream_dropped) == (900, 900, 12)
    assert kill.action_seconds == pytest.approx(0.2) and kill.notes == {"x": 1}


def test_goal_needs_zero_failures_little_added_latency_and_a_final_rollback() -> None:
    ok = {"failed": 0, "max_added": 1.0, "notes": {}}
    assert cc.goal_met(ok)
    assert not cc.goal_met({**ok, "failed": 1})
    assert not cc.goal_met({**ok, "max_added": 1.5})
    assert not cc.goal_met({**ok, "notes": {"undone": True}})


def test_daemon_events_land_in_the_phase_they_happened_in() -> None:
    t = time.mktime(time.strptime("2026-12-02 01:37:00", "%Y-%m-%d %H:%M:%S"))
    windows = [cc.PhaseWindow("a", 0, 0, wall_start=t), cc.PhaseWindow("b", 0, 0,
                                                                         wall_start=t + 10)]
    log = ("2026-12-02 01:37:05,100 INFO dnscache_agent.daemon: repair: changed x; named "
           "reloaded\n"
           "2026-12-02 01:37:11,000 WARNING dnscache_agent.daemon: drift: named running: no\n"
           "2026-12-02 01:37:12,000 INFO dnscache_agent.daemon: statistics: answering\n"
           "garbage line\n")
    assert cc.daemon_events(log, windows) == {
        "a": ["changed x; named reloaded"], "b": ["named running: no"]}


def test_section_replaces_only_its_own_block() -> None:
    doc = json.loads((REPO / "docs" / "results" / "change-cost.json").read_text())
    section = cc.render_section(doc)
    assert section.startswith(cc.BEGIN) and section.rstrip().endswith(cc.END)
    merged = cc.merge_section("# S\n\nmine\n", section)
    assert merged.startswith("# S\n\nmine\n\n" + cc.BEGIN)
    again = cc.merge_section(merged + "\nafter\n", section.replace("baseline", "BASE"))
    assert again.count(cc.BEGIN) == 1 and "BASE" in again and again.rstrip().endswith("after")


def test_service_doc_section_matches_the_committed_results() -> None:
    """Regenerate with `python -m bench.change_cost --report-only
    docs/results/change-cost.json` after changing the committed results or the renderer."""
    doc = json.loads((REPO / "docs" / "results" / "change-cost.json").read_text())
    text = (REPO / "docs" / "service.md").read_text()
    assert cc.render_section(doc) in text, "docs/service.md change-cost section is stale"
    assert [ph["name"] for ph in doc["phases"]][:len(cc.PHASES)] == list(cc.PHASES)


def test_the_upgrade_wheel_is_one_patch_newer() -> None:
    from bench.upgrade_cost import bump_patch

    assert bump_patch("0.1.0") == "0.1.1"
    assert bump_patch("1.9.19") == "1.9.20"
    with pytest.raises(ValueError):
        bump_patch("0.1")


def test_an_unmeasured_phase_never_meets_the_goal() -> None:
    assert not cc.goal_met({"failed": 0, "max_added": None,
                            "notes": {"not_measured": "pacer unit failed"}})
