"""ENA allowance counters from `ethtool -S IFACE`.

The parser is pure (text in, `EnaCounters` out); `EthtoolReader` runs ethtool through an injected
`Runner`. An interface without the counters (veth, virtio, anything off EC2) is reported with
`is_ena=False`, never as an error: most test hosts and containers have no ENA.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, fields

from ..commands import CommandRunner
from ..errors import StatsParseError

log = logging.getLogger(__name__)

#: Counters that only go up: packets dropped because an allowance was exceeded.
EXCEEDED_COUNTERS: tuple[str, ...] = (
    "bw_in_allowance_exceeded",
    "bw_out_allowance_exceeded",
    "pps_allowance_exceeded",
    "conntrack_allowance_exceeded",
    "linklocal_allowance_exceeded",
)
#: A gauge: connections that can still be tracked before conntrack_allowance_exceeded moves.
AVAILABLE_COUNTER = "conntrack_allowance_available"
ENA_COUNTERS: tuple[str, ...] = EXCEEDED_COUNTERS + (AVAILABLE_COUNTER,)

_HEADER = "NIC statistics:"
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
_MAX_TEXT = 4 * 1024 * 1024


@dataclass(frozen=True)
class EnaCounters:
    """One `ethtool -S` reading. Counters the driver does not print are None (older ENA drivers
    lack linklocal/conntrack); `is_ena` is True when any of the six is present."""

    interface: str
    is_ena: bool
    bw_in_allowance_exceeded: int | None = None
    bw_out_allowance_exceeded: int | None = None
    pps_allowance_exceeded: int | None = None
    conntrack_allowance_exceeded: int | None = None
    linklocal_allowance_exceeded: int | None = None
    conntrack_allowance_available: int | None = None


@dataclass(frozen=True)
class EnaDelta:
    """Drops per exceeded counter over one interval (None where the driver lacks the counter),
    the current gauge, and the reading the deltas came from."""

    interface: str
    is_ena: bool
    elapsed: float
    bw_in_allowance_exceeded: int | None
    bw_out_allowance_exceeded: int | None
    pps_allowance_exceeded: int | None
    conntrack_allowance_exceeded: int | None
    linklocal_allowance_exceeded: int | None
    conntrack_allowance_available: int | None
    totals: EnaCounters


def validate_interface(name: str) -> str:
    """Interface names go on ethtool's command line: refuse anything that is not one."""
    if not _IFACE_RE.fullmatch(name) or name.startswith("-"):
        raise StatsParseError(f"ethtool: {name[:40]!r} is not an interface name")
    return name


def parse_ethtool_stats(text: str, interface: str) -> EnaCounters:
    """Parse `ethtool -S` output. Output without the `NIC statistics:` header, or with one of
    the six ENA counters not a non-negative integer, raises StatsParseError; other drivers'
    oddly formatted lines are ignored."""
    if not isinstance(text, str) or len(text) > _MAX_TEXT:
        raise StatsParseError(f"ethtool -S {interface}: output missing or too large")
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == _HEADER), None)
    if start is None:
        raise StatsParseError(f"ethtool -S {interface}: no '{_HEADER}' header")
    found: dict[str, int] = {}
    for line in lines[start + 1:]:
        name, sep, value = line.rpartition(":")
        name = name.strip()
        if not sep or name not in ENA_COUNTERS:
            continue
        value = value.strip()
        if not (value.isascii() and value.isdigit()) or len(value) > 20:
            raise StatsParseError(f"ethtool -S {interface}: {name} is not a counter: "
                                  f"{value[:40]!r}")
        found[name] = int(value)
    return EnaCounters(interface=interface, is_ena=bool(found), **found)


def ena_delta(prev: EnaCounters, cur: EnaCounters, elapsed: float) -> EnaDelta:
    """Increase of each exceeded counter since `prev`. A counter that went backwards (driver
    reload, interface re-attached) counts its new value as the increase."""
    deltas: dict[str, int | None] = {}
    for name in EXCEEDED_COUNTERS:
        a, b = getattr(prev, name), getattr(cur, name)
        if b is None:
            deltas[name] = None
        elif a is None or b < a:
            deltas[name] = b if a is not None else 0
        else:
            deltas[name] = b - a
    return EnaDelta(interface=cur.interface, is_ena=cur.is_ena, elapsed=elapsed,
                    conntrack_allowance_available=cur.conntrack_allowance_available,
                    totals=cur, **deltas)


class EthtoolReader:
    """Runs `ethtool -S IFACE` with a timeout through an injected runner (`commands.Runner`)."""

    def __init__(self, runner: CommandRunner, *, timeout: float = 2.0, ethtool: str = "ethtool"):
        self.runner = runner
        self.timeout = timeout
        self.ethtool = ethtool

    def read(self, interface: str) -> EnaCounters:
        """Counters for one interface. ethtool failing because the driver has no statistics
        (`lo`, some virtual devices) means "not ENA". Raises StatsParseError when ethtool is
        missing, times out, or prints something unparseable."""
        validate_interface(interface)
        result = self.runner.run([self.ethtool, "-S", interface], timeout=self.timeout)
        if result.returncode in (124, 127):
            raise StatsParseError(f"ethtool -S {interface}: "
                                  f"{(result.stderr or '').strip()[:200] or 'failed'}")
        if result.returncode != 0:
            log.debug("ethtool -S %s exited %s: %s", interface, result.returncode,
                      (result.stderr or "").strip()[:200])
            return EnaCounters(interface=interface, is_ena=False)
        return parse_ethtool_stats(result.stdout, interface)

    def read_all(self, interfaces: list[str]) -> dict[str, EnaCounters]:
        return {name: self.read(name) for name in interfaces}


class OptionalEnaReader:
    """ENA counters are optional: without ethtool (minimal images) or when it times out, the
    interface is reported as non-ENA (logged once) instead of losing the whole sample, so
    bind's figures and the budget still flow to `stats` and the daemon."""

    def __init__(self, reader: EthtoolReader) -> None:
        self.reader = reader
        self._warned: set[str] = set()

    def read_all(self, interfaces: list[str]) -> dict[str, EnaCounters]:
        out = {}
        for name in interfaces:
            try:
                out[name] = self.reader.read(name)
            except StatsParseError as exc:
                if name not in self._warned:
                    self._warned.add(name)
                    log.warning("ENA counters for %s unavailable: %s", name, exc)
                out[name] = EnaCounters(interface=name, is_ena=False)
        return out


def counter_names() -> tuple[str, ...]:
    """The six counter field names, in EnaCounters order."""
    return tuple(f.name for f in fields(EnaCounters) if f.name in ENA_COUNTERS)
