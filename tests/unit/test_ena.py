"""ethtool -S parsing, deltas, and the reader with a fake runner."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from dnscache_agent.errors import StatsParseError
from dnscache_agent.stats.ena import (
    EnaCounters,
    EthtoolReader,
    ena_delta,
    parse_ethtool_stats,
    validate_interface,
)

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "ena"


def test_ena_interface_has_six_counters() -> None:
    c = parse_ethtool_stats((FIX / "ena-eth0.txt").read_text(), "eth0")
    assert c.is_ena
    assert c.linklocal_allowance_exceeded == 1377
    assert c.conntrack_allowance_available == 136812
    assert c.pps_allowance_exceeded == 0 and c.bw_in_allowance_exceeded == 0


def test_veth_is_not_ena_and_not_an_error() -> None:
    c = parse_ethtool_stats((FIX / "veth.txt").read_text(), "vethcap0")
    assert not c.is_ena and c.linklocal_allowance_exceeded is None


def test_old_driver_lacks_some_counters() -> None:
    c = parse_ethtool_stats((FIX / "ena-old-driver.txt").read_text(), "eth0")
    assert c.is_ena and c.pps_allowance_exceeded == 12
    assert c.linklocal_allowance_exceeded is None and c.conntrack_allowance_available is None


@pytest.mark.parametrize("text", ["", "no stats available", "NIC statistics:\n"
                                  "     linklocal_allowance_exceeded: -3\n",
                                  "NIC statistics:\n     pps_allowance_exceeded: lots\n"])
def test_malformed_output_raises_typed_error(text: str) -> None:
    with pytest.raises(StatsParseError):
        parse_ethtool_stats(text, "eth0")


def test_delta_and_reset() -> None:
    a = EnaCounters("eth0", True, linklocal_allowance_exceeded=100, pps_allowance_exceeded=5,
                    conntrack_allowance_available=10)
    b = EnaCounters("eth0", True, linklocal_allowance_exceeded=130, pps_allowance_exceeded=2,
                    conntrack_allowance_available=7)
    d = ena_delta(a, b, 1.0)
    assert d.linklocal_allowance_exceeded == 30
    assert d.pps_allowance_exceeded == 2  # went backwards: driver reset
    assert d.bw_in_allowance_exceeded is None
    assert d.conntrack_allowance_available == 7 and d.totals is b


@dataclass
class _Res:
    returncode: int
    stdout: str = ""
    stderr: str = ""


class _FakeRunner:
    def __init__(self, results: dict[str, _Res]) -> None:
        self.results = results
        self.calls: list[tuple[list[str], float | None]] = []

    def run(self, argv: list[str], *, timeout: float | None = None) -> _Res:
        self.calls.append((argv, timeout))
        return self.results[argv[-1]]


def test_reader_runs_ethtool_with_timeout() -> None:
    runner = _FakeRunner({"eth0": _Res(0, (FIX / "ena-eth0.txt").read_text()),
                          "lo": _Res(94, "", "no stats available")})
    reader = EthtoolReader(runner, timeout=1.5)
    got = reader.read_all(["eth0", "lo"])
    assert got["eth0"].is_ena and not got["lo"].is_ena
    assert runner.calls[0] == (["ethtool", "-S", "eth0"], 1.5)


def test_reader_reports_missing_ethtool_and_timeouts() -> None:
    for rc in (124, 127):
        with pytest.raises(StatsParseError):
            EthtoolReader(_FakeRunner({"eth0": _Res(rc, "", "x")})).read("eth0")


@pytest.mark.parametrize("name", ["-S", "eth0;rm", "", "a" * 16, "eth 0"])
def test_interface_names_are_validated(name: str) -> None:
    with pytest.raises(StatsParseError):
        validate_interface(name)
