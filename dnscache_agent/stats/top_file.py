"""The file between the tally and `dnscache-agent top`: the pacer, which sees every upstream
question, feeds a `TopTally` and publishes its minute and hour reports to `top.json` next to
its stats file, once a second; `top`, the daemon and the sinks read it back.

Why a file and not a query log: the file holds only aggregates (the costliest 20 names and
the class totals of each window), replaced atomically, capped in size, under the pacer's
runtime directory (tmpfs): nothing about individual queries reaches a disk. Why not inside
the pacer's stats file: that one is read every second by every sampler; the hour report is
bigger and only `top` wants it.

A missing file, or one not rewritten for `max_age` seconds, means no pacer is tallying:
`read_top` returns None.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Union

from ..errors import StatsParseError
from ..pacer import wire
from ..pacer.files import read_source, replace_file
from ..resolv_conf import parse as parse_resolv_conf
from .top import (
    CLASSES,
    ClassStat,
    DomainStat,
    KeyStat,
    SearchPolicy,
    TopReport,
    TopTally,
    question_from_wire,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAX_BYTES = 128 * 1024
FILE_NAME = "top.json"
WINDOWS = ("minute", "hour")
#: Entries per window in the file, and example names per class.
TOP_N = 20
EXAMPLES = 3
#: The hour report merges up to 60 minutes of kept keys: refresh it less often.
HOUR_REFRESH = 10.0
#: How often the feed re-reads resolv.conf's search list.
POLICY_REFRESH = 60.0
#: Question keys whose text is kept (the cache is dropped whole when full).
NAME_CACHE = 20000

PathOrFile = Union[str, Path, IO[bytes]]


class TopFileError(StatsParseError):
    """The top file exists but is not what the pacer writes."""


def top_path(stats_file: Path) -> Path:
    """Where the top file lives: next to the pacer's stats file."""
    return stats_file.with_name(FILE_NAME)


@dataclass(frozen=True)
class TopFile:
    """One reading of the top file: both windows, the search policy they were classified
    with and when they were written."""

    time: float
    limit_pps: float
    policy: SearchPolicy
    short_ttl: int
    reports: Mapping[str, TopReport]


