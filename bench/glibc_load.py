"""Lookups as applications make them: glibc's stub resolver, open-loop, from many threads.

Each lookup is `socket.getaddrinfo(name, 80, AF_UNSPEC, SOCK_STREAM)`: the real glibc stub,
which asks A and AAAA in parallel and follows /etc/resolv.conf exactly as the agent rendered
it (the cache first, the fallback `nameserver` lines, `timeout:`, `attempts:`, the search
list). Run it inside the instance namespace (`ip netns exec NS python -m bench.glibc_load
...`) so that /etc/resolv.conf is the namespace's; glibc re-reads the file when it changes,
so a long run sees what `apply` and `rollback` do to it.

Open loop: lookup i is due at t0 + i/qps whatever happened to the ones before. A blocking
call needs a thread for as long as it waits (a stub timing out holds its thread for seconds),
so the pool grows whenever a lookup is due and no thread is idle, up to `--max-threads`
(bounded by the open-files limit: each waiting stub holds a socket). Latency is measured from
the due time, so a lookup that waited for a thread shows it; the JSON also reports the rate at
which lookups actually started (`achieved_qps`) and how late they started, so a run the pool
could not hold is visible next to every figure.

Bounded: `--seconds` (≤ 300) of dispatch, then at most `--drain` seconds for the last answers;
a lookup still unanswered then counts as failed (`unfinished`), and the process exits without
waiting for glibc. Only the CLI prints: one JSON document on stdout (or `--out`).

`--upstream-netns VPC_NS` (the rig's vpc namespace) adds the packets that reached the limit
rule (`rig/nft.py` counters, read once a second with `ip netns exec VPC_NS nft`): total,
dropped, mean and peak packets/s over the run, stub fallbacks included. `python -m bench`
samples them itself and does not pass it.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import socket
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

MAX_SECONDS = 300.0
MAX_QPS = 20000
MAX_THREADS = 12000
DEFAULT_MAX_THREADS = 7500
THREAD_STACK = 512 * 1024
# Each waiting lookup holds one UDP socket; keep this many descriptors for everything else.
FD_RESERVE = 256

# Outcome codes, one per lookup.
OK = 0          # addresses returned
NEGATIVE = 1    # EAI_NONAME / EAI_NODATA: the name (or both types) does not exist
AGAIN = 2       # EAI_AGAIN: timeout or SERVFAIL, what an application sees as "DNS down"
FAIL = 3        # EAI_FAIL: unrecoverable error
ERROR = 4       # any other exception
UNFINISHED = 5  # no result before the drain ended
NOT_STARTED = 6  # never given to glibc before the drain ended (the pool could not keep up)
OUTCOMES = {OK: "ok", NEGATIVE: "negative", AGAIN: "EAI_AGAIN", FAIL: "EAI_FAIL",
            ERROR: "error", UNFINISHED: "unfinished", NOT_STARTED: "not_started"}
FAILED_CODES = frozenset({AGAIN, FAIL, ERROR, UNFINISHED, NOT_STARTED})
_NEGATIVE_EAI = {getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, n)}


def classify(exc: BaseException | None) -> int:
    """Outcome code of one getaddrinfo call (None: it returned addresses)."""
    if exc is None:
        return OK
    if isinstance(exc, socket.gaierror):
        if exc.errno in _NEGATIVE_EAI:
            return NEGATIVE
        if exc.errno == socket.EAI_AGAIN:
            return AGAIN
        if exc.errno == socket.EAI_FAIL:
            return FAIL
    return ERROR


def percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile of ascending values (None when empty)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(-(-pct * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


@dataclass
class GlibcResult:
    """One run. `latencies[i]` is seconds from lookup i's due time to its result (-1 when
    it has none); `codes[i]` its outcome. Percentiles are over every lookup with a failed
    one counted as infinite, so `p99` is None when over 1% failed."""

    target_qps: float
    seconds: float
    sent: int
    answered: int
    failed: int
    outcomes: dict[str, int]
    achieved_qps: float
    start_lag_p99: float | None
    threads_peak: int
    max_threads: int
    p50: float | None
    p90: float | None
    p99: float | None
    max_latency: float | None
    answered_p99: float | None
    t0_monotonic: float
    per_second_sent: list[int] = field(default_factory=list)
    per_second_failed: list[int] = field(default_factory=list)
    failed_indexes: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)


def summarize(qps: float, seconds: float, t0: float, latencies: Sequence[float],
              codes: Sequence[int], start_lags: Sequence[float], threads_peak: int,
              max_threads: int, *, keep_per_lookup: bool = True) -> GlibcResult:
    """Pure: per-lookup latencies, outcome codes and start lags (-1: never started) →
    GlibcResult. Achieved rate: lookups started / seconds from t0 to the last start."""
    sent = len(codes)
    outcomes: dict[str, int] = {}
    failed_idx: list[int] = []
    n_sec = int(seconds) + 1
    per_sent, per_failed = [0] * n_sec, [0] * n_sec
    answered: list[float] = []
    for i, code in enumerate(codes):
        name = OUTCOMES.get(code, f"code{code}")
        outcomes[name] = outcomes.get(name, 0) + 1
        sec = min(int(i / qps), n_sec - 1) if qps else 0
        per_sent[sec] += 1
        if code in FAILED_CODES:
            failed_idx.append(i)
            per_failed[sec] += 1
        else:
            answered.append(latencies[i])
    answered.sort()
    everything = answered + [float("inf")] * len(failed_idx)
    started = [(i / qps + lag) for i, lag in enumerate(start_lags) if lag >= 0]
    span = max(started, default=0.0)
    lags = sorted(lag for lag in start_lags if lag >= 0)

    def finite(v: float | None) -> float | None:
        return v if v is not None and v != float("inf") else None

    return GlibcResult(
        target_qps=qps, seconds=seconds, sent=sent, answered=len(answered),
        failed=len(failed_idx), outcomes=outcomes,
        achieved_qps=(len(started) / span if span > 0 else float(len(started))),
        start_lag_p99=percentile(lags, 99), threads_peak=threads_peak,
        max_threads=max_threads,
        p50=finite(percentile(everything, 50)), p90=finite(percentile(everything, 90)),
        p99=finite(percentile(everything, 99)),
        max_latency=answered[-1] if answered else None,
        answered_p99=percentile(answered, 99), t0_monotonic=t0,
        per_second_sent=per_sent, per_second_failed=per_failed, failed_indexes=failed_idx,
        latencies=[round(x, 6) for x in latencies] if keep_per_lookup else [],
        codes=list(codes) if keep_per_lookup else [],
    )


def lookup(name: str) -> int:
    """One lookup as an application makes it; returns its outcome code."""
    try:
        socket.getaddrinfo(name, 80, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except Exception as exc:  # noqa: BLE001 - every failure is an outcome, never a crash
        return classify(exc)
    return OK


def thread_limit(requested: int, nofile_soft: int) -> int:
    """Threads the pool may grow to: what was asked, within the open-files limit."""
    return max(1, min(requested, MAX_THREADS, nofile_soft - FD_RESERVE))


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class OpenLoopPool:
    """Runs `fn(index)` for each submitted index on a thread pool that grows whenever work
    is waiting and no thread is idle, up to `max_threads`. Records per index when it
    started (seconds after its due time), its result and when it finished."""

    def __init__(self, fn: Callable[[int], int], total: int, max_threads: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fn = fn
        self.max_threads = max_threads
        self.clock = clock
        self.due = array("d", [0.0]) * total
        self.start_lag = array("d", [-1.0]) * total
        self.latency = array("d", [-1.0]) * total
        self.codes = array("b", [UNFINISHED]) * total
        self.threads = 0
        self.idle = 0
        self.finished = 0
        self._q: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)

    def submit(self, index: int, due: float) -> None:
        self.due[index] = due
        self._q.put(index)
        with self._lock:
            grow = self.idle == 0 and self.threads < self.max_threads
            if grow:
                self.threads += 1
                self.idle += 1  # the new thread counts as idle until it takes work
        if grow:
            threading.Thread(target=self._worker, daemon=True).start()

    def _worker(self) -> None:
        q, clock, fn = self._q, self.clock, self.fn
        while True:
            i = q.get()
            if i < 0 or self._closed:
                return  # past the drain: what is still queued stays "not started"
            with self._lock:
                self.idle -= 1
            t = clock()
            self.start_lag[i] = max(0.0, t - self.due[i])
            code = fn(i)
            # Dispatch may hand a lookup over up to 1 ms before it is due, and a fast answer
            # can come back before then: that is no latency, not a negative one.
            self.latency[i] = max(0.0, clock() - self.due[i])
            self.codes[i] = code
            with self._lock:
                self.idle += 1
                self.finished += 1
                self._done.notify_all()

    def close(self) -> None:
        """Start nothing more: threads finishing a lookup exit instead of taking the next
        (thousands of them competing for the GIL would delay the summary)."""
        self._closed = True

    def wait_all(self, total: int, deadline: float) -> bool:
        """Wait until `total` lookups finished or `deadline` (clock time); True if all did."""
        with self._lock:
            while self.finished < total:
                left = deadline - self.clock()
                if left <= 0:
                    return False
                self._done.wait(min(left, 0.5))
        return True


def run_load(names: Sequence[str], qps: float, seconds: float, *, drain: float = 30.0,
             max_threads: int = DEFAULT_MAX_THREADS,
             fn: Callable[[str], int] = lookup, keep_per_lookup: bool = True,
             stop: threading.Event | None = None) -> GlibcResult:
    """Look up `qps` x `seconds` names (cycling through `names`), lookup i due at t0 + i/qps;
    `stop` set ends the dispatch early (the result then covers the lookups dispatched).
    Bounded: returns at most `drain` seconds after the last lookup was due."""
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be in (0, {MAX_SECONDS:g}]: {seconds}")
    if not 0 < qps <= MAX_QPS or not names:
        raise ValueError(f"qps must be in (0, {MAX_QPS}] and names non-empty")
    total = int(qps * seconds)
    limit = thread_limit(max_threads, raise_nofile())
    old_stack = threading.stack_size(THREAD_STACK)
    pool = OpenLoopPool(lambda i: fn(names[i % len(names)]), total, limit)
    peak = 0
    t0 = time.monotonic() + 0.05
    dispatched = 0
    try:
        for i in range(total):
            if stop is not None and stop.is_set():
                break
            due = t0 + i / qps
            delay = due - time.monotonic()
            if delay > 0.001:
                time.sleep(delay)
            pool.submit(i, due)
            dispatched = i + 1
            peak = max(peak, pool.threads)
    finally:
        threading.stack_size(old_stack)
    pool.wait_all(dispatched, max(t0 + dispatched / qps, time.monotonic()) + drain)
    pool.close()
    lat = list(pool.latency)[:dispatched]
    codes = list(pool.codes)[:dispatched]
    lags = list(pool.start_lag)[:dispatched]
    seconds = dispatched / qps
    for i in range(dispatched):
        if lags[i] < 0:
            codes[i] = NOT_STARTED  # otherwise still UNFINISHED unless a worker set it
    return summarize(qps, seconds, t0, lat, codes, lags, max(peak, pool.threads), limit,
                     keep_per_lookup=keep_per_lookup)


class NftSampler:
    """Reads the limit rule's counters in `netns` once a second in a thread (for a
    standalone run; see the module docstring)."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, passed, dropped)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _read(self) -> None:
        from rig import nft

        cp = subprocess.run(["ip", "netns", "exec", self.netns, "nft", "-j", "list",
                             "counters", "table", "ip", nft.TABLE],
                            capture_output=True, text=True, timeout=10, check=True)
        c = nft.parse_counters(cp.stdout)
        self.samples.append((time.monotonic(), c.passed_packets, c.dropped_packets))

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self._read()
            except Exception as exc:  # noqa: BLE001 - a lost sample must not end the run
                print(f"glibc_load: nft sample: {exc}", file=sys.stderr)

    def __enter__(self) -> NftSampler:
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        self._read()

    def summary(self) -> dict[str, float | int]:
        return upstream_summary(self.samples)


