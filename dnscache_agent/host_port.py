"""What the daemon loop needs from the host, and the two ways it repairs drift.

`AgentPort` adapts the real `Agent` (settings, sampler, the plan-vs-host check, the health
query) to the small `HostPort` protocol the loop is written and tested against.
`InProcessRepair` runs the transaction in this process (root, no hardened unit);
`TriggerRepair` asks the privileged oneshot unit to run it (the shipped units)."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from .errors import ApplyError, DnscacheError
from .health import Health, query_once, wait_healthy
from .settings import Settings
from .stats.catalogue import Sample
from .verify import ROOT_ONLY, Check, verify

if TYPE_CHECKING:
    from .app import Agent
    from .stats.budget import BudgetStatus

log = logging.getLogger(__name__)

#: How long an in-process repair waits for another run's lock before trying again later.
REPAIR_LOCK_WAIT_SECONDS = 5.0
#: A name named answers from its own default zones, without the upstream.
LIVENESS_NAME = "localhost"
LIVENESS_TIMEOUT = 1.0
#: The health query in the loop: short, so one slow answer cannot starve the watchdog.
HEALTH_DEADLINE_SECONDS = 2.0


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
        self._settings_fingerprint = settings_fingerprint(agent.settings.source)
        # Files the last check could not judge as this user (netplan's 0600 files).
        self.root_only: tuple[str, ...] = ()

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
        plan = agent.plan()
        report = verify(agent.facts, agent.settings, plan, agent.root,
                        named_active=agent.service.is_active if live else None,
                        pacer=agent.pacer_status(plan))
        self.root_only = tuple(c.path or c.name for c in report.checks
                               if c.ok and ROOT_ONLY in c.detail)
        return [c for c in report.checks if not c.ok]

    def health(self) -> Health:
        """A real lookup through the cache. When nothing answers it in time (a blackholed
        resolver makes named wait out its fetch), ask named for `localhost`, which it answers
        itself: an answer there means the cache is up and only the upstream is dark."""
        health = wait_healthy(self.settings.cache.health_name, deadline_s=self.health_deadline)
        if health.ok or health.rcode is not None:
            return health
        alive = query_once(LIVENESS_NAME, timeout=LIVENESS_TIMEOUT)
        if alive.rcode is None:
            return health
        return Health(False, f"{health.detail}; named answers itself ({LIVENESS_NAME}: "
                             f"{alive.rcode}) but nothing comes from upstream",
                      rcode=alive.rcode)

    def settings_changed(self) -> bool:
        """Whether agent.toml is not the file these settings were read from (an admin
        changed it, and ran `apply` with it): the loop then re-reads it, so a repair
        adopts the admin's change instead of reverting it."""
        return settings_fingerprint(self.agent.settings.source) != self._settings_fingerprint

    def applied(self) -> bool:
        """Whether the agent's checkpoint exists (False after a rollback)."""
        try:
            return self.agent.state_store().original.exists
        except DnscacheError:
            return True

    def instance_id(self) -> str:
        ec2 = self.agent.facts.ec2
        if ec2 is not None:
            return ec2.instance_id
        name = socket.gethostname()
        log.warning("not on EC2: CloudWatch InstanceId dimension is the hostname %s", name)
        return name

    def apply(self) -> str:
        # A short wait: a busy lock (an admin's apply) means retry at the next interval.
        lock = self.agent.lock()
        lock.timeout = REPAIR_LOCK_WAIT_SECONDS
        with lock:
            # Checked under the lock: a rollback that held it a moment ago has removed the
            # checkpoint, and a repair queued behind it must not undo it.
            if not self.agent.state_store().original.exists:
                return "not repairing: the agent is not applied here (rolled back)"
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


def settings_fingerprint(source: str) -> str | None:
    """A digest of the settings file's bytes (None when it is absent or not a file)."""
    try:
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()
    except OSError:
        return None
