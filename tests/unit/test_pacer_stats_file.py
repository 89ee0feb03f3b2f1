"""The pacer's stats file: written and read back, defensive on bad input, and flattened into
the one metric catalogue."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from dnscache_agent.pacer.files import replace_file
from dnscache_agent.pacer.stats_file import (
    MAX_BYTES,
    PacerStats,
    PacerStatsError,
    TopEntry,
    parse,
    percentile,
    read_pacer_stats,
    render,
)
from dnscache_agent.stats.catalogue import CATALOGUE, build_sample

NOW = 1_800_000_000.0


def stats(**over: object) -> PacerStats:
    base: dict[str, object] = dict(
        time=NOW, pid=42, started=NOW - 100, limit_pps=1024, rate_pps=967.8, burst=5,
        interval_s=0.5, queue_depth=12, queue_live=10, queue_prefetch=1, queue_warm=1,
        in_flight=3, wait_p50_ms=1.5, wait_p99_ms=850.0, warm_list=20, warm_pending=0,
        totals={"packets": 5000, "answers": 4900, "sent_udp": 4990, "tcp_packets": 10},
        interval={"packets": 480, "tcp_packets": 5, "coalesced": 7, "expired": 2,
                  "answers": 470, "upstream_timeouts": 1},
        top=(TopEntry("a.example.", "A", 12, 0, 5, False, "short-ttl"),),
        classes={"short-ttl": 2.5, "tcp-fallback": 0.1})
    base.update(over)
    return PacerStats(**base)  # type: ignore[arg-type]


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "run" / "stats.json"
    replace_file(path, render(stats()))
    back = read_pacer_stats(path, now=NOW + 1)
    assert back == stats()
    assert back is not None and back.packets_ps == 960 and back.expired_ps == 4


def test_missing_or_stale_file_means_not_running(tmp_path: Path) -> None:
    assert read_pacer_stats(tmp_path / "none.json", now=NOW) is None
    path = tmp_path / "stats.json"
    path.write_bytes(render(stats()))
    assert read_pacer_stats(path, now=NOW + 5.0) is not None
    assert read_pacer_stats(path, now=NOW + 5.1) is None


@pytest.mark.parametrize("content", [
    b"", b"not json", b"[]", b"\xff", b'{"version": 2}', b'{"version": 1}',
    b"[" * 100000,
])
def test_bad_content_raises_one_line_naming_the_file(content: bytes) -> None:
    with pytest.raises(PacerStatsError) as err:
        read_pacer_stats(io.BytesIO(content), now=NOW)
    assert str(err.value).startswith("pacer stats: ") and "\n" not in str(err.value)


@pytest.mark.parametrize(("field", "value"), [
    ("queue_depth", "12"), ("queue_depth", True), ("queue_depth", -1), ("queue_depth", 1.5),
    ("time", None), ("wait_p99_ms", "slow"), ("totals", []),
])
def test_bad_fields_are_rejected(field: str, value: object) -> None:
    doc = json.loads(render(stats()))
    doc[field] = value
    with pytest.raises(PacerStatsError, match=field):
        parse(json.dumps(doc).encode())


def test_bad_counters_and_top_are_rejected() -> None:
    doc = json.loads(render(stats()))
    doc["interval"]["packets"] = "many"
    with pytest.raises(PacerStatsError, match="packets"):
        parse(json.dumps(doc).encode())
    doc = json.loads(render(stats()))
    doc["top"] = [["a.", "A", "x", 0, None, False]]
    with pytest.raises(PacerStatsError, match="top"):
        parse(json.dumps(doc).encode())
    for classes in ({"x": "fast"}, {"": 1.0}, [], {f"c{i}": 1 for i in range(40)}):
        doc = json.loads(render(stats()))
        doc["classes"] = classes
        with pytest.raises(PacerStatsError, match="classes"):
            parse(json.dumps(doc).encode())


def test_six_field_top_entries_and_missing_classes_still_parse() -> None:
    doc = json.loads(render(stats()))
    doc["top"] = [["a.", "A", 3, 0, None, True]]
    del doc["classes"]
    back = parse(json.dumps(doc).encode())
    assert back.top[0].klass == "other" and back.classes == {}


def test_oversized_file_is_rejected_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    path.write_bytes(b" " * (MAX_BYTES + 1))
    with pytest.raises(PacerStatsError, match="larger than"):
        read_pacer_stats(path, now=NOW)


def test_unknown_counters_are_ignored_and_nulls_allowed() -> None:
    doc = json.loads(render(stats(wait_p50_ms=None, wait_p99_ms=None)))
    doc["totals"]["something_new"] = 3
    back = parse(json.dumps(doc).encode())
    assert "something_new" not in back.totals and back.wait_p99_ms is None


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0


def test_catalogue_reads_every_pacer_figure() -> None:
    sample = build_sample(NOW, pacer=stats())
    pacer_keys = {m.key for m in CATALOGUE
                  if m.getter.startswith("pacer.") and not m.getter.startswith("pacer.classes")}
    assert pacer_keys <= set(sample.host)
    assert sample.host["pacer_queue_depth"] == 12
    assert sample.host["pacer_packets_ps"] == 960
    assert sample.host["pacer_packets_total"] == 5000
    assert sample.host["pacer_wait_p99_ms"] == 850
    assert sample.host["pacer_coalesced_ps"] == 14
    assert sample.host["pacer_upstream_timeouts_ps"] == 2
    assert sample.host["upstream_short_ttl_pps"] == 2.5  # helper D's classes, by class
    assert not pacer_keys & set(build_sample(NOW).host)  # no pacer: no figures
