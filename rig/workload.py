"""Zipf-distributed query workloads written as dnsperf query files.

Real resolver traffic is heavy-tailed: a few names take most queries. A seeded Zipf sample
over the zone's records gives benchmarks a repeatable, realistic mix. Pure apart from
`write_queries_file`.
"""
from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path

from rig.zone import WorkloadRecord


def zipf_queries(
    records: Sequence[WorkloadRecord], count: int, *, seed: int = 1, exponent: float = 1.0,
    shuffle_ranks: bool = True,
) -> list[tuple[str, str]]:
    """`count` (name, type) queries drawn from `records` with P(rank k) ~ 1 / k**exponent.

    With `shuffle_ranks` the popularity order is a seeded permutation of `records`, so the
    most popular names are not all from the start of the zone (where TTLs cycle in order).
    Raises ValueError on an empty record list or a negative count.
    """
    if not records:
        raise ValueError("zipf_queries needs at least one record")
    if count < 0:
        raise ValueError(f"count must be >= 0: {count}")
    rng = random.Random(seed)
    ranked = list(records)
    if shuffle_ranks:
        rng.shuffle(ranked)
    cumulative = list(accumulate(1.0 / (k**exponent) for k in range(1, len(ranked) + 1)))
    total = cumulative[-1]
    out: list[tuple[str, str]] = []
    for _ in range(count):
        idx = bisect.bisect_left(cumulative, rng.random() * total)
        rec = ranked[min(idx, len(ranked) - 1)]
        out.append((rec.name, rec.rtype))
    return out


def render_queries(queries: Sequence[tuple[str, str]]) -> str:
    """dnsperf's data file format: one `name TYPE` per line."""
    return "".join(f"{name} {rtype}\n" for name, rtype in queries)


def write_queries_file(path: Path, queries: Sequence[tuple[str, str]]) -> Path:
    """Write `queries` to `path` for `dnsperf -d`; returns the path."""
    path.write_text(render_queries(queries), encoding="ascii")
    return path
