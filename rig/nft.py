"""nftables rules that reproduce EC2's 1024 packets/s limit towards the Amazon resolver.

Pure: renders `nft -f` scripts and parses `nft -j list counters`. The rule lives in the
vpc namespace's input hook, so it counts every packet (UDP and TCP, port 53) arriving at
169.254.169.253 from the instance, like the per-interface limit on EC2.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

TABLE = "rig_limit"
CHAIN = "input"
PASSED = "resolver_passed"
DROPPED = "resolver_dropped"
DEFAULT_BURST = 5


@dataclass(frozen=True)
class NftCounters:
    """Packet/byte totals of the two named counters (packets to the resolver)."""

    passed_packets: int
    dropped_packets: int
    passed_bytes: int = 0
    dropped_bytes: int = 0


@dataclass(frozen=True)
class CounterRate:
    """Per-second packet rates between two counter readings."""

    seconds: float
    passed_pps: float
    dropped_pps: float


def limit_rules(resolver: str, limit_pps: int | None, *, burst: int = DEFAULT_BURST) -> list[str]:
    """Rule bodies for the chain: a rate limit, or (limit_pps None) a blackhole.

    The blackhole drops every packet to the resolver (any protocol or port), which is what
    serve-stale tests need: the upstream simply stops answering.
    """
    match = f"ip daddr {resolver}"
    if limit_pps is None:
        return [f'{match} counter name "{DROPPED}" drop']
    if limit_pps < 1:
        raise ValueError(f"limit_pps must be >= 1 (use blackhole for 0): {limit_pps}")
    dns = f"{match} meta l4proto {{ udp, tcp }} th dport 53"
    return [
        f'{dns} limit rate over {limit_pps}/second burst {burst} packets '
        f'counter name "{DROPPED}" drop',
        f'{dns} counter name "{PASSED}"',
    ]


def render_setup(resolver: str, limit_pps: int, *, burst: int = DEFAULT_BURST) -> str:
    """`nft -f` script creating the table, the named counters, the chain and its rules."""
    lines = [
        f"add table ip {TABLE}",
        f"add counter ip {TABLE} {PASSED}",
        f"add counter ip {TABLE} {DROPPED}",
        f"add chain ip {TABLE} {CHAIN} {{ type filter hook input priority filter; "
        "policy accept; }",
    ]
    lines += [f"add rule ip {TABLE} {CHAIN} {r}" for r in limit_rules(resolver, limit_pps,
                                                                       burst=burst)]
    return "\n".join(lines) + "\n"


def render_replace(resolver: str, limit_pps: int | None, *, burst: int = DEFAULT_BURST) -> str:
    """`nft -f` script swapping the chain's rules in one transaction; counters keep counting."""
    lines = [f"flush chain ip {TABLE} {CHAIN}"]
    lines += [f"add rule ip {TABLE} {CHAIN} {r}" for r in limit_rules(resolver, limit_pps,
                                                                       burst=burst)]
    return "\n".join(lines) + "\n"


def parse_counters(json_text: str) -> NftCounters:
    """Parse `nft -j list counters table ip rig_limit`. Raises ValueError if one is missing."""
    found: dict[str, tuple[int, int]] = {}
    for item in json.loads(json_text).get("nftables", []):
        counter = item.get("counter")
        if counter and counter.get("table") == TABLE:
            found[counter["name"]] = (int(counter["packets"]), int(counter["bytes"]))
    missing = {PASSED, DROPPED} - found.keys()
    if missing:
        raise ValueError(f"nft counters missing: {sorted(missing)}")
    return NftCounters(
        passed_packets=found[PASSED][0], dropped_packets=found[DROPPED][0],
        passed_bytes=found[PASSED][1], dropped_bytes=found[DROPPED][1],
    )


def rate(before: NftCounters, after: NftCounters, seconds: float) -> CounterRate:
    """Packets per second passed and dropped between two readings `seconds` apart."""
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0: {seconds}")
    return CounterRate(
        seconds=seconds,
        passed_pps=(after.passed_packets - before.passed_packets) / seconds,
        dropped_pps=(after.dropped_packets - before.dropped_packets) / seconds,
    )
