"""The authoritative named behind the simulated Amazon resolver.

A real Debian named runs in the foreground (`named -g`) inside the vpc namespace, with every
path it writes (pid file, lock file, session key, dumps) in its own work directory, so it
never clashes with a second named (the cache under test) using /run/named and
/var/cache/bind. `render_named_conf` is pure; `AuthoritativeServer` runs the process.
"""
from __future__ import annotations

import logging
import os
import pwd
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rig import netns

log = logging.getLogger(__name__)

NAMED = "/usr/sbin/named"
NAMED_USER = "bind"


@dataclass(frozen=True)
class ZoneFile:
    """One primary zone: its origin and where its file is."""

    origin: str
    path: Path


def render_named_conf(
    workdir: Path, listen: Sequence[str], zones: Sequence[ZoneFile], *, port: int = 53,
) -> str:
    """named.conf for an authoritative-only server: recursion off, no controls, IPv4 only.

    Every file named would write goes to `workdir`, including `lock-file`, whose default
    /run/named/named.lock would stop a second named from starting.
    """
    w = str(workdir)
    addrs = " ".join(f"{a};" for a in listen)
    parts = [
        "options {",
        f'  directory "{w}";',
        f'  pid-file "{w}/named.pid";',
        f'  lock-file "{w}/named.lock";',
        f'  session-keyfile "{w}/session.key";',
        f'  managed-keys-directory "{w}";',
        f'  dump-file "{w}/named_dump.db";',
        f'  statistics-file "{w}/named.stats";',
        f'  memstatistics-file "{w}/named.memstats";',
        f'  secroots-file "{w}/named.secroots";',
        f'  recursing-file "{w}/named.recursing";',
        f"  listen-on port {port} {{ {addrs} }};",
        "  listen-on-v6 { none; };",
        "  recursion no;",
        "  allow-query { any; };",
        "  allow-transfer { none; };",
        "  dnssec-validation no;",
        "  notify no;",
        "  minimal-responses no;",
        "};",
        "controls { };",
    ]
    for z in zones:
        origin = z.origin.rstrip(".") or "."
        parts.append(f'zone "{origin}" {{ type primary; file "{z.path}"; }};')
    return "\n".join(parts) + "\n"


class AuthoritativeServer:
    """A foreground named in a namespace; `stop()` ends it by PID."""

    def __init__(self, proc: subprocess.Popen[bytes], workdir: Path, log_path: Path) -> None:
        self.proc = proc
        self.workdir = workdir
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(
        cls, ns: str, workdir: Path, listen: Sequence[str], zones: Sequence[tuple[str, str]],
        *, ready_timeout: float = 20.0, threads: int = 2,
    ) -> AuthoritativeServer:
        """Write config and zones under `workdir`, start named in `ns`, wait until it runs.

        `zones` is a list of (origin, zone text). Raises netns.RigError if named exits or
        does not log "running" within `ready_timeout` seconds (the log is in the message).
        """
        workdir.mkdir(parents=True, exist_ok=True)
        bind_user = pwd.getpwnam(NAMED_USER)
        # named drops to the bind user; it must read the files and write pid/lock/keys here.
        os.chmod(workdir, 0o755)
        os.chown(workdir, bind_user.pw_uid, bind_user.pw_gid)
        zone_files = []
        for origin, text in zones:
            path = workdir / f"{origin.rstrip('.') or 'root'}.zone"
            path.write_text(text, encoding="ascii")
            path.chmod(0o644)
            zone_files.append(ZoneFile(origin, path))
        conf = workdir / "named.conf"
        conf.write_text(render_named_conf(workdir, listen, zone_files), encoding="ascii")
        conf.chmod(0o644)
        log_path = workdir / "named.log"
        argv = netns.exec_argv(
            ns, [NAMED, "-g", "-u", NAMED_USER, "-4", "-n", str(threads), "-c", str(conf)])
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        log.info("authoritative named pid %s in netns %s on %s", proc.pid, ns, ", ".join(listen))
        server = cls(proc, workdir, log_path)
        try:
            server._wait_running(ready_timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def log_text(self) -> str:
        """named's stderr so far (its -g log)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _wait_running(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise netns.RigError(
                    f"named exited {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            # named -g logs "<timestamp> running" once every listener and zone is up.
            if any(line.endswith(" running") for line in self.log_text().splitlines()):
                return
            time.sleep(0.05)
        raise netns.RigError(f"named not running after {timeout:g}s:\n{self.log_text()[-3000:]}")

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM named by PID, SIGKILL after `grace` seconds; reap it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(grace)
        log.info("authoritative named pid %s stopped (exit %s)", self.proc.pid,
                 self.proc.returncode)
