"""Starting, reloading and stopping named. Backends chosen from a table by `available()`:
systemd when it is PID 1, a pid-file process manager otherwise (containers without an init,
the test rig's namespaces), and nothing at all for a staged `--root` tree."""

from __future__ import annotations

import logging
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import psutil

from .commands import Runner
from .errors import ApplyError
from .platform import PlatformProfile
from .rootfs import Root

log = logging.getLogger(__name__)


def same_network_namespace(pid: int) -> bool:
    """Whether `pid` shares this process's network namespace (unknown counts as yes)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return True


class NamedService(ABC):
    """How named is managed on this host."""

    name = ""

    def __init__(self, root: Root, profile: PlatformProfile, runner: Runner) -> None:
        self.root = root
        self.profile = profile
        self.runner = runner

    @classmethod
    @abstractmethod
    def available(cls, root: Root) -> bool: ...

    @abstractmethod
    def is_active(self) -> bool: ...

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def reload(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def enable(self) -> None:  # noqa: B027 - a hook: a no-op unless an init system exists
        """Start at boot (only meaningful under an init system)."""

    def reload_or_start(self) -> str:
        if self.is_active():
            self.reload()
            return "reloaded"
        self.start()
        return "started"


class SystemdService(NamedService):
    name = "systemd"

    @classmethod
    def available(cls, root: Root) -> bool:
        return root.is_live and os.path.isdir("/run/systemd/system")

    def _ctl(self, *args: str) -> None:
        result = self.runner.run(("systemctl", *args, self.profile.unit), timeout=60)
        if not result.ok:
            raise ApplyError(f"systemctl {' '.join(args)} {self.profile.unit}: "
                             f"{result.first_error_line()}")

    def is_active(self) -> bool:
        return self.runner.run(("systemctl", "is-active", "--quiet", self.profile.unit),
                               timeout=30).ok

    def start(self) -> None:
        self._ctl("start")

    def reload(self) -> None:
        self._ctl("reload-or-restart")

    def stop(self) -> None:
        self._ctl("stop")

    def enable(self) -> None:
        self._ctl("enable")


class ProcessService(NamedService):
    """No init system: named daemonizes itself and is found through its pid file."""

    name = "process"
    stop_timeout = 10.0

    @classmethod
    def available(cls, root: Root) -> bool:
        return root.is_live

    def pid(self) -> int | None:
        text = self.root.read_text(self.profile.pid_file)
        if not text or not text.strip().isdigit():
            return None
        pid = int(text.strip())
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or "named" not in proc.name():
                return None
        except psutil.Error:
            return None
        if not same_network_namespace(pid):
            # /run is shared between network namespaces (containers without their own /run,
            # the test rig): a named serving another namespace's loopback is not ours.
            return None
        return pid

    def is_active(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        run_dir = self.root.path(self.profile.pid_file).parent
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            import pwd

            pw = pwd.getpwnam(self.profile.user)
            os.chown(run_dir, pw.pw_uid, pw.pw_gid)
        except (KeyError, OSError):
            pass
        argv: Sequence[str] = (self.profile.named_binary, "-u", self.profile.user,
                               "-c", self.profile.named_conf)
        result = self.runner.run(argv, timeout=30)
        if not result.ok:
            raise ApplyError(f"{' '.join(argv)}: {result.first_error_line()}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.is_active():
                return
            time.sleep(0.1)
        raise ApplyError(f"{self.profile.named_binary} started but wrote no pid to "
                         f"{self.profile.pid_file}")

    def reload(self) -> None:
        pid = self.pid()
        if pid is None:
            self.start()
            return
        os.kill(pid, signal.SIGHUP)

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(self.stop_timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class NoService(NamedService):
    """A staged `--root` tree: service actions are skipped."""

    name = "none"

    @classmethod
    def available(cls, root: Root) -> bool:
        return True

    def is_active(self) -> bool:
        return False

    def start(self) -> None:
        log.debug("not starting named: %s is not the live root", self.root.base)

    def reload(self) -> None:
        pass

    def stop(self) -> None:
        pass


SERVICE_BACKENDS: tuple[type[NamedService], ...] = (SystemdService, ProcessService, NoService)


def for_host(root: Root, profile: PlatformProfile, runner: Runner) -> NamedService:
    """The first available service backend for this root."""
    for cls in SERVICE_BACKENDS:
        if cls.available(root):
            return cls(root, profile, runner)
    return NoService(root, profile, runner)


# --- the agent's own units ------------------------------------------------------------------


class AgentUnits(ABC):
    """Starting and stopping the agent's own systemd units (install-service, rollback)."""

    name = ""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    @classmethod
    @abstractmethod
    def available(cls, root: Root) -> bool: ...

    @abstractmethod
    def daemon_reload(self) -> None: ...

    def ensure_users(self, sysusers: Path) -> None:  # noqa: B027 - a hook, no-op by default
        """Create the system users a sysusers.d file declares (before units use them)."""

    @abstractmethod
    def is_active(self, unit: str) -> bool: ...

    @abstractmethod
    def restart(self, unit: str) -> None: ...

    @abstractmethod
    def enable_now(self, units: Sequence[str]) -> None: ...

    @abstractmethod
    def disable_now(self, units: Sequence[str]) -> list[str]:
        """Stop and disable `units`; returns what it did, one line each. Never raises for a
        unit that is not loaded (rollback must go on)."""