def render(tally: TopTally, reports: Mapping[str, TopReport], written: float) -> bytes:
    """The file's bytes (what `parse` reads back); `written` is the wall-clock time."""
    doc: dict[str, Any] = {
        "version": FORMAT_VERSION, "time": round(written, 3), "limit_pps": tally.limit_pps,
        "search": list(tally.policy.search), "ndots": tally.policy.ndots,
        "short_ttl": tally.short_ttl,
        "windows": {w: _bounded(r).as_dict() for w, r in reports.items()},
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _bounded(report: TopReport) -> TopReport:
    return replace(report, top=report.top[:TOP_N], domains=report.domains[:TOP_N])


class TopFeed:
    """The pacer's side: a bounded `TopTally` (the pacer's own, or one fed here through
    `answered()`) published to `path` at most once a second by `publish()`.

    `clock` is the tally's clock (the pacer's loop time); `wallclock` stamps the file, so a
    reader can tell a stale one. `resolv_conf`: the host's resolv.conf, whose search list and
    ndots decide which NXDOMAINs are search-list expansions (re-read every minute; None: the
    tally's policy is kept). `write`: the atomic replacement (tests pass their own)."""

    def __init__(self, path: Path, *, limit_pps: float, resolv_conf: Path | None = None,
                 clock: Callable[[], float] = time.time,
                 wallclock: Callable[[], float] | None = None,
                 write: Callable[[Path, bytes], None] = replace_file,
                 interval: float = 1.0, tally: TopTally | None = None) -> None:
        self.path = path
        self.resolv_conf = resolv_conf
        self.clock = clock
        self.wallclock = wallclock or clock
        self.write = write
        self.interval = interval
        self.tally = tally or TopTally(limit_pps=limit_pps)
        self._published = -math.inf
        self._hour: TopReport | None = None
        self._hour_at = -math.inf
        self._policy_at = -math.inf
        # Decoding a name is the costliest step per answer; the costly names repeat.
        self._names: dict[bytes, str] = {}
        self._error: str | None = None
        self._refresh_policy(clock())

    def _refresh_policy(self, now: float) -> None:
        if self.resolv_conf is None or now - self._policy_at < POLICY_REFRESH:
            return
        self._policy_at = now
        try:
            data = read_source(self.resolv_conf, 64 * 1024)
        except (OSError, ValueError) as exc:
            log.debug("top: cannot read %s: %s", self.resolv_conf, exc)
            return
        text = data.decode("utf-8", "replace") if data is not None else ""
        self.tally.policy = SearchPolicy.from_resolv_conf(parse_resolv_conf(text))

    def answered(self, key: bytes, response: bytes | None, *, tcp: bool = False,
                 packets: int = 1) -> None:
        """One upstream question (`pacer.wire.Question.key`) and its answer (None: none
        came); `packets` is what the limit counted for it. Never raises: a question the
        tally cannot show is skipped."""
        qtype = (key[-4] << 8) | key[-3] if len(key) >= 7 else 0
        name = self._names.get(key)
        if name is None:
            name = wire.name_text(key) or ""
            if len(self._names) >= NAME_CACHE:
                self._names.clear()
            self._names[key] = name
        if not name:
            return
        event = question_from_wire(key, qtype, response, tcp=tcp, packets=packets, name=name)
        if event is not None:
            self.tally.observe(event, self.clock())

    def reports(self, now: float) -> dict[str, TopReport]:
        minute = self.tally.report("minute", now, top_n=TOP_N, examples=EXAMPLES)
        if self._hour is None or now - self._hour_at >= HOUR_REFRESH:
            self._hour = self.tally.report("hour", now, top_n=TOP_N, examples=EXAMPLES)
            self._hour_at = now
        return {"minute": minute, "hour": self._hour}

    def publish(self, now: float | None = None, *, force: bool = False) -> bool:
        """Write the file when a second has passed since the last write (or `force`);
        `now` on the tally's clock (default `clock()`). Returns whether it wrote; a write
        error is logged, never raised (the pacer's job is forwarding, not this file)."""
        now = self.clock() if now is None else now
        if not force and now - self._published < self.interval:
            return False
        self._published = now
        self._refresh_policy(now)
        try:
            self.write(self.path, render(self.tally, self.reports(now), self.wallclock()))
        except OSError as exc:
            if exc.strerror != self._error:  # once, not every second
                log.warning("cannot write %s: %s", self.path, exc.strerror)
            self._error = exc.strerror
            return False
        self._error = None
        return True

    def remove(self) -> None:
        """Remove the file (the pacer is stopping: `top` must not show stale figures)."""
        with contextlib.suppress(OSError):
            self.path.unlink()


# ---------------------------------------------------------------------------- reading
def _get(doc: Mapping[str, Any], key: str, kinds: tuple[type, ...], *,
         optional: bool = False) -> Any:
    value = doc.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise TopFileError(f"field {key!r} has the wrong type")
    if not isinstance(value, kinds):
        raise TopFileError(f"field {key!r} has the wrong type")
    if isinstance(value, float) and not math.isfinite(value):
        raise TopFileError(f"field {key!r} is not finite")
    if isinstance(value, str):
        return value[:255]
    return value


def _num(doc: Mapping[str, Any], key: str) -> float:
    return float(_get(doc, key, (int, float)))


def _report(window: str, doc: Any) -> TopReport:
    if not isinstance(doc, dict):
        raise TopFileError(f"window {window!r} is not an object")
    classes_raw = _get(doc, "classes", (list,))
    top_raw = _get(doc, "top", (list,))
    classes = []
    for c in classes_raw[: len(CLASSES)]:
        if not isinstance(c, dict):
            raise TopFileError("a class entry is not an object")
        examples = _get(c, "examples", (list,))
        if not all(isinstance(e, str) for e in examples):
            raise TopFileError("a class example is not a string")
        classes.append(ClassStat(
            _get(c, "class", (str,)), int(_get(c, "packets", (int,))), _num(c, "pps"),
            _num(c, "share_of_upstream"), _num(c, "share_of_budget"),
            _get(c, "fix", (str,)) if isinstance(c.get("fix"), str) else "",
            _get(c, "setting", (str,), optional=True),
            tuple(e[:255] for e in examples[:EXAMPLES])))
    top = []
    for k in top_raw[:TOP_N]:
        if not isinstance(k, dict):
            raise TopFileError("a top entry is not an object")
        top.append(KeyStat(
            _get(k, "name", (str,)), _get(k, "type", (str,))[:16],
            int(_get(k, "packets", (int,))), _num(k, "pps"), _num(k, "share_of_budget"),
            _get(k, "class", (str,)), int(_get(k, "rcode", (int,))),
            _get(k, "ttl", (int,), optional=True)))
    domains: list[DomainStat] = []
    for d in _get(doc, "domains", (list,), optional=True) or []:
        if len(domains) >= TOP_N:
            break
        if not isinstance(d, dict):
            raise TopFileError("a domain entry is not an object")
        domains.append(DomainStat(_get(d, "domain", (str,)), int(_get(d, "packets", (int,))),
                                  _num(d, "pps"), _num(d, "share_of_budget"),
                                  int(_get(d, "names", (int,)))))
    return TopReport(window, _num(doc, "seconds"), int(_get(doc, "packets", (int,))),
                     _num(doc, "pps"), _num(doc, "limit_pps"), tuple(classes), tuple(top),
                     int(_get(doc, "untallied", (int,))), tuple(domains))


def parse(data: bytes, source: str = "top file") -> TopFile:
    """Parse the file's bytes. Raises TopFileError naming `source`."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise TopFileError(f"{source}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise TopFileError(f"{source}: not a JSON object")
    if doc.get("version") != FORMAT_VERSION:
        raise TopFileError(f"{source}: unknown version {doc.get('version')!r}")
    try:
        windows = _get(doc, "windows", (dict,))
        search = _get(doc, "search", (list,))
        if not all(isinstance(d, str) for d in search):
            raise TopFileError("field 'search' holds a non-string")
        policy = SearchPolicy(tuple(d[:255] for d in search[:6]),
                              max(1, min(int(_get(doc, "ndots", (int,))), 15)))
        return TopFile(_num(doc, "time"), _num(doc, "limit_pps"), policy,
                       int(_get(doc, "short_ttl", (int,))),
                       {w: _report(w, windows[w]) for w in WINDOWS if w in windows})
    except TopFileError as exc:
        raise TopFileError(f"{source}: {exc}") from None


def read_top(source: PathOrFile, *, now: float | None = None,
             max_age: float = 5.0) -> TopFile | None:
    """The latest top file, or None when no pacer is tallying (no file, or one older than
    `max_age` seconds by its own `time` against `now`, default time.time()). Raises
    TopFileError for a file over MAX_BYTES, unreadable, not JSON or with a bad field."""
    name = str(source) if isinstance(source, (str, Path)) else "top file"
    try:
        data = read_source(source, MAX_BYTES)
    except ValueError as exc:
        raise TopFileError(f"{name}: {exc}") from None
    except OSError as exc:
        raise TopFileError(f"{name}: cannot read: {exc.strerror}") from None
    if data is None:
        return None
    top = parse(data, name)
    current = time.time() if now is None else now
    if current - top.time > max_age:
        return None
    return top
