"""The daemon loop with a fake clock, host, sampler, notifier, repairer and sinks: cadence,
READY/WATCHDOG/STATUS, drift repair, reload and stop. No process, socket or real sleep."""
from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from dnscache_agent.commands import Result
from dnscache_agent.daemon import Daemon, LoopState, format_status
from dnscache_agent.errors import ApplyError, ConfigError
from dnscache_agent.health import Health
from dnscache_agent.host_port import HostPort, TriggerRepair
from dnscache_agent.settings import MetricsSettings, Settings, from_mapping
from dnscache_agent.sinks.adapters import CloudWatchWorker, Sink
from dnscache_agent.stats.budget import BudgetStatus, BudgetTracker
from dnscache_agent.stats.catalogue import Sample
from dnscache_agent.stats.collector import StatsUnavailableError
from dnscache_agent.stats.ena import EthtoolReader, OptionalEnaReader
from dnscache_agent.verify import Check

DRIFT = Check("file /etc/resolv.conf", False,
              "drift: line 1 is 'nameserver 10.0.0.2', expected 'nameserver 127.0.0.1'",
              "/etc/resolv.conf", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += max(seconds, 0.001)


class FakeSampler:
    upstream_interface = "eth0"

    def __init__(self, clock: Clock, pps: float = 24.0) -> None:
        self.clock = clock
        self.budget = BudgetTracker(1024, clock=clock)
        self.pps = pps
        self.calls = 0
        self.fail = False

    def sample(self) -> Sample | None:
        self.calls += 1
        if self.fail:
            raise StatsUnavailableError("http://127.0.0.1:8053/json/v1: ConnectionError")
        if self.calls == 1:
            return None  # primes the counters, like the real sampler
        self.budget.record("eth0", self.pps)
        return Sample(self.clock(), {"queries_per_second": 5.0})


class FakeHost:
    def __init__(self, clock: Clock, *, verify_interval: int = 10, source: str = "a.toml",
                 health: Sequence[bool] = (True,)) -> None:
        self._settings = from_mapping({"daemon": {"verify_interval": verify_interval,
                                                  "stats_interval": 1.0}}, source)
        self.clock = clock
        self._sampler = FakeSampler(clock)
        self.health_results = list(health)
        self.drift_script: list[list[Check]] = []  # consumed per drift() call
        self.drift_calls: list[tuple[float, bool]] = []

    @property
    def settings(self) -> Settings:
        return self._settings

    def sampler(self) -> FakeSampler:
        return self._sampler

    def budget_statuses(self, sampler: object) -> dict[str, BudgetStatus]:
        return self._sampler.budget.statuses()

    def drift(self, *, refresh: bool) -> list[Check]:
        self.drift_calls.append((self.clock(), refresh))
        return self.drift_script.pop(0) if self.drift_script else []

    def health(self) -> Health:
        ok = self.health_results.pop(0) if len(self.health_results) > 1 else \
            self.health_results[0]
        return Health(ok, "amazonaws.com A @127.0.0.1: " + ("NOERROR" if ok else "no answer"))

    def instance_id(self) -> str:
        return "i-0123456789abcdef0"


class Notes:
    def __init__(self, watchdog: float | None = None) -> None:
        self.watchdog_interval = watchdog
        self.sent: list[tuple[float, dict[str, str]]] = []
        self.clock: Clock | None = None

    def notify(self, **fields: str) -> bool:
        self.sent.append((self.clock() if self.clock else 0.0, fields))
        return True

    def keys(self, key: str) -> list[float]:
        return [t for t, f in self.sent if key in f]


class RecordingSink:
    name = "recording"

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.closed: list[bool] = []

    def export(self, sample: Sample) -> None:
        self.samples.append(sample)

    def close(self, *, final: bool) -> None:
        self.closed.append(final)


class Repairs:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[float] = []
        self.fail = fail
        self.clock: Clock | None = None

    def repair(self, host: HostPort) -> str:
        self.calls.append(self.clock() if self.clock else 0.0)
        if self.fail:
            raise ApplyError("health check after reloading named failed; rolled back 1 file(s)")
        return "changed /etc/resolv.conf"


def make(host: FakeHost | None = None, *, watchdog: float | None = None,
         repairer: Repairs | None = None
         ) -> tuple[Daemon, Clock, FakeHost, Notes, RecordingSink, Repairs]:
    clock = host.clock if host else Clock()
    host = host or FakeHost(clock)
    notes = Notes(watchdog)
    notes.clock = clock
    sink = RecordingSink()
    repairs = repairer or Repairs()
    repairs.clock = clock

    def sinks(metrics: MetricsSettings, h: HostPort) -> list[Sink]:
        return [sink]

    daemon = Daemon(lambda: host, notifier=notes, repairer=repairs, sinks_factory=sinks,
                    clock=clock, wait=clock.wait)
    return daemon, clock, host, notes, sink, repairs


def test_samples_once_per_stats_interval_and_exports_each_one() -> None:
    daemon, clock, host, notes, sink, _ = make()
    start = clock()
    daemon.run(max_iterations=31)
    assert 29 <= clock() - start <= 31
    assert host._sampler.calls == 31
    assert len(sink.samples) == 30  # the first call only primes the counters
    assert sink.closed == [True]


def test_ready_only_after_the_first_health_query_passes() -> None:
    host = FakeHost(Clock(), health=(False, False, False, True))
    daemon, clock, host, notes, _, _ = make(host)
    daemon.run(max_iterations=6)
    ready = [f for _, f in notes.sent if "READY" in f]
    assert len(ready) == 1
    # Sent on the 4th iteration: three failed queries came first.
    assert notes.keys("READY")[0] == pytest.approx(1003.0, abs=0.01)
    statuses = [f["STATUS"] for _, f in notes.sent if "STATUS" in f]
    assert statuses[0].startswith("waiting for the cache to answer")
    assert any("eth0 headroom 98% (24 of 1024 pkt/s)" in s for s in statuses)


def test_watchdog_pinged_at_half_the_timeout_from_the_loop() -> None:
    daemon, clock, _, notes, _, _ = make(watchdog=5.0)
    daemon.run(max_iterations=40)
    pings = notes.keys("WATCHDOG")
    assert len(pings) >= 7
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) <= 5.0 + 1e-6