class SystemdUnits(AgentUnits):
    name = "systemd"

    @classmethod
    def available(cls, root: Root) -> bool:
        return SystemdService.available(root)

    def _ctl(self, *args: str) -> None:
        result = self.runner.run(("systemctl", *args), timeout=120)
        if not result.ok:
            raise ApplyError(f"systemctl {' '.join(args)}: {result.first_error_line()}")
        log.info("ran systemctl %s", " ".join(args))

    def daemon_reload(self) -> None:
        self._ctl("daemon-reload")

    def ensure_users(self, sysusers: Path) -> None:
        result = self.runner.run(("systemd-sysusers", str(sysusers)), timeout=60)
        if not result.ok:
            raise ApplyError(f"systemd-sysusers {sysusers}: {result.first_error_line()}")
        log.info("ran systemd-sysusers %s", sysusers)

    def is_active(self, unit: str) -> bool:
        return self.runner.run(("systemctl", "is-active", "--quiet", unit), timeout=30).ok

    def restart(self, unit: str) -> None:
        self._ctl("restart", unit)

    def enable_now(self, units: Sequence[str]) -> None:
        self._ctl("enable", "--now", *units)

    def disable_now(self, units: Sequence[str]) -> list[str]:
        done = []
        for unit in units:
            result = self.runner.run(("systemctl", "disable", "--now", unit), timeout=120)
            if result.ok:
                done.append(f"stopped and disabled {unit}")
                log.info("stopped and disabled %s", unit)
            else:
                log.warning("systemctl disable --now %s: %s", unit, result.first_error_line())
        return done


class NoUnits(AgentUnits):
    """No systemd to ask (a container without init): the unit files and their [Install]
    links are still written; nothing is started."""

    name = "none"

    @classmethod
    def available(cls, root: Root) -> bool:
        return True

    def daemon_reload(self) -> None:
        pass

    def is_active(self, unit: str) -> bool:
        return False

    def restart(self, unit: str) -> None:
        pass

    def enable_now(self, units: Sequence[str]) -> None:
        pass

    def disable_now(self, units: Sequence[str]) -> list[str]:
        return []


class StagedUnits(NoUnits):
    """A staged root (an image build): nothing is started; the daemon's user is created in
    the tree when the builder has systemd-sysusers (else the image's first boot must)."""

    name = "staged"

    def __init__(self, runner: Runner, root: Root | None = None) -> None:
        super().__init__(runner)
        self.root = root

    @classmethod
    def available(cls, root: Root) -> bool:
        return not root.is_live

    def ensure_users(self, sysusers: Path) -> None:
        if self.root is None or self.runner.which("systemd-sysusers") is None:
            log.warning("systemd-sysusers is not on this builder: %s must be applied in the "
                        "image (systemd-sysusers runs it at boot)", sysusers)
            return
        result = self.runner.run(("systemd-sysusers", f"--root={self.root.base}",
                                  str(sysusers)), timeout=60)
        if not result.ok:
            raise ApplyError(f"systemd-sysusers --root={self.root.base} {sysusers}: "
                             f"{result.first_error_line()}")


UNIT_BACKENDS: tuple[type[AgentUnits], ...] = (SystemdUnits, StagedUnits, NoUnits)


def units_for_host(root: Root, runner: Runner) -> AgentUnits:
    """The first available unit manager for this root."""
    for cls in UNIT_BACKENDS:
        if cls.available(root):
            return StagedUnits(runner, root) if cls is StagedUnits else cls(runner)
    return NoUnits(runner)
