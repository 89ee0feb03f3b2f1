"""`dnscache-agent run`: the long-running service.

One main loop, on one thread, does everything that proves the agent is alive, so the systemd
watchdog ping (sent only from here) means what it says:

* every `daemon.stats_interval` (1 s): one `Sample`, handed to the configured sinks;
* every `daemon.verify_interval`: re-plan and compare the host with the plan (the same checks
  as `dnscache-agent verify`). Each drifted file is logged with its path and first differing
  line; the host is then repaired through the same `Transaction` as `apply`, either in this
  process or, under the shipped hardened unit, by asking a privileged oneshot unit to run
  `dnscache-agent apply` (`TriggerRepair`: the long-running process cannot write /etc);
* sd_notify: READY=1 once the first health query through the cache passes, WATCHDOG=1 from the
  loop, STATUS= with the upstream interface's packet-budget headroom.

SIGHUP reloads the settings file (a bad file is logged and the old settings kept); SIGTERM and
SIGINT stop the loop within a second. CloudWatch sends (which may sleep in backoff) run on a
worker thread, never on the loop. Clock, wait, notifier, host and sinks are injected.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .errors import ApplyError, ConfigError, DnscacheError
from .health import Health, wait_healthy
from .sd_notify import Notifier, notifier_from_env
from .settings import MetricsSettings, Settings
from .stats.catalogue import Sample
from .verify import Check, verify

if TYPE_CHECKING:
    import argparse

    from .app import Agent
    from .stats.budget import BudgetStatus

log = logging.getLogger(__name__)

#: After a repair, check again this soon (or at verify_interval if that is shorter), so the
#: journal says whether the repair took.
REPAIR_RECHECK_SECONDS = 10.0
#: node_exporter scrapes every 15-60 s; rewriting the textfile every second would be waste.
TEXTFILE_EVERY_SECONDS = 10.0
#: On SIGTERM the CloudWatch worker gets this long to send the minute in progress.
FINAL_FLUSH_SECONDS = 0.5
#: The health query in the loop: short, so one slow answer cannot starve the watchdog.
HEALTH_DEADLINE_SECONDS = 2.0
#: Checks that no repair can fix (a missing package needs `apply --install-packages`).
UNREPAIRABLE = frozenset({"bind installed"})


class SampleSource(Protocol):
    def sample(self) -> Sample | None: ...


class HostPort(Protocol):
    """What the loop needs from the host; `AgentPort` wraps the real `Agent`."""

    @property
    def settings(self) -> Settings: ...

    def sampler(self) -> SampleSource: ...

    def budget_statuses(self, sampler: SampleSource) -> dict[str, BudgetStatus]: ...

    def drift(self, *, refresh: bool) -> list[Check]: ...

    def health(self) -> Health: ...

    def instance_id(self) -> str: ...


class Repairer(Protocol):
    """Makes the host match the plan again; returns a one-line summary for the log.
    Raises DnscacheError when the repair failed (the transaction has rolled back)."""

    def repair(self, host: HostPort) -> str: ...


class Sink(Protocol):
    name: str

    def export(self, sample: Sample) -> None: ...

    def close(self, *, final: bool) -> None: ...


# --- the real host ------------------------------------------------------------------------


class AgentPort:
    """`HostPort` over an `Agent`. Facts are cached between checks (gathering them runs
    `named -V` and asks IMDS); `drift(refresh=True)` gathers them again."""

    def __init__(self, agent: Agent, *, health_deadline: float = HEALTH_DEADLINE_SECONDS,
                 ) -> None:
        self.agent = agent
        self.health_deadline = health_deadline

    @property
    def settings(self) -> Settings:
        return self.agent.settings

    def sampler(self) -> SampleSource:
        return self.agent.sampler()

    def budget_statuses(self, sampler: SampleSource) -> dict[str, BudgetStatus]:
        budget = getattr(sampler, "budget", None)
        return dict(budget.statuses()) if budget is not None else {}

    def drift(self, *, refresh: bool) -> list[Check]:
        if refresh:
            self.agent.refresh()
        agent = self.agent
        live = agent.root.is_live
        report = verify(agent.facts, agent.settings, agent.plan(), agent.root,
                        named_active=agent.service.is_active if live else None)
        return [c for c in report.checks if not c.ok]

    def health(self) -> Health:
        return wait_healthy(self.settings.cache.health_name, deadline_s=self.health_deadline)

    def instance_id(self) -> str:
        ec2 = self.agent.facts.ec2
        if ec2 is not None:
            return ec2.instance_id
        name = socket.gethostname()
        log.warning("not on EC2: CloudWatch InstanceId dimension is the hostname %s", name)
        return name

    def apply(self) -> str:
        report = self.agent.transaction().apply(self.agent.plan())
        if report.nothing_to_do:
            return "nothing to change"
        action = f"; named {report.service_action}" if report.service_action else ""
        return f"changed {', '.join(report.changed) or 'no files'}{action}"


class InProcessRepair:
    """Runs the transaction here (the process must be allowed to write /etc and reload
    named: root without the hardened unit, e.g. `dnscache-agent run` in a shell)."""

    def repair(self, host: HostPort) -> str:
        apply = getattr(host, "apply", None)
        if apply is None:
            raise DnscacheError("this host cannot apply in process")
        return str(apply())


class TriggerRepair:
    """Asks a privileged unit to run `dnscache-agent apply` by rewriting a trigger file that a
    systemd path unit watches (PathChanged=). The long-running unit then needs no write access
    to /etc and no right to reload named."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock

    def repair(self, host: HostPort) -> str:
        body = f"repair requested at {self.clock():.0f} by pid {os.getpid()}\n"
        # A plain write: closing it is the IN_CLOSE_WRITE the path unit waits for, and the
        # hardened unit forbids chown (an atomic_write would need it).
        try:
            self.path.write_text(body, encoding="utf-8")
        except OSError as exc:
            raise ApplyError(f"{self.path}: cannot request a repair: {exc.strerror}") from None
        return f"asked the repair unit through {self.path}"