def test_drift_is_logged_with_path_and_line_then_repaired(
        caplog: pytest.LogCaptureFixture) -> None:
    daemon, clock, host, notes, _, repairs = make(FakeHost(Clock(), verify_interval=30))
    # First check clean; second finds drift (cached and fresh facts agree); then fixed.
    host.drift_script = [[], [DRIFT], [DRIFT], []]
    with caplog.at_level(logging.INFO, logger="dnscache_agent"):
        daemon.run(max_iterations=60)
    assert len(repairs.calls) == 1
    assert repairs.calls[0] == pytest.approx(1030.0, abs=1.01)
    assert "drift: /etc/resolv.conf:1: drift: line 1 is 'nameserver 10.0.0.2'" in caplog.text
    assert "repair: changed /etc/resolv.conf" in caplog.text
    # A repair is re-checked sooner than the interval, and confirmed in the log.
    times = [t for t, refresh in host.drift_calls if not refresh]
    assert times[2] - times[1] == pytest.approx(10.0, abs=1.01)
    assert "host matches the plan again" in caplog.text
    assert [r for _, r in host.drift_calls].count(True) == 1


def test_drift_that_fresh_facts_explain_is_not_repaired() -> None:
    daemon, _, host, _, _, repairs = make()
    host.drift_script = [[DRIFT], []]  # stale facts said drift; re-planning says fine
    daemon.run(max_iterations=5)
    assert repairs.calls == []
    assert daemon.state.drift == ()


def test_a_failed_repair_is_logged_and_retried_next_cycle(
        caplog: pytest.LogCaptureFixture) -> None:
    daemon, _, host, _, _, repairs = make(repairer=Repairs(fail=True))
    host.drift_script = [[DRIFT]] * 10
    with caplog.at_level(logging.INFO, logger="dnscache_agent"):
        daemon.run(max_iterations=25)
    assert len(repairs.calls) >= 2
    assert "repair failed: health check after reloading named failed" in caplog.text


def test_missing_bind_is_reported_not_repaired(caplog: pytest.LogCaptureFixture) -> None:
    daemon, _, host, _, _, repairs = make()
    missing = Check("bind installed", False, "/usr/sbin/named missing")
    host.drift_script = [[missing], [missing]]
    with caplog.at_level(logging.INFO, logger="dnscache_agent"):
        daemon.run(max_iterations=3)
    assert repairs.calls == []
    assert "not repairing: /usr/sbin/named missing" in caplog.text


def test_stats_outage_is_logged_once_and_recovery_once(
        caplog: pytest.LogCaptureFixture) -> None:
    daemon, _, host, notes, sink, _ = make()
    host._sampler.fail = True
    with caplog.at_level(logging.INFO, logger="dnscache_agent"):
        daemon.run(max_iterations=5)
        assert caplog.text.count("statistics: http://127.0.0.1:8053") == 1
        assert any("statistics channel not answering" in f.get("STATUS", "")
                   for _, f in notes.sent)
        host._sampler.fail = False
        daemon._stop = False
        daemon.run(max_iterations=5)
    assert caplog.text.count("channel answering again") == 1
    assert sink.samples


