"""Parse dnsperf's end-of-run statistics (dnsperf 2.x text output). Pure."""
from __future__ import annotations

import re
from dataclasses import dataclass, field


class DnsperfParseError(ValueError):
    """dnsperf's output lacked its Statistics block (it failed, or its format changed)."""


@dataclass(frozen=True)
class DnsperfResult:
    """What one dnsperf run measured. Latencies are seconds; `rcodes` maps name -> count."""

    sent: int
    completed: int
    lost: int
    interrupted: int = 0
    rcodes: dict[str, int] = field(default_factory=dict)
    run_time: float = 0.0
    qps: float = 0.0
    avg_latency: float | None = None
    min_latency: float | None = None
    max_latency: float | None = None
    stddev_latency: float | None = None

    def rcode(self, name: str) -> int:
        """Count of responses with rcode `name` (0 when none)."""
        return self.rcodes.get(name, 0)

    @property
    def completed_ratio(self) -> float:
        """completed / sent (0 when nothing was sent)."""
        return self.completed / self.sent if self.sent else 0.0


def _int(pattern: str, text: str, default: int | None = None) -> int:
    m = re.search(pattern, text, re.MULTILINE)
    if m:
        return int(m.group(1))
    if default is None:
        raise DnsperfParseError(f"dnsperf output has no match for {pattern!r}")
    return default


def _float(pattern: str, text: str) -> float | None:
    m = re.search(pattern, text, re.MULTILINE)
    return float(m.group(1)) if m else None


def parse_dnsperf(text: str) -> DnsperfResult:
    """Parse dnsperf stdout. Raises DnsperfParseError when there is no Statistics block."""
    if "Statistics:" not in text:
        raise DnsperfParseError("dnsperf output has no 'Statistics:' block")
    stats = text[text.index("Statistics:"):]
    rcodes: dict[str, int] = {}
    m = re.search(r"^\s*Response codes:\s*(.*)$", stats, re.MULTILINE)
    if m:
        for name, count in re.findall(r"([A-Z][A-Z0-9]*) (\d+) \(", m.group(1)):
            rcodes[name] = int(count)
    lat = re.search(
        r"^\s*Average Latency \(s\):\s*([\d.]+) \(min ([\d.]+), max ([\d.]+)\)", stats,
        re.MULTILINE)
    return DnsperfResult(
        sent=_int(r"^\s*Queries sent:\s*(\d+)", stats),
        completed=_int(r"^\s*Queries completed:\s*(\d+)", stats),
        lost=_int(r"^\s*Queries lost:\s*(\d+)", stats),
        interrupted=_int(r"^\s*Queries interrupted:\s*(\d+)", stats, 0),
        rcodes=rcodes,
        run_time=_float(r"^\s*Run time \(s\):\s*([\d.]+)", stats) or 0.0,
        qps=_float(r"^\s*Queries per second:\s*([\d.]+)", stats) or 0.0,
        avg_latency=float(lat.group(1)) if lat else None,
        min_latency=float(lat.group(2)) if lat else None,
        max_latency=float(lat.group(3)) if lat else None,
        stddev_latency=_float(r"^\s*Latency StdDev \(s\):\s*([\d.]+)", stats),
    )