# --- sinks --------------------------------------------------------------------------------


class PrometheusSink:
    """Serves the latest sample on 127.0.0.1:`port` from prometheus_client's thread."""

    name = "prometheus"

    def __init__(self, port: int) -> None:
        from .sinks.prometheus import PrometheusServer

        self.latest: Sample | None = None
        self.server = PrometheusServer(lambda: self.latest, port)

    def export(self, sample: Sample) -> None:
        self.latest = sample

    def close(self, *, final: bool) -> None:
        # At exit the kernel closes the socket; shutdown() would wait up to 0.5 s for the
        # server's poll loop, eating the SIGTERM budget.
        if not final:
            self.server.close()


class TextfileSink:
    """Rewrites a node_exporter textfile every TEXTFILE_EVERY_SECONDS."""

    name = "textfile"

    def __init__(self, path: str, *, clock: Callable[[], float] = time.monotonic,
                 every: float = TEXTFILE_EVERY_SECONDS) -> None:
        self.path = path
        self.clock = clock
        self.every = every
        self._next = 0.0
        self._failing = False

    def export(self, sample: Sample) -> None:
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.every
        from .sinks.prometheus import write_textfile

        try:
            write_textfile(self.path, sample)
        except OSError as exc:
            if not self._failing:
                log.error("textfile %s: %s", self.path, exc.strerror or exc)
            self._failing = True
        else:
            if self._failing:
                log.info("textfile %s: writing again", self.path)
            self._failing = False

    def close(self, *, final: bool) -> None:
        pass