def upstream_summary(samples: Sequence[tuple[float, int, int]]) -> dict[str, float | int]:
    """Pure: cumulative (time, passed, dropped) readings → totals, mean and peak second."""
    if len(samples) < 2:
        return {"upstream_packets": 0, "upstream_dropped": 0, "upstream_mean_pps": 0.0,
                "upstream_peak_pps": 0.0}
    (t0, p0, d0), (t1, p1, d1) = samples[0], samples[-1]
    rates = [((b[1] - a[1]) + (b[2] - a[2])) / (b[0] - a[0])
             for a, b in zip(samples, samples[1:]) if b[0] > a[0]]
    total = (p1 - p0) + (d1 - d0)
    return {"upstream_packets": total, "upstream_dropped": d1 - d0,
            "upstream_mean_pps": total / (t1 - t0) if t1 > t0 else 0.0,
            "upstream_peak_pps": max(rates, default=0.0)}


def parse_names(text: str) -> list[str]:
    """Names from a query file (`name [TYPE]` lines, dnsperf's format): the name of each line,
    without a trailing dot, as an application would pass it (so the search list applies)."""
    out: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if parts:
            out.append(parts[0].rstrip(".") or ".")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.glibc_load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", required=True, type=Path,
                   help="query file (`name [TYPE]` lines); only names are used")
    p.add_argument("--qps", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--drain", type=float, default=30.0,
                   help="seconds to wait for the last lookups (default 30)")
    p.add_argument("--max-threads", type=int, default=DEFAULT_MAX_THREADS)
    p.add_argument("--summary-only", action="store_true",
                   help="leave out the per-lookup latencies and outcome codes")
    p.add_argument("--out", type=Path, help="write the JSON here instead of stdout")
    p.add_argument("--upstream-netns", metavar="VPC_NS",
                   help="also count the packets reaching the limit rule in this namespace")
    p.add_argument("--until-stdin-closes", action="store_true",
                   help="also stop dispatching when stdin reaches end of file (a caller "
                        "running phases of unknown length); --seconds still bounds the run")
    a = p.parse_args(argv)
    stop: threading.Event | None = None
    if a.until_stdin_closes:
        stop = threading.Event()

        def watch_stdin(ev: threading.Event = stop) -> None:
            sys.stdin.read()
            ev.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
    import contextlib

    upstream: dict[str, float | int] = {}
    try:
        names = parse_names(a.queries.read_text(encoding="ascii"))
        sampler = NftSampler(a.upstream_netns) if a.upstream_netns else None
        with sampler if sampler is not None else contextlib.nullcontext():
            res = run_load(names, a.qps, a.seconds, drain=a.drain, max_threads=a.max_threads,
                           keep_per_lookup=not a.summary_only, stop=stop)
        if sampler is not None:
            upstream = sampler.summary()
    except (ValueError, OSError, subprocess.SubprocessError) as exc:
        print(f"glibc_load: {exc}", file=sys.stderr)
        return 2
    text = json.dumps({**asdict(res), **upstream})
    if a.out:
        a.out.write_text(text, encoding="ascii")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    # Threads still inside glibc (a stub waiting out its timeouts) must not hold the exit.
    os._exit(rc)
