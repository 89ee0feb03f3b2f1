"""The health check: real DNS queries through the local cache. A response with NOERROR or
NXDOMAIN proves named is up and its forwarder answers; SERVFAIL or silence is a failure. The
configured name may already be cached, so a second query asks a random label below it, which
no cache holds: only a reachable forwarder can answer that one.

Anything else that reaches the querying port (a packet from another source, a short or
malformed datagram, a reply with the wrong id) is ignored while the deadline lasts: any local
user can spray the ephemeral ports, and that must neither crash the agent nor fail a health
check the real answer would pass. Only silence until the deadline fails it."""

from __future__ import annotations

import secrets
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
    """One query, waiting up to `timeout` for a well-formed reply from `server:port` to this
    query. Never raises: a failure of any kind is a Health with ok=False."""
    where = f"{name} {rdtype} @{server}"
    start = time.monotonic()
    try:
        msg = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
        # ignore_unexpected: drop datagrams from any other address or port;
        # ignore_errors: drop malformed ones and replies that do not answer `msg` (id,
        # question), and keep waiting for the real one until the timeout.
        resp = dns.query.udp(msg, server, port=port, timeout=timeout,
                             ignore_unexpected=True, ignore_errors=True)
    except dns.exception.Timeout:
        return Health(False, f"{where}: no answer in {timeout:g}s")
    except OSError as exc:
        return Health(False, f"{where}: {exc.strerror or exc}")
    except (dns.exception.DNSException, ValueError, EOFError) as exc:
        # Only reachable through a dnspython that checks less than the options above ask for,
        # or a bad name/type: still a failed check, never an exception for the caller.
        return Health(False, f"{where}: {type(exc).__name__}: {str(exc)[:120]}")
    latency = (time.monotonic() - start) * 1000
    rcode = dns.rcode.to_text(resp.rcode())
    ok = resp.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    return Health(ok, f"{name} {rdtype} @{server}: {rcode} in {latency:.0f} ms", rcode, latency)


def uncached_name(name: str, token: Callable[[], str] = lambda: secrets.token_hex(6)) -> str:
    """A label no cache can hold yet, below `name`."""
    return f"dnscache-health-{token()}.{name.rstrip('.')}"


def wait_healthy(name: str, *, deadline_s: float = 15.0, server: str = CACHE_ADDRESS,
                 port: int = 53, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> Health:
    """Query `name`, then an uncached name below it, retrying until both pass or `deadline_s`
    runs out (named may still be loading after a reload); returns the last result."""
    end = clock() + deadline_s
    while True:
        timeout = min(2.0, max(0.2, end - clock()))
        result = query_once(name, server, port, timeout=timeout)
        if result.ok:
            result = query_once(uncached_name(name), server, port, timeout=timeout)
        if result.ok or clock() >= end:
            return result
        sleep(0.25)