def test_sighup_reload_rebuilds_from_the_settings_file_and_keeps_old_on_error(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    hosts = [FakeHost(clock, source="a.toml"), FakeHost(clock, source="b.toml")]
    built: list[FakeHost] = []

    def factory() -> HostPort:
        if not hosts:
            raise ConfigError("/etc/dnscache-agent/agent.toml: daemon.verify_interval: 1 is "
                              "out of range 5..86400")
        built.append(hosts.pop(0))
        return built[-1]

    notes = Notes()
    sinks: list[RecordingSink] = []

    def make_sinks(metrics: MetricsSettings, h: HostPort) -> list[Sink]:
        sinks.append(RecordingSink())
        return [sinks[-1]]

    daemon = Daemon(factory, notifier=notes, repairer=None, sinks_factory=make_sinks,
                    clock=clock, wait=clock.wait)
    daemon.request_reload()
    with caplog.at_level(logging.INFO, logger="dnscache_agent"):
        daemon.run(max_iterations=2)
        assert daemon.host is built[1]
        assert sinks[0].closed == [False]  # the old sinks were closed for the new ones
        daemon.request_reload()
        daemon.run(max_iterations=2)
    assert daemon.host is built[1]
    assert "keeping the previous settings" in caplog.text
    assert "reloaded settings from b.toml" in caplog.text


def test_stop_request_ends_the_loop_and_says_stopping() -> None:
    daemon, clock, _, notes, sink, _ = make()

    def stop_soon(seconds: float) -> None:
        clock.wait(seconds)
        if clock() > 1005:
            daemon.request_stop()

    daemon._wait = stop_soon
    assert daemon.run() == 0
    assert clock() < 1007
    assert notes.sent[-1][1] == {"STOPPING": "1", "STATUS": "stopping"}
    assert sink.closed == [True]


def test_sigterm_interrupts_a_blocking_step_at_once() -> None:
    """SIGTERM while the loop is blocked (a slow query): the handler leaves the step."""
    clock = Clock()

    class SlowHost(FakeHost):
        def health(self) -> Health:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # a hung query; the handler must cut it short
            raise AssertionError("not interrupted")

    daemon, *_ = make(SlowHost(clock, health=(False,)))
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        daemon.install_signal_handlers()
        start = time.monotonic()
        assert daemon.run() == 0
        assert time.monotonic() - start < 1.0
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def test_trigger_repair_rewrites_the_watched_file(tmp_path: Path) -> None:
    trigger = TriggerRepair(tmp_path / "repair-request", clock=lambda: 1234.0)
    assert "repair-request" in trigger.repair(FakeHost(Clock()))
    first = (tmp_path / "repair-request").read_text()
    assert first.startswith("repair requested at 1234 by pid ")
    with pytest.raises(ApplyError, match="cannot request a repair"):
        TriggerRepair(tmp_path / "missing-dir" / "x").repair(FakeHost(Clock()))


def test_cloudwatch_worker_feeds_the_sink_off_the_loop_and_flushes_at_close() -> None:
    class FakeCloudWatch:
        def __init__(self) -> None:
            self.added: list[Sample] = []
            self.ticks = 0
            self.flushed_everything = False

        def add(self, sample: Sample) -> None:
            self.added.append(sample)

        def tick(self) -> bool:
            self.ticks += 1
            return False

        def flush(self, *, everything: bool = False) -> int:
            self.flushed_everything = everything
            return len(self.added)

    cw = FakeCloudWatch()
    worker = CloudWatchWorker(cw, tick_every=0.01)
    for i in range(5):
        worker.export(Sample(float(i)))
    worker.close(final=True)
    assert [s.timestamp for s in cw.added] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert cw.flushed_everything and cw.ticks >= 1


def test_status_line_names_the_upstream_interface_headroom() -> None:
    tracker = BudgetTracker(1024, clock=lambda: 0.0)
    tracker.record("eth0", 922.0)
    tracker.record("eth1", 10.0)
    state = LoopState(ready=True)
    line = format_status(state, tracker.statuses(), "eth0")
    assert line == "eth0 headroom 10% (922 of 1024 pkt/s); config ok"
    state.drift = (DRIFT,)
    assert "drift in 1 check(s)" in format_status(state, tracker.statuses(), "eth0")


def test_missing_ethtool_costs_the_ena_counters_not_the_sample(
        caplog: pytest.LogCaptureFixture) -> None:
    class NoEthtool:
        def run(self, argv: Sequence[str], *, timeout: float | None = None) -> Result:
            return Result(tuple(argv), 127, "", "ethtool: command not found")

    tolerant = OptionalEnaReader(EthtoolReader(NoEthtool()))
    with caplog.at_level(logging.WARNING, logger="dnscache_agent"):
        for _ in range(3):
            counters = tolerant.read_all(["eth0"])
    assert counters["eth0"].is_ena is False
    assert caplog.text.count("ENA counters for eth0 unavailable") == 1


# --- issue 11/12: adopt the admin's settings, rollback is final, the loop survives steps ---


class ChangingHost(FakeHost):
    """A host whose settings file changes (an admin ran `apply` with new settings)."""

    def __init__(self, clock: Clock, *, changed: list[bool], applied: list[bool] | None = None,
                 source: str = "a.toml") -> None:
        super().__init__(clock, source=source)
        self.changed = changed
        self.applied_script = applied

    def settings_changed(self) -> bool:
        return self.changed.pop(0) if self.changed else False

    def applied(self) -> bool:
        if self.applied_script is None:
            return True
        return self.applied_script.pop(0) if len(self.applied_script) > 1 else \
            self.applied_script[0]


def test_a_changed_settings_file_is_read_again_before_drift_is_judged() -> None:
    """The repair must plan with the admin's new settings, not revert them."""
    clock = Clock()
    first = ChangingHost(clock, changed=[False, True], source="old.toml")
    second = ChangingHost(clock, changed=[], source="new.toml")
    second.drift_script = [[Check("file /etc/bind/named.conf.options", False, "drift")]]
    hosts = [first, second]
    daemon = Daemon(lambda: hosts.pop(0), notifier=Notes(), repairer=Repairs(),
                    sinks_factory=lambda m, h: [], clock=clock, wait=clock.wait)
    daemon.run(max_iterations=25)  # verify at t=0 and t=10 (verify_interval 10)
    assert daemon.host is second
    # The drift was judged (and repaired) by the host built from the new file only.
    assert first.drift_calls and len(second.drift_calls) >= 1
    assert first.drift_calls[-1][0] < second.drift_calls[0][0]


def test_after_a_rollback_nothing_is_repaired(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    host = ChangingHost(clock, changed=[], applied=[True, False])
    host.drift_script = [[Check("file /etc/resolv.conf", False, "drift")]] * 5
    daemon, _, _, notes, _, repairs = make(host)
    with caplog.at_level(logging.WARNING, logger="dnscache_agent"):
        daemon.run(max_iterations=40)
    assert repairs.calls == [1000.0]  # before the rollback only
    assert daemon.state.rolled_back
    assert "rolled back: not repairing" in daemon._status_text()
    assert caplog.text.count("the agent was rolled back") == 1


def test_a_failing_step_is_logged_once_and_the_loop_carries_on(
        caplog: pytest.LogCaptureFixture) -> None:
    daemon, clock, host, notes, sink, _ = make()

    def broken(*, refresh: bool) -> list[Check]:
        raise ValueError("unexpected thing")

    host.drift = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.DEBUG, logger="dnscache_agent"):
        daemon.run(max_iterations=35)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "verify step failed: ValueError: unexpected thing (the loop carries on)"]
    assert len(sink.samples) >= 30  # statistics went on every second
    assert not any(r.exc_info for r in caplog.records if r.levelno > logging.DEBUG)


