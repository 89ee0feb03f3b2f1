"""The pacer process: sockets, timers and signals around the pure queue and scheduler.

One asyncio loop, no ticking: a datagram from named is queued and, if the bucket has a token,
sent at once; otherwise one timer is armed for the moment the next token is due. Sockets are
read in batches with `add_reader` (asyncio's datagram transport reads one datagram per
wake-up). A housekeeping task runs ten times a second: overdue answers, the give-up sweep
(every 0.5 s), the stats file, sd_notify watchdog and status, periodic save of the warm list.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import random
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..sd_notify import NullNotifier, SdNotifier
from ..stats.top import SearchPolicy
from ..stats.top_file import TopFeed, top_path
from . import wire
from .bucket import Pacing
from .files import replace_file
from .queue import Entry, PacerQueue, Priority, QueueLimits
from .scheduler import Scheduler, TcpTicket
from .stats_file import PacerStats, percentile, render
from .tally import Tally
from .warm import WarmEntry, WarmList, load_warm, save_warm

log = logging.getLogger(__name__)

RECV_BATCH = 256
#: Wake-ups closer than this are a burst (see _next_batch).
BURST_GAP = 0.0005
SOCKET_BUFFER = 4 * 2**20
TCP_MAX_CONNECTIONS = 64
TCP_IDLE = 10.0
TCP_UPSTREAM_TIMEOUT = 5.0
WARM_INFLIGHT = 32
WARM_QUERY_TIMEOUT = 3.0
WARM_START_TIMEOUT = 60.0
#: Seconds between checks for overdue answers, and between give-up sweeps.
HOUSEKEEPING = 0.1
SWEEP = 0.5
#: A send that returns this much later than its token was taken was preempted: the bucket
#: forfeits the gap's tokens (see TokenBucket.forfeit). A normal send takes ~20 us.
LATE_SEND = 0.0005


@dataclass(frozen=True)
class PacerConfig:
    """Everything the process needs, already resolved against --root and the settings."""

    listen: str
    port: int
    upstreams: tuple[str, ...]
    pacing: Pacing
    stats_file: Path
    warm_file: Path | None
    warm_seed: Path | None
    warm_max: int
    warm_via: tuple[str, int] | None
    upstream_port: int = 53
    limits: QueueLimits = field(default_factory=QueueLimits)
    #: The host's search list and ndots, so `top` can tell search-list expansions.
    search_policy: SearchPolicy | None = None
    stats_interval: float = 1.0
    warm_save_interval: float = 60.0
    run_for: float | None = None


def _next_batch(batch: int, got: int, gap: float) -> int:
    """How many datagrams to read at the next wake-up. Reading until EAGAIN costs a failed
    syscall (and a Python exception) per wake-up, which at one datagram per wake-up (the
    common case) is a third of the receive cost. So read as many as came last time (the
    socket is level-triggered: anything left wakes the loop again), and read more only in a
    burst: a full batch again within BURST_GAP of the previous wake-up doubles it."""
    if got < batch:
        return max(1, got)
    if gap < BURST_GAP:
        return min(batch * 2, RECV_BATCH)
    return batch


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


class PacerServer:
    """Run with `asyncio.run(server.run())`; returns the exit code."""

    def __init__(self, config: PacerConfig, *, notifier: SdNotifier | NullNotifier | None = None,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.notifier = notifier or NullNotifier()
        self.wallclock = wallclock
        self.warm = WarmList(config.warm_max)
        self.tally = Tally(config.search_policy, limit_pps=config.pacing.limit_pps)
        # top.json (minute and hour windows, for `dnscache-agent top`) from the same tally,
        # whose clock is the loop's (monotonic).
        self.top = TopFeed(top_path(config.stats_file), limit_pps=config.pacing.limit_pps,
                           tally=self.tally.top_tally, clock=time.monotonic,
                           wallclock=wallclock)
        self.queue = PacerQueue(config.limits, upstreams=len(config.upstreams),
                                on_asked_again=self._asked_again, on_answer=self._answered)
        self.sched: Scheduler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: socket.socket | None = None
        self._ups: list[socket.socket] = []
        self._connected: set[int] = set()
        self._tcp_server: asyncio.AbstractServer | None = None
        self._tcp_waiting: dict[int, asyncio.Future[None]] = {}
        self._tcp_slots: asyncio.Semaphore | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._stop: asyncio.Event | None = None
        self._warm_task: asyncio.Task[None] | None = None
        self._warm_pending = 0
        self._warm_dirty = False
        self._prev_counters: dict[str, int] = {}
        self._started_wall = wallclock()
        self.reply_errors = 0
        self._stats_error: str | None = None
        self._client_batch = self._up_batch = 1
        self._client_woke = self._up_woke = 0.0

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        cfg = self.config
        self.sched = Scheduler(self.queue, cfg.pacing, loop.time())
        self._load_warm()
        self._tcp_slots = asyncio.Semaphore(TCP_MAX_CONNECTIONS)  # bound to this loop
        try:
            self._bind()
            await self.start_tcp()
        except OSError as exc:
            log.error("cannot listen on %s port %s: %s", cfg.listen, cfg.port, exc.strerror)
            self._close()
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.start_warm_up)
        log.info("pacing %s port %s -> %s port %s at %.1f packets/s (burst %s, limit %s, "
                 "margin %g%%)", cfg.listen, cfg.port, ",".join(cfg.upstreams),
                 cfg.upstream_port, cfg.pacing.rate, cfg.pacing.burst, cfg.pacing.limit_pps,
                 cfg.pacing.margin_pct)
        self.notifier.notify(READY="1", STATUS="pacing, queue empty")
        self._write_stats(loop.time(), 0.0)  # without systemd, the file's arrival is READY
        self.start_warm_up()
        house = asyncio.ensure_future(self._housekeeping())
        try:
            if cfg.run_for is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), cfg.run_for)
            else:
                await self._stop.wait()
        finally:
            self.notifier.notify(STOPPING="1")
            house.cancel()
            if self._warm_task is not None:
                self._warm_task.cancel()
            self._close()
            self._save_warm()
            with contextlib.suppress(OSError):
                cfg.stats_file.unlink()
            self.top.remove()
            c = self.queue.counters
            log.info("stopped: %s packets sent, %s answers, %s coalesced, %s expired",
                     c.packets, c.answers, c.coalesced, c.expired)
        return 0

    def _bind(self) -> None:
        cfg = self.config
        loop = self._loop
        assert loop is not None
        client = socket.socket(_family(cfg.listen), socket.SOCK_DGRAM)
        self._client = client
        with contextlib.suppress(OSError):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        client.bind((cfg.listen, cfg.port))
        client.setblocking(False)
        for address in cfg.upstreams:
            up = socket.socket(_family(address), socket.SOCK_DGRAM)
            self._ups.append(up)
            with contextlib.suppress(OSError):
                up.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            self._connect(up, address)
            up.setblocking(False)
            loop.add_reader(up.fileno(), self._upstream_readable, up)
        loop.add_reader(client.fileno(), self._client_readable)

    def _connect(self, up: socket.socket, address: str) -> bool:
        """Connect an upstream socket (only the resolver's answers are then accepted). At
        early boot there may be no route to the resolver yet: that is not fatal, the send
        path connects it later, and until then questions wait in the queue."""
        try:
            up.connect((address, self.config.upstream_port))
        except OSError as exc:
            log.warning("no route to the resolver %s yet (%s); questions wait until there is",
                        address, exc.strerror or exc)
            return False
        self._connected.add(up.fileno())
        return True

    async def start_tcp(self) -> None:
        self._tcp_server = await asyncio.start_server(
            self._tcp_client, self.config.listen, self.config.port, reuse_address=True)

    def _close(self) -> None:
        loop = self._loop
        if self._timer is not None:
            self._timer.cancel()
        if self._tcp_server is not None:
            self._tcp_server.close()
        for sock in [self._client, *self._ups]:
            if sock is None:
                continue
            if loop is not None:
                with contextlib.suppress(Exception):
                    loop.remove_reader(sock.fileno())
            sock.close()
        self._client = None
        self._ups = []

    # ------------------------------------------------------------------ UDP
    def _client_readable(self) -> None:
        sock, loop = self._client, self._loop
        assert sock is not None and loop is not None
        now = loop.time()
        got = 0
        for _ in range(self._client_batch):
            try:
                data, addr = sock.recvfrom(4096)
            except OSError:  # EAGAIN: drained
                break
            got += 1
            self.queue.ask(data, addr, now)
        self._client_batch = _next_batch(self._client_batch, got, now - self._client_woke)
        self._client_woke = now
        for addr, reply in self.queue.take_replies():
            try:
                sock.sendto(reply, addr)
            except OSError:
                self.reply_errors += 1
        self._kick()

    def _kick(self) -> None:
        """Send what the bucket allows now; arm the timer for the next tokens."""
        loop, sched = self._loop, self.sched
        assert loop is not None and sched is not None
        clock = loop.time
        while sched.has_work() and (action := sched.next_action(taken := clock())) is not None:
            if isinstance(action, TcpTicket):
                fut = self._tcp_waiting.pop(id(action), None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
                continue
            up = self._ups[action.upstream]
            try:
                if up.fileno() not in self._connected and not self._connect(
                        up, self.config.upstreams[action.upstream]):
                    raise OSError(errno.ENETUNREACH, "no route to the resolver")
                up.send(action.payload)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED):
                    log.debug("upstream send failed: %s", exc)
                self.queue.unsend(action)
            else:
                left = clock()
                if left - taken > LATE_SEND:
                    sched.bucket.forfeit(left)
        if not sched.has_work():
            return
        now = clock()
        wake = sched.next_wakeup(now)
        if wake is not None:
            self._arm(wake)

    def _arm(self, when: float) -> None:
        loop = self._loop
        assert loop is not None
        if self._timer is not None and not self._timer.cancelled():
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._kick()

    def _upstream_readable(self, up: socket.socket) -> None:
        loop, client = self._loop, self._client
        assert loop is not None
        now = loop.time()
        got = 0
        for _ in range(self._up_batch):
            try:
                data = up.recv(65535)
            except OSError:  # EAGAIN, or ICMP unreachable: the retransmit handles that
                break
            got += 1
            replies = self.queue.answer(data, now)
            if client is None:
                continue
            for addr, reply in replies:
                try:
                    client.sendto(reply, addr)
                except OSError:
                    self.reply_errors += 1
        self._up_batch = _next_batch(self._up_batch, got, now - self._up_woke)
        self._up_woke = now

    # ------------------------------------------------------------------ TCP
    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """One TCP connection from named (after a truncated answer): each query waits for
        its tokens, then goes over its own upstream connection."""
        assert self._tcp_slots is not None
        async with self._tcp_slots:
            try:
                while True:
                    try:
                        head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                        msg = await reader.readexactly(struct.unpack("!H", head)[0])
                    except (asyncio.IncompleteReadError, asyncio.TimeoutError):
                        return
                    answer = await self._tcp_upstream(msg)
                    if answer is None:
                        return
                    writer.write(struct.pack("!H", len(answer)) + answer)
                    await writer.drain()
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                return
            finally:
                writer.close()

    async def _tcp_upstream(self, msg: bytes) -> bytes | None:
        loop, sched = self._loop, self.sched
        assert loop is not None and sched is not None
        ticket: TcpTicket = sched.request_tcp()
        fut: asyncio.Future[None] = loop.create_future()
        self._tcp_waiting[id(ticket)] = fut
        self._kick()
        try:
            await asyncio.wait_for(fut, self.config.limits.max_age)
        except asyncio.TimeoutError:
            ticket.cancelled = True
            self._tcp_waiting.pop(id(ticket), None)
            return None
        host = self.config.upstreams[0]
        try:
            ur, uw = await asyncio.wait_for(
                asyncio.open_connection(host, self.config.upstream_port), TCP_UPSTREAM_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            self.queue.counters.upstream_timeouts += 1
            return None
        try:
            uw.write(struct.pack("!H", len(msg)) + msg)
            await uw.drain()
            rhead = await asyncio.wait_for(ur.readexactly(2), TCP_UPSTREAM_TIMEOUT)
            resp = await asyncio.wait_for(ur.readexactly(struct.unpack("!H", rhead)[0]),
                                          TCP_UPSTREAM_TIMEOUT)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            self.queue.counters.upstream_timeouts += 1
            return None
        finally:
            uw.close()
        q = wire.parse_query(msg)
        if q is not None:
            self.tally.answered_tcp(q.key, q.qtype, resp, loop.time(), sched.tcp_cost)
        return resp

    def _answered(self, entry: Entry, data: bytes, ttl: int | None, now: float) -> None:
        self.tally.answered(entry.key, entry.qtype, data, now, entry.tries, ttl)

    # ------------------------------------------------------------------ warm list
    def _asked_again(self, key: bytes, qtype: int) -> None:
        name = wire.name_text(key)
        if name is not None and self.config.warm_max:
            self.warm.touch(name, qtype, self.wallclock())
            self._warm_dirty = True

    def _load_warm(self) -> None:
        cfg = self.config
        if cfg.warm_file is None or not cfg.warm_max:
            return
        self.warm, problems = load_warm(cfg.warm_file, max_entries=cfg.warm_max,
                                        now=self.wallclock(), seed=cfg.warm_seed)
        for problem in problems:
            log.warning("%s", problem)
        log.info("warm list: %s entries from %s%s", len(self.warm), cfg.warm_file,
                 f" and {cfg.warm_seed}" if cfg.warm_seed else "")

    def _save_warm(self) -> None:
        cfg = self.config
        if cfg.warm_file is None or not cfg.warm_max or not self._warm_dirty:
            return
        try:
            save_warm(cfg.warm_file, self.warm)
            self._warm_dirty = False
            log.info("warm list: saved %s entries to %s", len(self.warm), cfg.warm_file)
        except OSError as exc:
            log.warning("warm list: cannot save %s: %s", cfg.warm_file, exc.strerror)

    def start_warm_up(self) -> None:
        """Refetch the warm list through named (again, on SIGHUP)."""
        if self.config.warm_via is None or not len(self.warm):
            return
        if self._warm_task is not None and not self._warm_task.done():
            return
        self._warm_task = asyncio.ensure_future(self._warm_up(self.warm.entries()))

    async def _warm_up(self, entries: list[WarmEntry]) -> None:
        """Ask named for every warm entry, at most WARM_INFLIGHT at once and only while
        the bucket has spare tokens; named's misses reach the pacer at warm-up priority.
        Waits (up to WARM_START_TIMEOUT) for named to answer at all before starting."""
        loop, sched = self._loop, self.sched
        assert loop is not None and sched is not None and self.config.warm_via is not None
        via = self.config.warm_via
        sock = socket.socket(_family(via[0]), socket.SOCK_DGRAM)
        sock.setblocking(False)
        inflight: dict[int, float] = {}
        answered = 0
        rng = random.Random()

        def readable() -> None:
            nonlocal answered
            for _ in range(RECV_BATCH):
                try:
                    data = sock.recv(4096)
                except OSError:
                    return
                if len(data) >= 2 and inflight.pop((data[0] << 8) | data[1], None) is not None:
                    answered += 1

        try:
            sock.connect(via)
            loop.add_reader(sock.fileno(), readable)
            started = loop.time()
            self._warm_pending = len(entries)
            log.info("warm-up: %s questions through %s port %s", len(entries), *via)
            i = 0
            while i < len(entries):
                now = loop.time()
                for qid, deadline in list(inflight.items()):
                    if deadline <= now:
                        del inflight[qid]
                if answered == 0 and i >= 8 and not inflight:
                    if now - started > WARM_START_TIMEOUT:
                        log.warning("warm-up: %s port %s does not answer; giving up", *via)
                        return
                    i = 0  # named is not up yet: start again
                    await asyncio.sleep(1.0)
                    continue
                if len(inflight) >= WARM_INFLIGHT or not sched.spare(now):
                    await asyncio.sleep(0.005)
                    continue
                e = entries[i]
                i += 1
                self._warm_pending = len(entries) - i
                qid = rng.getrandbits(16)
                query = wire.build_query(qid, e.name, e.qtype)
                if query is None or qid in inflight:
                    continue
                self.queue.mark_warming(e.name, e.qtype, now)
                try:
                    sock.send(query)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                inflight[qid] = now + WARM_QUERY_TIMEOUT
            end = loop.time() + WARM_QUERY_TIMEOUT
            while inflight and loop.time() < end:
                await asyncio.sleep(0.05)
            log.info("warm-up: done, %s of %s answered in %.1f s", answered, len(entries),
                     loop.time() - started)
        finally:
            self._warm_pending = 0
            with contextlib.suppress(Exception):
                loop.remove_reader(sock.fileno())
            sock.close()

    # ------------------------------------------------------------------ housekeeping
    async def _housekeeping(self) -> None:
        loop = self._loop
        assert loop is not None
        cfg = self.config
        last_stats = last_save = last_dog = last_sweep = loop.time()
        dog = self.notifier.watchdog_interval
        while True:
            await asyncio.sleep(HOUSEKEEPING)
            now = loop.time()
            if self.queue.requeue_overdue(now):
                self._kick()  # overdue answers went back to the head of the queue
            if now - last_sweep >= SWEEP and self.queue.sweep(now):
                self._kick()
                last_sweep = now
            if dog is not None and now - last_dog >= dog:
                self.notifier.notify(WATCHDOG="1")
                last_dog = now
            if now - last_stats >= cfg.stats_interval:
                self._write_stats(now, now - last_stats)
                last_stats = now
            if now - last_save >= cfg.warm_save_interval:
                self._save_warm()
                last_save = now

    def snapshot(self, now: float, interval: float) -> PacerStats:
        """The figures for the stats file; resets the interval's waits and counters."""
        cfg, q = self.config, self.queue
        totals = q.counters.as_dict()
        delta = {k: v - self._prev_counters.get(k, 0) for k, v in totals.items()}
        self._prev_counters = totals
        waits = q.take_waits()
        p50, p99 = percentile(waits, 0.5), percentile(waits, 0.99)
        return PacerStats(
            time=self.wallclock(), pid=os.getpid(), started=self._started_wall,
            limit_pps=cfg.pacing.limit_pps, rate_pps=cfg.pacing.rate, burst=cfg.pacing.burst,
            interval_s=interval, queue_depth=q.depth(), queue_live=q.depth(Priority.LIVE),
            queue_prefetch=q.depth(Priority.PREFETCH), queue_warm=q.depth(Priority.WARM),
            in_flight=q.in_flight,
            wait_p50_ms=None if p50 is None else p50 * 1000,
            wait_p99_ms=None if p99 is None else p99 * 1000,
            warm_list=len(self.warm), warm_pending=self._warm_pending,
            totals=totals, interval=delta, top=self.tally.top(now),
            classes=self.tally.classes(now))

    def _write_stats(self, now: float, interval: float) -> None:
        stats = self.snapshot(now, interval)
        try:
            replace_file(self.config.stats_file, render(stats))
            self._stats_error = None
        except OSError as exc:
            if exc.strerror != self._stats_error:  # once, not every second
                log.warning("cannot write %s: %s", self.config.stats_file, exc.strerror)
            self._stats_error = exc.strerror
        self.top.publish(now)
        pps = stats.packets_ps
        self.notifier.notify(STATUS=f"queue {stats.queue_depth}, "
                                    f"sent {0 if pps is None else pps:.0f} packets/s, "
                                    f"{stats.totals.get('answers', 0)} answers")


def run_server(config: PacerConfig, *, notifier: SdNotifier | NullNotifier | None = None) -> int:
    """Run the pacer until SIGTERM/SIGINT (or `config.run_for`); returns the exit code."""
    return asyncio.run(PacerServer(config, notifier=notifier).run())
