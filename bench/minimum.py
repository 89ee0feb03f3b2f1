"""The compulsory minimum of upstream queries, computed from the workload itself. Pure.

A perfect cache fetches a (name, type) pair when it is first asked, and again only when it
is asked after its TTL has run out. Replaying each phase's queries at their scheduled times
(phase start + i / qps) through such a cache, over the whole life of one cache (phases
follow each other without a restart), counts the fetches each phase cannot avoid: the
distinct pairs asked times the refreshes their TTLs force.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

Key = tuple[str, str]


@dataclass(frozen=True)
class Phase:
    """Queries sent at `qps` from `start` seconds after the cache started; with `offsets`,
    query i is sent at start + offsets[i] instead of start + i / qps (a lookup that asks
    several questions at once)."""

    start: float
    qps: float
    queries: Sequence[Key]
    offsets: Sequence[float] | None = None


def _norm(key: Key) -> Key:
    return (key[0].rstrip(".").lower(), key[1].upper())


def ttl_map(records: Sequence[tuple[str, str, int]]) -> dict[Key, int]:
    """(name, type, ttl) triples → {(name, TYPE): ttl} with names normalised."""
    return {_norm((n, t)): ttl for n, t, ttl in records}


def fetch_times(phases: Sequence[Phase], ttls: Mapping[Key, int],
                default_ttl: int = 0) -> list[list[float]]:
    """When a perfect TTL-obeying cache fetches, per phase (same order as `phases`).

    Phases must be in time order; a pair missing from `ttls` gets `default_ttl`.
    """
    expires: dict[Key, float] = {}
    out: list[list[float]] = []
    for ph in phases:
        if ph.qps <= 0:
            raise ValueError(f"phase qps must be > 0: {ph.qps}")
        times: list[float] = []
        for i, key in enumerate(ph.queries):
            t = ph.start + (ph.offsets[i] if ph.offsets is not None else i / ph.qps)
            k = _norm(key)
            if t >= expires.get(k, float("-inf")):
                times.append(t)
                expires[k] = t + ttls.get(k, default_ttl)
        out.append(times)
    return out


def compulsory_fetches(phases: Sequence[Phase], ttls: Mapping[Key, int],
                       default_ttl: int = 0) -> list[int]:
    """Fetches a perfect TTL-obeying cache makes in each phase (same order as `phases`)."""
    return [len(t) for t in fetch_times(phases, ttls, default_ttl)]


def paced_waits(times: Sequence[float], rate: float) -> list[float]:
    """How long each fetch (ascending `times`) waits when at most `rate` leave per second,
    first come first served: the least delay any cache under that budget can achieve."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0: {rate}")
    waits: list[float] = []
    free = float("-inf")
    for t in times:
        send = max(t, free)
        waits.append(send - t)
        free = send + 1.0 / rate
    return waits


def distinct_keys(queries: Sequence[Key]) -> set[Key]:
    """Normalised distinct pairs of a query list."""
    return {_norm(k) for k in queries}


def getaddrinfo_questions(name: str, answered: Set[Key],
                          search: Sequence[str] = ()) -> list[Key]:
    """The questions glibc's getaddrinfo(AF_UNSPEC) asks for `name` (no trailing dot, at
    least one dot, so ndots:1 tries it as is first): A and AAAA; and when neither has an
    answer (NXDOMAIN or NODATA for both), A and AAAA again for `name` + each search domain.
    `answered` holds the normalised pairs that have data."""
    base = name.rstrip(".")
    out: list[Key] = [(base, "A"), (base, "AAAA")]
    if not any(_norm(k) in answered for k in out):
        for dom in search:
            full = f"{base}.{dom.strip('.')}"
            out += [(full, "A"), (full, "AAAA")]
    return out


def lookup_phase(start: float, qps: float, names: Sequence[str], answered: Set[Key],
                 search: Sequence[str] = ()) -> Phase:
    """A phase of getaddrinfo lookups (lookup i at start + i / qps) as its questions."""
    queries: list[Key] = []
    offsets: list[float] = []
    for i, name in enumerate(names):
        qs = getaddrinfo_questions(name, answered, search)
        queries += qs
        offsets += [i / qps] * len(qs)
    return Phase(start, qps, queries, offsets)
