"""Starting, restarting and stopping the pacer, chosen from a table like named's backends: its
systemd unit where systemd runs services (the plan then holds the unit file), a process under
`dnscache_agent.supervise` otherwise (containers without an init, the simulated VPC), and
nothing for a staged `--root` tree. `probe` asks the pacer a real question on its port, so
"running" means "answering", not "a pid exists"."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import psutil

from .commands import Runner
from .errors import ApplyError
from .health import Health, query_once
from .plan_model import PacerPlan
from .rootfs import Root
from .services import same_network_namespace

log = logging.getLogger(__name__)

#: Without systemd: the supervisor's pid file and the pacer's log (both in its runtime dir).
PID_FILE = "/run/dnscache-agent-pacer/supervisor.pid"
LOG_FILE = "/run/dnscache-agent-pacer/pacer.log"
#: How long a start may take until the pacer answers on its port.
START_TIMEOUT = 15.0


def probe(plan: PacerPlan, name: str, timeout: float = 2.0) -> Health:
    """One query through the pacer (it forwards to the resolver): ok when it answers."""
    return query_once(name, server=plan.listen, port=plan.port, timeout=timeout)


def port_open(plan: PacerPlan) -> bool:
    """Whether something accepts TCP on the pacer's address (it serves UDP and TCP)."""
    try:
        with socket.create_connection((plan.listen, plan.port), timeout=0.5):
            return True
    except OSError:
        return False


class PacerService(ABC):
    name = ""

    def __init__(self, root: Root, plan: PacerPlan, runner: Runner) -> None:
        self.root = root
        self.plan = plan
        self.runner = runner

    @abstractmethod
    def is_active(self) -> bool: ...

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def restart(self) -> None: ...

    @abstractmethod
    def stop(self) -> None:
        """Stop it and keep it stopped (rollback, an undone first apply). Never raises for a
        pacer that is not there."""

    def record(self) -> dict[str, Any]:
        """What rollback needs to stop it without settings or a plan."""
        return {"backend": self.name, "unit": self.plan.unit, "listen": self.plan.listen,
                "port": self.plan.port, "argv": list(self.plan.argv),
                "digest": self.plan.digest}

    def wait_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if port_open(self.plan):
                return
            time.sleep(0.1)
        raise ApplyError(f"pacer: nothing answers on {self.plan.listen}:{self.plan.port} "
                         f"{START_TIMEOUT:.0f}s after starting it")


class SystemdPacer(PacerService):
    name = "systemd"

    @property
    def unit(self) -> str:
        assert self.plan.unit is not None
        return self.plan.unit

    def _ctl(self, *args: str) -> None:
        result = self.runner.run(("systemctl", *args), timeout=120)
        if not result.ok:
            raise ApplyError(f"systemctl {' '.join(args)}: {result.first_error_line()}")
        log.info("ran systemctl %s", " ".join(args))

    def is_active(self) -> bool:
        return self.runner.run(("systemctl", "is-active", "--quiet", self.unit), timeout=30).ok

    def start(self) -> None:
        self._ctl("enable", "--now", self.unit)
        self.wait_answering()

    def restart(self) -> None:
        self._ctl("restart", self.unit)
        self.wait_answering()

    def stop(self) -> None:
        for args in (("stop", self.unit), ("disable", self.unit)):
            result = self.runner.run(("systemctl", *args), timeout=120)
            if not result.ok:
                log.warning("systemctl %s: %s", " ".join(args), result.first_error_line())


class ProcessPacer(PacerService):
    """`python -m dnscache_agent.supervise -- python -m dnscache_agent pacer ...`, found again
    through the supervisor's pid file (in this network namespace only: /run may be shared)."""

    name = "process"

    def supervisor_pid(self) -> int | None:
        text = self.root.read_text(PID_FILE)
        if not text or not text.strip().isdigit():
            return None
        pid = int(text.strip())
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or \
                    "dnscache_agent.supervise" not in " ".join(proc.cmdline()):
                return None
        except psutil.Error:
            return None
        return pid if same_network_namespace(pid) else None

    def is_active(self) -> bool:
        return self.supervisor_pid() is not None

    def start(self) -> None:
        if self.is_active():
            return
        pid_file = self.root.path(PID_FILE)
        pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        python = sys.executable
        argv = [python, "-m", "dnscache_agent.supervise", "--pid-file", str(pid_file),
                "--log", str(self.root.path(LOG_FILE)), "--",
                python, "-m", "dnscache_agent.pacer", *self.plan.argv]
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                         env=_child_env(os.environ))
        log.info("started the pacer: %s", " ".join(argv))
        self.wait_answering()

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        pid = self.supervisor_pid()
        if pid is None:
            return
        try:
            proc = psutil.Process(pid)
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        except psutil.TimeoutExpired:
            proc.kill()
        except psutil.Error:
            pass
        log.info("stopped the pacer (supervisor pid %d)", pid)


class NoPacer(PacerService):
    """A staged root: the unit file is written, nothing runs."""

    name = "none"

    def is_active(self) -> bool:
        return False

    def start(self) -> None:
        pass

    def restart(self) -> None:
        pass

    def stop(self) -> None:
        pass


def _child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The pacer must not inherit a systemd notify socket meant for its starter."""
    return {k: v for k, v in environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}


def pacer_for_host(root: Root, plan: PacerPlan, runner: Runner) -> PacerService:
    """The backend for this root and plan."""
    if not root.is_live:
        return NoPacer(root, plan, runner)
    if plan.unit is not None:
        return SystemdPacer(root, plan, runner)
    return ProcessPacer(root, plan, runner)


def from_record(root: Root, record: Mapping[str, Any], runner: Runner) -> PacerService:
    """A backend from what apply recorded in the checkpoint (rollback). Raises ValueError on
    a malformed record."""
    unit = record.get("unit")
    argv = record.get("argv") or []
    if unit is not None and not isinstance(unit, str) or not isinstance(argv, list):
        raise ValueError("pacer record")
    plan = PacerPlan(str(record.get("listen", "127.0.0.1")), int(record.get("port", 5354)),
                     unit, tuple(str(a) for a in argv), str(record.get("digest", "")))
    return pacer_for_host(root, plan, runner)
