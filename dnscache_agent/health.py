"""The health check: a real DNS query through the local cache. A response with NOERROR or
NXDOMAIN proves named is up and its forwarder answers; SERVFAIL or silence is a failure."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

CACHE_ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str
    rcode: str | None = None
    latency_ms: float | None = None


def query_once(name: str, server: str = CACHE_ADDRESS, port: int = 53,
               timeout: float = 2.0, rdtype: str = "A") -> Health:
    """One query; never raises."""
    msg = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
    start = time.monotonic()
    try:
        resp = dns.query.udp(msg, server, port=port, timeout=timeout)
    except dns.exception.Timeout:
        return Health(False, f"{name} {rdtype} @{server}: no answer in {timeout:g}s")
    except OSError as exc:
        return Health(False, f"{name} {rdtype} @{server}: {exc.strerror or exc}")
    latency = (time.monotonic() - start) * 1000
    rcode = dns.rcode.to_text(resp.rcode())
    ok = resp.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    return Health(ok, f"{name} {rdtype} @{server}: {rcode} in {latency:.0f} ms", rcode, latency)


def wait_healthy(name: str, *, deadline_s: float = 15.0, server: str = CACHE_ADDRESS,
                 port: int = 53, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> Health:
    """Retry `query_once` until it passes or `deadline_s` runs out (named may still be loading
    after a reload); returns the last result."""
    end = clock() + deadline_s
    result = query_once(name, server, port)
    while not result.ok and clock() < end:
        sleep(0.25)
        result = query_once(name, server, port, timeout=min(2.0, max(0.2, end - clock())))
    return result
