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
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Callable

from .errors import ConfigError, DnscacheError
from .health import Health
from .host_port import AgentPort, HostPort, InProcessRepair, Repairer, SampleSource, TriggerRepair
from .sd_notify import Notifier, notifier_from_env
from .settings import MetricsSettings
from .sinks.adapters import Sink, build_sinks
from .verify import Check

if TYPE_CHECKING:
    import argparse

    from .app import Agent
    from .stats.budget import BudgetStatus

log = logging.getLogger(__name__)

#: After a repair, check again this soon (or at verify_interval if that is shorter), so the
#: journal says whether the repair took.
REPAIR_RECHECK_SECONDS = 10.0
#: Files the daemon's user cannot read are checked by the privileged repair every this many
#: verify intervals (at least every ROOT_CHECK_MIN_SECONDS apart).
ROOT_CHECK_VERIFIES = 6
ROOT_CHECK_MIN_SECONDS = 30.0
#: Checks that no repair can fix (a missing package needs `apply --install-packages`).
UNREPAIRABLE = frozenset({"bind installed"})


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
    upstream_ok: bool | None = None
    applied_seen: bool = False
    rolled_back: bool = False


def format_status(state: LoopState, statuses: dict[str, BudgetStatus],
                  upstream: str | None) -> str:
    """The one-line STATUS= shown by `systemctl status` (pure)."""
    parts = []
    if not state.ready:
        detail = state.last_health.detail if state.last_health else "no query yet"
        parts.append(f"waiting for the cache to answer ({detail})")
    elif state.upstream_ok is False:
        detail = state.last_health.detail if state.last_health else ""
        parts.append(f"upstream resolver unreachable, the cache answers from what it holds "
                     f"({detail})")
    status = statuses.get(upstream or "") or next(iter(statuses.values()), None)
    if status is not None:
        parts.append(f"{status.interface} headroom {status.headroom_pct:.0f}% "
                     f"({status.pps:.0f} of {status.limit_pps:.0f} pkt/s)")
    elif state.stats_ok is False:
        parts.append("statistics channel not answering")
    if state.rolled_back:
        parts.append("rolled back: not repairing")
    elif state.drift:
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
        self._failed_kinds: set[tuple[str, str]] = set()
        self._next_root_check = 0.0

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
        """Compare host and plan; repair on drift. Returns True when a repair ran.

        The plan is always the one the admin last asked for: a changed agent.toml is read
        again first (`apply` with new settings must be adopted, not reverted). After a
        rollback (the checkpoint the daemon saw is gone) nothing is repaired: rollback is
        final, even for a daemon nobody stopped."""
        changed = getattr(self.host, "settings_changed", None)
        if changed is not None and changed():
            log.info("settings file changed; reading it again")
            self.reload()
        applied = getattr(self.host, "applied", None)
        if applied is not None:
            now_applied = bool(applied())
            if self.state.applied_seen and not now_applied and not self.state.rolled_back:
                log.warning("the agent was rolled back; not repairing until the next apply")
                self.state.rolled_back = True
            if now_applied:
                self.state.applied_seen = True
                self.state.rolled_back = False
            if self.state.rolled_back:
                return False
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
            return self._root_only_check()
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

    def _root_only_check(self) -> bool:
        """Files this user may not read (netplan's 0600 files) are judged by the privileged
        repair instead: ask it now and then (it changes nothing when they match the plan)."""
        paths = tuple(getattr(self.host, "root_only", ()))
        if not paths or self.repairer is None:
            return False
        now = self.clock()
        if now < self._next_root_check:
            return False
        every = max(ROOT_CHECK_MIN_SECONDS,
                    ROOT_CHECK_VERIFIES * self.host.settings.daemon.verify_interval)
        self._next_root_check = now + every
        try:
            summary = self.repairer.repair(self.host)
        except DnscacheError as exc:
            log.error("check of files this user cannot read failed: %s", exc)
            return True
        log.info("asked for a check of %d file(s) this user cannot read (%s): %s",
                 len(paths), ", ".join(paths), summary)
        return True

    def _health_step(self) -> None:
        """READY once named answers on loopback at all. A SERVFAIL means named runs but the
        VPC resolver does not answer (DNS disabled in the VPC, no route at boot): that is
        reported as the upstream's state, not held against the agent, so boot does not wait
        for nss-lookup.target and systemd does not restart the agent in a loop."""
        health = self.host.health()
        self.state.last_health = health
        answers = health.ok or health.rcode is not None
        upstream_ok = health.ok
        if upstream_ok != self.state.upstream_ok and answers:
            if not upstream_ok:
                log.warning("upstream resolver unreachable: %s", health.detail)
            elif self.state.upstream_ok is False:
                log.info("upstream resolver answering again")
        if answers:
            self.state.upstream_ok = upstream_ok
        if answers and not self.state.ready:
            self.state.ready = True
            log.info("ready: %s", health.detail)
            self.notifier.notify(READY="1", STATUS=self._status_text())
        elif not answers:
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

    def _guarded(self, step: str, fn: Callable[[], object]) -> object:
        """Run one step; any exception is logged as one line (the first time for each kind,
        then at DEBUG) and the loop carries on, so the watchdog only catches real hangs."""
        try:
            result = fn()
        except _Stop:
            raise
        except Exception as exc:  # noqa: BLE001 - the loop must survive any single step
            kind = (step, type(exc).__name__)
            level = logging.DEBUG if kind in self._failed_kinds else logging.ERROR
            self._failed_kinds.add(kind)
            log.log(level, "%s step failed: %s: %s (the loop carries on)", step,
                    type(exc).__name__, exc)
            log.debug("%s step traceback", step, exc_info=True)
            return None
        self._failed_kinds = {k for k in self._failed_kinds if k[0] != step}
        return result

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
                    self._guarded("statistics", self._stats_step)
                    next_stats += daemon.stats_interval
                    if next_stats <= now:  # fell behind (a slow step): skip, don't burst
                        next_stats = now + daemon.stats_interval
                if now >= next_verify:
                    self._interruptible = False  # an in-process transaction traps signals
                    repaired = bool(self._guarded("verify", self._verify_step))
                    self._interruptible = True
                    daemon = self.host.settings.daemon  # a reload may have changed it
                    next_verify = self.clock() + (
                        min(daemon.verify_interval, REPAIR_RECHECK_SECONDS) if repaired
                        else daemon.verify_interval)
                    if self.state.ready and (self.state.drift or
                                             self.state.upstream_ok is False):
                        self._guarded("health", self._health_step)
                if not self.state.ready:
                    self._guarded("health", self._health_step)
                self._ping(self.clock())
                self._guarded("status", self._publish_status)
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
