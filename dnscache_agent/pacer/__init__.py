"""The budget-pacing forwarder between the local named and the Amazon resolver.

named forwards its cache misses to it (`forwarders { 127.0.0.1 port 5354; }; forward only;`);
it sends them on at no more than `[budget] limit_pps` less a margin in any second, in order
(live misses, then named's prefetches, then warm-up), one packet per distinct question, and
drops what named has stopped waiting for. Modules:

- `wire`: the DNS wire facts it needs (question key, TTLs), parsed by hand;
- `bucket`: the rate (`pacing_from_limit`) and the token bucket;
- `queue`: priorities, coalescing, give-up and retransmits (pure);
- `scheduler`: the bucket in front of the queue, TCP tokens, the next wake-up (pure);
- `warm`: the bounded on-disk warm list and the image-build seed;
- `stats_file`: the stats file it writes each second and `read_pacer_stats`;
- `tally`: per-question upstream cost over the last minute (`top`);
- `server`: the asyncio process; `main`: settings and flags in, `run_pacer`.
"""

from .stats_file import PacerStats, PacerStatsError, read_pacer_stats

__all__ = ["PacerStats", "PacerStatsError", "read_pacer_stats"]
