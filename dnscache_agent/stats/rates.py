"""Pure rate maths: two `BindSnapshot`s and the seconds between them → `Rates`.

What counts as a packet towards the resolver (`upstream_pps`)
-------------------------------------------------------------
EC2 drops packets an interface sends to the link-local services beyond 1024/s. bind's resolver
counters see the queries, not the wire, so the estimate is built from them:

* `Queryv4 + Queryv6`: bind increments these in `fctx_query()` once per query it sends to a
  forwarder, whatever the transport. A **retry** after a timeout is a new `fctx_query()`, so it
  is already in `Queryv4/6`; `Retry` only counts that subset and is *not* added again (the
  captured fixture shows it: 7 answered + 1 first try + 5 retries timed out + 1 refused = 14).
* **TCP**: a query over TCP is counted once in `Queryv4/6` but costs the client more packets:
  SYN, the handshake's ACK, the query, an ACK of the answer, FIN and the final ACK, i.e. 6
  instead of 1. The cache only falls back to TCP after a truncated UDP answer, so each
  `Truncated` adds `tcp_extra_packets` (default 5) packets on top of its counted query.
* Answers coming back are not counted: the limit applies to traffic towards the resolver.

The result is an estimate; ENA's `linklocal_allowance_exceeded` is the ground truth for drops.

Counter resets: when named restarts (boot-time changed), every counter starts again from zero,
so the new value *is* the delta. A single counter going backwards (e.g. resolver stats recreated
on reconfiguration) is treated the same way for that counter.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TypeVar

from .bind_stats import BindSnapshot, CacheCounters, ClientCounters, UpstreamCounters

#: Extra packets a TCP query sends beyond the one counted query (see module docstring).
TCP_EXTRA_PACKETS = 5

_C = TypeVar("_C", ClientCounters, UpstreamCounters, CacheCounters)


@dataclass(frozen=True)
class Rates:
    """Per-second figures over one interval. Ratios are None when their denominator is zero
    (no queries: a ratio would be a made-up number)."""

    elapsed: float
    reset: bool
    client_qps: float
    aaaa_share: float | None
    upstream_qps: float
    upstream_pps: float
    upstream_tcp_ps: float
    upstream_retries_ps: float
    upstream_timeouts_ps: float
    upstream_servfail_ps: float
    upstream_nxdomain_ps: float
    upstream_quota_drops_ps: float
    cache_hit_ratio: float | None
    client_servfail_ps: float
    client_nxdomain_ps: float
    client_dropped_ps: float
    client_failure_ps: float
    stale_answers_ps: float
    prefetch_ps: float
    #: Share of upstream responses per RTT bucket (`RTT_BUCKETS` order), None with no responses.
    rtt_distribution: tuple[float, ...] | None

    @property
    def upstream_rtt_slow_ratio(self) -> float | None:
        """Share of upstream answers that took 500 ms or more (buckets 500-800, 800-1600, 1600+)."""
        if self.rtt_distribution is None:
            return None
        return sum(self.rtt_distribution[3:])

    def rtt_share(self, index: int) -> float | None:
        return None if self.rtt_distribution is None else self.rtt_distribution[index]


def counter_delta(prev: int, cur: int, reset: bool) -> int:
    """Increase of a monotonic counter; after a reset (or if it went backwards) the new value
    is everything counted since the reset."""
    if reset or cur < prev:
        return cur
    return cur - prev


def _deltas(prev: _C, cur: _C, reset: bool) -> tuple[_C, bool]:
    values: dict[str, object] = {}
    went_back = False
    for f in fields(cur):
        a, b = getattr(prev, f.name), getattr(cur, f.name)
        if isinstance(b, tuple):
            went_back = went_back or any(y < x for x, y in zip(a, b))
            values[f.name] = tuple(counter_delta(x, y, reset) for x, y in zip(a, b))
        else:
            went_back = went_back or b < a
            values[f.name] = counter_delta(a, b, reset)
    return type(cur)(**values), went_back  # type: ignore[arg-type]


def compute_rates(prev: BindSnapshot, cur: BindSnapshot, elapsed: float, *,
                  tcp_extra_packets: int = TCP_EXTRA_PACKETS) -> Rates:
    """Rates between two snapshots taken `elapsed` seconds apart (measure it with a monotonic
    clock, not bind's current-time, which has millisecond jitter). Raises ValueError if
    `elapsed` is not positive."""
    if not elapsed > 0:
        raise ValueError(f"elapsed must be positive, got {elapsed!r}")
    restarted = bool(prev.boot_time and cur.boot_time and prev.boot_time != cur.boot_time)
    client, back_c = _deltas(prev.client, cur.client, restarted)
    upstream, back_u = _deltas(prev.upstream, cur.upstream, restarted)
    cache, back_k = _deltas(prev.cache, cur.cache, restarted)
    prev_q = dict(prev.qtypes)
    q_reset = restarted or any(n < prev_q.get(q, 0) for q, n in cur.qtypes)
    qtype_deltas = {q: counter_delta(prev_q.get(q, 0), n, q_reset) for q, n in cur.qtypes}

    def ps(n: int) -> float:
        return n / elapsed

    q_total = sum(qtype_deltas.values())
    aaaa_share = qtype_deltas.get("AAAA", 0) / q_total if q_total else None
    lookups = cache.query_hits + cache.query_misses
    rtt_total = sum(upstream.rtt)
    rtt = tuple(n / rtt_total for n in upstream.rtt) if rtt_total else None
    queries = upstream.queryv4 + upstream.queryv6
    return Rates(
        elapsed=elapsed,
        reset=restarted or back_c or back_u or back_k or q_reset,
        client_qps=ps(client.requestv4 + client.requestv6),
        aaaa_share=aaaa_share,
        upstream_qps=ps(queries),
        upstream_pps=ps(queries + upstream.truncated * tcp_extra_packets),
        upstream_tcp_ps=ps(upstream.truncated),
        upstream_retries_ps=ps(upstream.retry),
        upstream_timeouts_ps=ps(upstream.query_timeout),
        upstream_servfail_ps=ps(upstream.servfail),
        upstream_nxdomain_ps=ps(upstream.nxdomain),
        upstream_quota_drops_ps=ps(upstream.client_quota + upstream.server_quota),
        cache_hit_ratio=cache.query_hits / lookups if lookups else None,
        client_servfail_ps=ps(client.qry_servfail),
        client_nxdomain_ps=ps(client.qry_nxdomain),
        client_dropped_ps=ps(client.qry_dropped + client.rec_limit_dropped),
        client_failure_ps=ps(client.qry_failure),
        stale_answers_ps=ps(client.qry_used_stale),
        prefetch_ps=ps(client.prefetch),
        rtt_distribution=rtt,
    )