class CloudWatchWorker:
    """Feeds a `CloudWatchSink` on its own thread: its sends retry with sleeps, and the loop
    must keep its one-second cadence and watchdog pings. A full queue drops samples (counted)
    rather than blocking the loop."""

    name = "cloudwatch"

    def __init__(self, sink: Any, *, max_queue: int = 600, tick_every: float = 1.0) -> None:
        self.sink = sink
        self.tick_every = tick_every
        self.queue: queue.Queue[Sample | None] = queue.Queue(maxsize=max_queue)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="dnscache-cloudwatch",
                                        daemon=True)
        self._thread.start()

    def export(self, sample: Sample) -> None:
        try:
            self.queue.put_nowait(sample)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=self.tick_every)
            except queue.Empty:
                item = None
                stop = False
            else:
                stop = item is None
            if item is not None:
                self.sink.add(item)
            if stop:
                self.sink.flush(everything=True)
                return
            self.sink.tick()

    def close(self, *, final: bool) -> None:
        try:
            self.queue.put(None, timeout=0.1)
        except queue.Full:
            log.warning("CloudWatch: queue full at shutdown; the minute in progress is lost")
            return
        self._thread.join(FINAL_FLUSH_SECONDS if final else 30.0)
        if self._thread.is_alive():
            log.warning("CloudWatch: final flush still running after %.1fs; leaving it",
                        FINAL_FLUSH_SECONDS if final else 30.0)


def build_sinks(metrics: MetricsSettings, host: HostPort) -> list[Sink]:
    """The sinks `[metrics]` asks for. A sink that cannot start is logged and left out, so
    a taken port does not stop the cache's self-healing."""
    sinks: list[Sink] = []
    if metrics.prometheus_port:
        try:
            sinks.append(PrometheusSink(metrics.prometheus_port))
        except OSError as exc:
            log.error("Prometheus: cannot listen on 127.0.0.1:%s: %s", metrics.prometheus_port,
                      exc.strerror or exc)
    if metrics.textfile:
        sinks.append(TextfileSink(metrics.textfile))
    if metrics.cloudwatch:
        from .sinks.cloudwatch import CloudWatchSink

        try:
            cw = CloudWatchSink(metrics.namespace, host.instance_id(),
                                region=metrics.region or None,
                                endpoint_url=metrics.endpoint_url or None,
                                high_resolution=metrics.high_resolution)
        except Exception as exc:  # boto3 raises several types for missing region/credentials
            log.error("CloudWatch: sink not started: %s", exc)
        else:
            sinks.append(CloudWatchWorker(cw))
    return sinks


# --- the loop -----------------------------------------------------------------------------


class _Stop(BaseException):
    """Raised by the SIGTERM handler to leave a blocking step at once."""


@dataclass
class LoopState:
    """What the loop knows, for STATUS= and tests."""

    ready: bool = False
    stats_ok: bool | None = None
    drift: tuple[Check, ...] = ()
    repairs: int = 0
    last_status: str = ""
    last_health: Health | None = None


def format_status(state: LoopState, statuses: dict[str, BudgetStatus],
                  upstream: str | None) -> str:
    """The one-line STATUS= shown by `systemctl status` (pure)."""
    parts = []
    if not state.ready:
        detail = state.last_health.detail if state.last_health else "no query yet"
        parts.append(f"waiting for the cache to answer ({detail})")
    status = statuses.get(upstream or "") or next(iter(statuses.values()), None)
    if status is not None:
        parts.append(f"{status.interface} headroom {status.headroom_pct:.0f}% "
                     f"({status.pps:.0f} of {status.limit_pps:.0f} pkt/s)")
    elif state.stats_ok is False:
        parts.append("statistics channel not answering")
    if state.drift:
        parts.append(f"drift in {len(state.drift)} check(s), repairing")
    elif state.ready:
        parts.append("config ok")
    return "; ".join(parts)


