"""The warm list: bounded LRU, atomic save and defensive load, seed parsing and merge order."""
from __future__ import annotations

import io
import json
from pathlib import Path

from dnscache_agent.pacer.warm import (
    MAX_AGE,
    MAX_FILE_BYTES,
    WarmEntry,
    WarmList,
    load_warm,
    parse_seed,
    parse_warm_json,
    save_warm,
)

NOW = 1_800_000_000.0


def test_bounded_lru_by_last_ask() -> None:
    w = WarmList(3)
    for i, name in enumerate(["a.", "b.", "c."]):
        w.touch(name, 1, NOW + i)
    w.touch("a.", 1, NOW + 10)  # asked again: most recent
    w.touch("d.", 1, NOW + 11)  # pushes out the least recently asked (b.)
    assert [e.name for e in w.entries()] == ["d.", "a.", "c."]
    assert len(w) == 3


def test_zero_max_keeps_nothing() -> None:
    w = WarmList(0)
    w.touch("a.", 1, NOW)
    assert len(w) == 0


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    w = WarmList(10)
    w.touch("a.example.", 1, NOW - 5)
    w.touch("b.example.", 28, NOW - 1)
    path = tmp_path / "state" / "warm.json"
    save_warm(path, w)
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    loaded, problems = load_warm(path, max_entries=10, now=NOW)
    assert problems == []
    assert loaded.entries() == [WarmEntry("b.example.", 28, NOW - 1),
                                WarmEntry("a.example.", 1, NOW - 5)]
    assert not list(path.parent.glob(".warm.json.*"))  # no temp file left


def test_missing_file_is_an_empty_list(tmp_path: Path) -> None:
    loaded, problems = load_warm(tmp_path / "none.json", max_entries=10, now=NOW)
    assert len(loaded) == 0 and problems == []


def test_bad_files_load_nothing_with_one_line_each(tmp_path: Path) -> None:
    for content in (b"not json", b'{"version": 2, "entries": []}', b"[1, 2]",
                    b'{"version": 1, "entries": {}}', b"\xff\xfe"):
        entries, problems = parse_warm_json(content, now=NOW, source="w.json")
        assert entries == [] and len(problems) == 1 and problems[0].startswith("w.json: ")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_FILE_BYTES + 1))
    loaded, problems = load_warm(big, max_entries=10, now=NOW)
    assert len(loaded) == 0 and "larger than" in problems[0]


def test_bad_entries_are_skipped_good_ones_kept() -> None:
    doc = {"version": 1, "entries": [
        ["good.example.", "A", NOW - 1],
        ["bad name with spaces", "A", NOW],
        ["x.example.", "NOSUCHTYPE", NOW],
        ["old.example.", "A", NOW - MAX_AGE - 1],  # not asked for a week
        ["future.example.", "A", NOW + 10 * 86400],
        ["t.example.", "A", True],
        ["short"],
        "string",
    ]}
    entries, problems = parse_warm_json(json.dumps(doc).encode(), now=NOW)
    assert entries == [WarmEntry("good.example.", 1, NOW - 1)]
    assert len(problems) == 7


def test_seed_parsing_names_file_and_line() -> None:
    text = ("# image seed\n"
            "db.internal.example A\n"
            "\n"
            "api.example.com AAAA   # trailing comment\n"
            "broken-line-without-type\n"
            "x.example TYPE65\n"
            "bad..name A\n")
    pairs, problems = parse_seed(text, source="/etc/seed.txt")
    assert pairs == [("db.internal.example.", 1), ("api.example.com.", 28), ("x.example.", 65)]
    assert problems == [
        "/etc/seed.txt:5: expected 'name type', got 'broken-line-without-type'",
        "/etc/seed.txt:7: expected 'name type', got 'bad..name A'"]


def test_seed_ranks_below_saved_entries_and_respects_the_bound(tmp_path: Path) -> None:
    w = WarmList(10)
    w.touch("saved.example.", 1, NOW - 60)
    save_warm(tmp_path / "warm.json", w)
    seed = io.StringIO("s1.example A\ns2.example A\nsaved.example A\n")
    loaded, problems = load_warm(tmp_path / "warm.json", max_entries=3, now=NOW, seed=seed)
    assert problems == []
    # saved first (asked for real), then the seed in file order
    assert [e.name for e in loaded.entries()] == ["saved.example.", "s1.example.", "s2.example."]
    full = WarmList(1)
    full.touch("saved.example.", 1, NOW)
    full.merge([WarmEntry("seed.example.", 1, NOW - MAX_AGE + 1)])
    assert [e.name for e in full.entries()] == ["saved.example."]


def test_missing_seed_is_reported(tmp_path: Path) -> None:
    loaded, problems = load_warm(tmp_path / "w.json", max_entries=5, now=NOW,
                                 seed=tmp_path / "seed.txt")
    assert len(loaded) == 0 and problems == [f"{tmp_path / 'seed.txt'}: no such file"]
