"""Which interface carries packets to the resolver: bind's counters are per host, the EC2 limit
is per interface, so upstream packets are charged to the interface `ip route get` names."""

from __future__ import annotations

import re

from ..commands import CommandRunner

_DEV_RE = re.compile(r"\bdev\s+(\S+)")


def parse_route_get(text: str) -> str | None:
    """The `dev` of `ip route get ADDR` output, or None."""
    m = _DEV_RE.search(text)
    return m.group(1) if m else None


def interface_for(address: str, runner: CommandRunner, default: str = "eth0") -> str:
    """The interface the kernel would use to reach `address`; `default` when it cannot tell."""
    result = runner.run(["ip", "route", "get", address], timeout=2)
    dev = parse_route_get(result.stdout) if result.returncode == 0 else None
    return dev or default
