"""The warm list: (name, type) pairs that cost upstream packets and were asked again, kept on
disk so a restart (of named, the pacer or the instance) refetches them within the spare budget
instead of meeting the next minute's traffic cold.

Bounded: at most `max_entries`, least recently asked out first, and entries not asked for
`MAX_AGE` (a week) are forgotten at load. An image build seeds it with a text file of
`name type` lines (`#` comments); seed entries rank below every saved one.

Parsing is pure and defensive (size cap, JSON only, every entry checked); a bad entry is
skipped with a message rather than stopping the pacer, because a pacer that does not start
takes the host's DNS with it.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Union

from . import wire
from .files import read_capped, replace_file

FORMAT_VERSION = 1
MAX_FILE_BYTES = 8 * 2**20
MAX_AGE = 7 * 86400.0
MAX_PROBLEMS = 20
_LABEL_RE = re.compile(r"^[A-Za-z0-9_*-](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_-])?$")

PathOrFile = Union[str, Path, IO[bytes], IO[str]]


@dataclass(frozen=True)
class WarmEntry:
    name: str
    qtype: int
    last_asked: float  # unix seconds


def check_name(name: str) -> str | None:
    """The name in canonical form (lower case, trailing dot), or None when it is not a
    hostname-like DNS name the warm-up can ask for."""
    if not isinstance(name, str) or not 1 <= len(name) <= 254 or not name.isascii():
        return None
    bare = name.rstrip(".")
    if not bare or len(bare) > 253 or name.endswith(".."):
        return None
    if not all(_LABEL_RE.fullmatch(label) for label in bare.split(".")):
        return None
    return bare.lower() + "."


class WarmList:
    """Bounded LRU of (name, qtype) -> last time asked (unix seconds)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max(0, max_entries)
        self._items: OrderedDict[tuple[str, int], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def touch(self, name: str, qtype: int, when: float) -> None:
        """Record that (name, qtype) was asked again at `when`."""
        if self.max_entries == 0:
            return
        key = (name, qtype)
        self._items[key] = max(when, self._items.get(key, when))
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def merge(self, entries: list[WarmEntry]) -> None:
        """Add entries by their last-ask time: the list stays ordered by it (ties keep the
        order given, later ones counting as more recent) and keeps the newest."""
        if self.max_entries == 0:
            return
        merged = dict(self._items)
        for e in entries:
            key = (e.name, e.qtype)
            if key not in merged or merged[key] < e.last_asked:
                merged.pop(key, None)
                merged[key] = e.last_asked
        ordered = sorted(merged.items(), key=lambda kv: kv[1])  # stable
        self._items = OrderedDict(ordered[-self.max_entries:])

    def entries(self) -> list[WarmEntry]:
        """Most recently asked first: the order the warm-up refetches them."""
        return [WarmEntry(n, t, when) for (n, t), when in reversed(self._items.items())]

    def to_json(self) -> bytes:
        items = [[n, wire.type_text(t), round(when, 1)] for (n, t), when in self._items.items()]
        return json.dumps({"version": FORMAT_VERSION, "entries": items},
                          separators=(",", ":")).encode("utf-8")


def parse_warm_json(data: bytes, *, now: float, source: str = "warm list",
                    ) -> tuple[list[WarmEntry], list[str]]:
    """Entries of a saved warm list, and one message per problem (at most MAX_PROBLEMS).
    A file that is not the expected JSON gives no entries and one message."""
    problems: list[str] = []
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [], [f"{source}: not JSON: {exc}"]
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
        return [], [f"{source}: not a version {FORMAT_VERSION} warm list"]
    raw = doc.get("entries")
    if not isinstance(raw, list):
        return [], [f"{source}: 'entries' is not a list"]
    out: list[WarmEntry] = []
    for i, item in enumerate(raw):
        entry = _entry(item, now)
        if entry is None:
            if len(problems) < MAX_PROBLEMS:
                problems.append(f"{source}: entry {i}: {str(item)[:80]!r} skipped")
            continue
        out.append(entry)
    return out, problems


def _entry(item: object, now: float) -> WarmEntry | None:
    if not isinstance(item, list) or len(item) != 3:
        return None
    name, rtype, when = item
    canon = check_name(name) if isinstance(name, str) else None
    qtype = wire.type_code(rtype) if isinstance(rtype, str) else None
    if canon is None or qtype is None or isinstance(when, bool):
        return None
    if not isinstance(when, (int, float)) or not now - MAX_AGE <= when <= now + 86400:
        return None
    return WarmEntry(canon, qtype, float(when))


def parse_seed(text: str, *, source: str = "warm seed") -> tuple[list[tuple[str, int]],
                                                                  list[str]]:
    """`name type` lines (blank lines and `#` comments allowed) as (name, qtype) pairs, and
    one message per bad line naming `source:line` (at most MAX_PROBLEMS)."""
    out: list[tuple[str, int]] = []
    problems: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        parts = body.split()
        canon = check_name(parts[0]) if len(parts) == 2 else None
        qtype = wire.type_code(parts[1]) if len(parts) == 2 else None
        if canon is None or qtype is None:
            if len(problems) < MAX_PROBLEMS:
                problems.append(f"{source}:{lineno}: expected 'name type', got {body[:80]!r}")
            continue
        out.append((canon, qtype))
    return out, problems


def _read(source: PathOrFile, cap: int) -> bytes | None:
    if isinstance(source, (str, Path)):
        return read_capped(Path(source), cap)
    data = source.read(cap + 1)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > cap:
        raise ValueError(f"larger than {cap} bytes")
    return raw


def load_warm(source: PathOrFile, *, max_entries: int, now: float,
              seed: PathOrFile | None = None) -> tuple[WarmList, list[str]]:
    """The warm list saved at `source` (missing: empty) with the `seed` file merged in
    below it, and the problems found (each one line naming the file)."""
    warm = WarmList(max_entries)
    problems: list[str] = []
    name = str(source) if isinstance(source, (str, Path)) else "warm list"
    try:
        data = _read(source, MAX_FILE_BYTES)
    except (OSError, ValueError) as exc:
        data = None
        problems.append(f"{name}: not loaded: {exc}")
    if data:
        entries, found = parse_warm_json(data, now=now, source=name)
        problems += found
        warm.merge(entries)
    if seed is not None:
        seed_name = str(seed) if isinstance(seed, (str, Path)) else "warm seed"
        try:
            raw = _read(seed, MAX_FILE_BYTES)
        except (OSError, ValueError) as exc:
            raw = None
            problems.append(f"{seed_name}: not loaded: {exc}")
        if raw is None and isinstance(seed, (str, Path)):
            problems.append(f"{seed_name}: no such file")
        if raw:
            pairs, found = parse_seed(raw.decode("utf-8", errors="replace"), source=seed_name)
            problems += found
            # Seeds rank below everything asked for real: older than any saved entry.
            base = now - MAX_AGE + 1
            warm.merge([WarmEntry(n, t, base) for n, t in reversed(pairs)])
    return warm, problems


def save_warm(path: Path, warm: WarmList) -> None:
    """Write the warm list atomically and durably. Raises OSError."""
    replace_file(path, warm.to_json(), mode=0o644, durable=True)