def test_ready_while_the_upstream_resolver_is_dark() -> None:
    """DNS disabled in the VPC: named answers SERVFAIL. READY anyway (boot must not wait for
    nss-lookup.target), and the status blames the upstream, not the agent."""
    clock = Clock()
    host = FakeHost(clock)

    def servfail() -> Health:
        return Health(False, "amazonaws.com A @127.0.0.1: SERVFAIL", rcode="SERVFAIL")

    host.health = servfail  # type: ignore[method-assign]
    daemon, _, _, notes, _, _ = make(host)
    daemon.run(max_iterations=3)
    assert notes.keys("READY")
    assert daemon.state.upstream_ok is False
    assert "upstream resolver unreachable" in daemon._status_text()


def test_files_this_user_cannot_read_are_left_to_the_privileged_repair_now_and_then() -> None:
    """netplan's files are 0600 root: the unprivileged daemon cannot judge them, so it asks
    the repair unit (which changes nothing when they match) every few verify intervals, not at
    every check and not never."""
    clock = Clock()
    host = FakeHost(clock, verify_interval=10)
    host.root_only = ("/etc/netplan/99-dnscache-agent.yaml",)  # type: ignore[attr-defined]
    daemon, _, _, _, _, repairs = make(host)
    daemon.run(max_iterations=130)  # about 130 s: verifies at 0, 10, 20, ...
    assert repairs.calls and repairs.calls[0] == 1000.0
    gaps = [b - a for a, b in zip(repairs.calls, repairs.calls[1:])]
    assert gaps and all(g >= 60 for g in gaps), repairs.calls
