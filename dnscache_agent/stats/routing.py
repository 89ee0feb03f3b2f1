"""Which interface carries packets to the resolver: bind's counters are per host, the EC2 limit
is per interface, so upstream packets are charged to the interface the kernel routes them by.

Asked of the kernel through a connected UDP socket, not `ip route get`: connecting a datagram
socket only looks the route up (no packet is sent), and it needs no helper process. iproute2
drops capabilities with capset(2) when run as a non-root user, which the daemon's seccomp filter
(`~@privileged`) answers with SIGSYS: under the shipped unit every lookup fell back to "eth0"."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping


def route_source(address: str) -> str | None:
    """The local address the kernel would send from to reach `address`; None when there is no
    route (or the address is not one)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((address, 53))  # a route lookup only: UDP connect sends nothing
            return str(sock.getsockname()[0])
    except OSError:
        return None


def interface_with_address(source: str, interfaces: Mapping[str, Iterable[str]]) -> str | None:
    """The interface holding `source` (`interfaces`: name -> its addresses; IPv6 scope ids like
    `fe80::1%eth0` are ignored)."""
    for name in sorted(interfaces):
        if any(addr.split("%", 1)[0] == source for addr in interfaces[name]):
            return name
    return None


def interface_for(address: str, default: str = "eth0") -> str:
    """The interface the kernel would use to reach `address`; `default` when it cannot tell."""
    import psutil

    source = route_source(address)
    if source is None:
        return default
    addrs = {name: [a.address for a in entries]
             for name, entries in psutil.net_if_addrs().items()}
    return interface_with_address(source, addrs) or default