class Daemon:
    """The main loop. `run()` returns an exit code; `request_stop()`/`request_reload()` are
    what the signal handlers call (tests call them directly)."""

    def __init__(self, host_factory: Callable[[], HostPort], *, notifier: Notifier,
                 repairer: Repairer | None,
                 sinks_factory: Callable[[MetricsSettings, HostPort], Sequence[Sink]] =
                 build_sinks,
                 clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[float], None] | None = None) -> None:
        self.host_factory = host_factory
        self.notifier = notifier
        self.repairer = repairer
        self.sinks_factory = sinks_factory
        self.clock = clock
        self._wake = threading.Event()
        self._wait = wait or self._event_wait
        self._stop = False
        self._reload = False
        self._interruptible = False
        self.state = LoopState()
        self.host = host_factory()
        self.sampler: SampleSource | None = None
        self.sinks: list[Sink] = []
        self._next_ping = 0.0

    # --- signals --------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()

    def request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads (main thread only)."""

        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.request_stop()
            if self._interruptible:
                raise _Stop()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.request_reload()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def _event_wait(self, seconds: float) -> None:
        if seconds > 0:
            self._wake.wait(seconds)
        self._wake.clear()

    # --- steps ----------------------------------------------------------------------------

    def _start_collaborators(self) -> None:
        settings = self.host.settings
        self.sampler = self.host.sampler()
        self.sinks = list(self.sinks_factory(settings.metrics, self.host))
        log.info("running: statistics every %gs, verify every %ss, sinks: %s",
                 settings.daemon.stats_interval, settings.daemon.verify_interval,
                 ", ".join(s.name for s in self.sinks) or "none")

    def _close_sinks(self, *, final: bool) -> None:
        for sink in self.sinks:
            try:
                sink.close(final=final)
            except Exception:
                log.exception("closing the %s sink failed", sink.name)
        self.sinks = []

    def reload(self) -> bool:
        """Re-read the settings file; keep the old settings when it is invalid."""
        self._reload = False
        try:
            host = self.host_factory()
        except ConfigError as exc:
            log.error("reload: %s; keeping the previous settings", exc)
            return False
        old = self.host.settings
        self._close_sinks(final=False)
        self.host = host
        self._start_collaborators()
        log.info("reloaded settings from %s%s", host.settings.source,
                 "" if host.settings != old else " (unchanged)")
        return True

    def _stats_step(self) -> None:
        assert self.sampler is not None
        try:
            sample = self.sampler.sample()
        except DnscacheError as exc:
            if self.state.stats_ok is not False:
                log.warning("statistics: %s", exc)
            self.state.stats_ok = False
            return
        if self.state.stats_ok is False:
            log.info("statistics: channel answering again")
        self.state.stats_ok = True
        if sample is None:
            return
        for sink in self.sinks:
            try:
                sink.export(sample)
            except Exception:
                log.exception("%s sink failed on a sample", sink.name)

    def _verify_step(self) -> bool:
        """Compare host and plan; repair on drift. Returns True when a repair ran."""
        drift = self.host.drift(refresh=False)
        if drift:
            # The cached facts may be stale (a DHCP renew changed what the plan reads):
            # plan again from fresh facts before calling anything drift.
            drift = self.host.drift(refresh=True)
        was = self.state.drift
        self.state.drift = tuple(drift)
        if not drift:
            if was:
                log.info("host matches the plan again")
            return False
        for c in drift:
            where = f"{c.path}:{c.line}" if c.path and c.line else (c.path or c.name)
            log.warning("drift: %s: %s", where, c.detail)
        fixable = [c for c in drift if c.name not in UNREPAIRABLE]
        if len(fixable) < len(drift):
            log.error("not repairing: %s", "; ".join(c.detail for c in drift
                                                      if c.name in UNREPAIRABLE))
            return False
        if self.repairer is None:
            log.warning("repair disabled; run `dnscache-agent apply`")
            return False
        try:
            summary = self.repairer.repair(self.host)
        except DnscacheError as exc:
            log.error("repair failed: %s", exc)
            return True
        self.state.repairs += 1
        log.info("repair: %s", summary)
        return True

    def _health_step(self) -> None:
        health = self.host.health()
        self.state.last_health = health
        if health.ok and not self.state.ready:
            self.state.ready = True
            log.info("ready: %s", health.detail)
            self.notifier.notify(READY="1", STATUS=self._status_text())
        elif not health.ok:
            log.warning("health: %s", health.detail)

    def _status_text(self) -> str:
        statuses = self.host.budget_statuses(self.sampler) if self.sampler else {}
        upstream = getattr(self.sampler, "upstream_interface", None)
        return format_status(self.state, statuses, upstream)

    def _ping(self, now: float) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None or now < self._next_ping:
            return
        self.notifier.notify(WATCHDOG="1")
        self._next_ping = now + interval

    def _publish_status(self) -> None:
        text = self._status_text()
        if text != self.state.last_status:
            self.state.last_status = text
            self.notifier.notify(STATUS=text)

    # --- run ------------------------------------------------------------------------------

    def run(self, *, max_iterations: int | None = None) -> int:
        """Loop until stopped. `max_iterations` bounds the loop in tests."""
        self._start_collaborators()
        now = self.clock()
        next_stats = now
        next_verify = now
        iterations = 0
        try:
            while not self._stop:
                self._interruptible = True
                if self._reload and self.reload():
                    next_verify = self.clock()
                now = self.clock()
                self._ping(now)
                daemon = self.host.settings.daemon
                if now >= next_stats:
                    self._stats_step()
                    next_stats += daemon.stats_interval
                    if next_stats <= now:  # fell behind (a slow step): skip, don't burst
                        next_stats = now + daemon.stats_interval
                if now >= next_verify:
                    self._interruptible = False  # an in-process transaction traps signals
                    repaired = self._verify_step()
                    self._interruptible = True
                    next_verify = self.clock() + (
                        min(daemon.verify_interval, REPAIR_RECHECK_SECONDS) if repaired
                        else daemon.verify_interval)
                    if self.state.ready and self.state.drift:
                        self._health_step()
                if not self.state.ready:
                    self._health_step()
                self._ping(self.clock())
                self._publish_status()
                iterations += 1
                if max_iterations is not None and iterations >= max_iterations:
                    break
                if self._stop:
                    break
                deadline = min(next_stats, next_verify)
                if self.notifier.watchdog_interval is not None:
                    deadline = min(deadline, self._next_ping)
                self._wait(max(0.0, deadline - self.clock()))
        except _Stop:
            pass
        finally:
            self._interruptible = False
        log.info("stopping")
        self.notifier.notify(STOPPING="1", STATUS="stopping")
        self._close_sinks(final=True)
        return 0


def run_daemon(agent: Agent, args: argparse.Namespace) -> int:
    """Entry point for `dnscache-agent run`: wires the real agent, sd_notify and signals."""
    from .app import Agent as AgentClass

    if not getattr(args, "verbose", 0):
        # The daemon's INFO lines (repairs, reloads) belong in the journal by default.
        logging.getLogger("dnscache_agent").setLevel(logging.INFO)
    first: list[Agent] = [agent]

    def host_factory() -> HostPort:
        # The first host is the agent the CLI built; a reload builds a new one from the
        # same options, re-reading the settings file.
        built = first.pop() if first else AgentClass(agent.opts, runner=agent.runner)
        return AgentPort(built)

    trigger = getattr(args, "repair_trigger", None)
    repairer: Repairer | None
    if getattr(args, "no_repair", False):
        repairer = None
    elif trigger:
        repairer = TriggerRepair(Path(trigger))
    else:
        repairer = InProcessRepair()
    daemon = Daemon(host_factory, notifier=notifier_from_env(), repairer=repairer)
    daemon.install_signal_handlers()
    return daemon.run()
