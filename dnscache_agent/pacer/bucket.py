"""The pacer's rate: a token bucket derived from the per-interface packet limit.

A bucket of `burst` tokens refilled at `rate` tokens/s lets at most `burst + rate * T`
packets out in any window of T seconds (at most `burst` saved, `rate * T` added during the
window). With `rate = ceiling - burst` that is at most `ceiling` in every 1 s window, whatever
the arrival pattern; `ceiling = limit_pps * (1 - margin_pct / 100)` keeps the margin free for
the packets the pacer does not send (see `pacing_from_limit`). Pure; the clock is a value.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Packets a TCP query costs towards the resolver: SYN, ACK, the query, ACKs of the answer's
#: segments, FIN and the last ACK. Measured at the limit rule (tests/integration/
#: test_pacer_vpc.py): 6 for the rig's 1.6 kB TXT answer (two segments). A larger answer
#: costs an ACK more per two segments; the margin absorbs those.
TCP_PACKETS_PER_QUERY = 6


@dataclass(frozen=True)
class Pacing:
    """What the pacer may send: `rate` tokens/s, at most `burst` at once, so never more than
    `ceiling` packets in any 1 s window, `ceiling <= limit_pps`."""

    limit_pps: int
    margin_pct: float
    burst: int
    rate: float

    @property
    def ceiling(self) -> float:
        return self.rate + self.burst


# Why the defaults (settings `[pacer] margin_pct = 5`, `burst = 4`), measured in the simulated
# VPC (tests/integration/test_pacer_vpc.py, test_pacer_named.py: cold bursts of 2000-2500
# distinct names/s, the limit rule counted every second):
# - burst 5 (as deep as the rig's nftables limiter) lost 1-2 packets a second to it: a send
#   delayed by a few hundred microseconds merges with the next; burst 4 lost none;
# - burst 2-3 lost none either, but a pacer not scheduled for more than burst/rate seconds
#   forfeits tokens: on the loaded 2-core test machine it sent 650-900 packets/s instead of
#   970; burst 4 sent 900-980;
# - margin 5% keeps every second at or under 972.8 of 1024, leaving 51 packets/s for the
#   link-local traffic the pacer does not send (IMDS, time sync) and timing skew.


def pacing_from_limit(limit_pps: int, margin_pct: float, burst: int) -> Pacing:
    """The pacing that keeps every 1 s window at or under `limit_pps * (1 - margin_pct/100)`.

    The margin is for packets the bucket does not see at the instant they leave: the kernel
    and the veth/ENA may deliver a few queued packets together, a TCP query's packets follow
    its tokens by one round trip, and IMDS and time-sync traffic share EC2's link-local
    allowance. Raises ValueError when the burst leaves no rate (burst >= ceiling)."""
    if limit_pps < 1:
        raise ValueError(f"limit_pps must be >= 1: {limit_pps}")
    if not 0 <= margin_pct < 100:
        raise ValueError(f"margin_pct must be in 0..100: {margin_pct}")
    if burst < 1:
        raise ValueError(f"burst must be >= 1: {burst}")
    ceiling = limit_pps * (1 - margin_pct / 100)
    rate = ceiling - burst
    if rate <= 0:
        raise ValueError(f"burst {burst} leaves no rate under {ceiling:g} packets/s "
                         f"(limit {limit_pps}, margin {margin_pct:g}%)")
    return Pacing(limit_pps, margin_pct, burst, rate)


class TokenBucket:
    """`rate` tokens per second, at most `capacity` saved; starts full. Every method takes
    `now` (seconds on any monotonic clock), so it has no clock of its own."""

    __slots__ = ("rate", "capacity", "tokens", "_t")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError(f"token bucket needs rate > 0 and capacity >= 1: {rate}, {capacity}")
        self.rate = rate
        self.capacity = capacity
        self.tokens = float(capacity)
        self._t = now

    def _refill(self, now: float) -> None:
        if now > self._t:
            self.tokens = min(self.capacity, self.tokens + (now - self._t) * self.rate)
            self._t = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def take(self, now: float, n: float = 1.0) -> bool:
        """Spend `n` tokens if they are there; False (and nothing spent) otherwise."""
        self._refill(now)
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def forfeit(self, until: float) -> None:
        """The packet paid for by the last `take` left only at `until` (the process was
        preempted between taking the token and sending): tokens for that gap are not
        added, as if the token had been taken when the packet really left. Otherwise the
        late packet and the ones paid for by the gap's tokens would leave together, a
        burst larger than `capacity` at the limiter."""
        if until > self._t:
            self._t = until

    def time_until(self, now: float, n: float = 1.0) -> float:
        """Seconds from `now` until `n` tokens are available (0 when they already are);
        `n` above the capacity is treated as the capacity."""
        self._refill(now)
        need = min(n, self.capacity) - self.tokens
        return 0.0 if need <= 0 else need / self.rate
