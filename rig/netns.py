"""Thin wrappers over `ip netns`: create, delete, run inside, and end what runs inside.

Every command has a timeout; every kill is by PID and limited to namespaces the caller
names (the rig only passes its own).
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import psutil

log = logging.getLogger(__name__)

IP = "ip"


class RigError(RuntimeError):
    """A rig setup or teardown step failed; the message names the command and its stderr."""


def run(
    argv: Sequence[str], *, timeout: float = 30.0, check: bool = True, input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` with a timeout; raise RigError on timeout or (with `check`) non-zero exit."""
    log.debug("run %s", " ".join(argv))
    try:
        cp = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, input=input,
        )
    except subprocess.TimeoutExpired as exc:
        raise RigError(f"{' '.join(argv)}: timed out after {timeout:g}s") from exc
    if check and cp.returncode != 0:
        raise RigError(f"{' '.join(argv)}: exit {cp.returncode}: {cp.stderr.strip()}")
    return cp


def unique_name(prefix: str, role: str, *, pid: int | None = None, token: str | None = None) -> str:
    """A namespace name unique per run: PREFIX-PID-RANDOM-ROLE."""
    pid = os.getpid() if pid is None else pid
    token = secrets.token_hex(3) if token is None else token
    return f"{prefix}-{pid}-{token}-{role}"


def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """`argv` prefixed to run inside namespace `ns` (with its /etc/netns/<ns> overlay)."""
    return [IP, "netns", "exec", ns, *argv]


def add(ns: str) -> None:
    """Create namespace `ns`; RigError if it exists."""
    run([IP, "netns", "add", ns])


def names() -> list[str]:
    """Names of the existing named network namespaces."""
    out = run([IP, "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def exists(ns: str) -> bool:
    """Whether namespace `ns` exists."""
    return ns in names()


def pids(ns: str) -> list[int]:
    """PIDs of processes whose network namespace is `ns` (empty if it is gone)."""
    cp = run([IP, "netns", "pids", ns], check=False)
    return [int(tok) for tok in cp.stdout.split() if tok.isdigit()]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_pids(pids_: Sequence[int], *, grace: float = 3.0) -> list[int]:
    """SIGTERM each PID, wait up to `grace` s, SIGKILL the rest; returns the PIDs killed hard."""
    for pid in pids_:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids_):
        time.sleep(0.05)
    hard = [p for p in pids_ if _alive(p)]
    for pid in hard:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return hard


def kill_all_in(ns: str, *, grace: float = 3.0) -> list[int]:
    """End every process left in namespace `ns` (by PID); returns the PIDs found."""
    found = [p for p in pids(ns) if p != os.getpid()]
    if found:
        log.info("ending %d leftover process(es) in netns %s: %s", len(found), ns, found)
        kill_pids(found, grace=grace)
    return found


def delete(ns: str) -> None:
    """Delete namespace `ns` if it exists (no error if it is already gone)."""
    cp = run([IP, "netns", "del", ns], check=False)
    if cp.returncode != 0 and exists(ns):
        raise RigError(f"ip netns del {ns}: {cp.stderr.strip()}")


def stop_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """End a process this rig started: SIGTERM, then SIGKILL after `grace` seconds; its pipes
    are closed."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            stream.close()
