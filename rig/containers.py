"""Podman containers that boot systemd as PID 1, for tests that need a whole host.

Flags and why (measured, see TESTBED.md):
- `--systemd=always`: podman sets up /run, /tmp, cgroups and stop signal for an init.
- `--cap-add SYS_ADMIN`: without it systemd silently skips ProtectSystem=/PrivateTmp=, and a
  hardening test would pass on an unhardened unit.
- `--cap-add NET_ADMIN`: DHCP, resolvconf and namespace tests configure interfaces.
- `--network=none` (default): only loopback, so a test cannot reach anything outside; podman
  then leaves /etc/resolv.conf alone (it is the image's own file). With a network
  (`network="slirp4netns"`) `--dns=none` is added instead, because podman's bind-mounted
  resolv.conf makes an atomic rename of it fail with "Device or resource busy"; podman
  refuses `--dns` together with `--network=none`.
- CONTAINERS_CONF=rig/podman/containers.conf: ulimits under the hard nofile limit, runc,
  cgroupfs, file events log.
"""
from __future__ import annotations

import logging
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from rig.images import PODMAN_CONF, podman_env

logger = logging.getLogger(__name__)

BOOTED_STATES = frozenset({"running", "degraded"})
DEFAULT_CAPS: tuple[str, ...] = ("SYS_ADMIN", "NET_ADMIN")
AGENT_VENV = "/opt/dnscache-agent/venv"


class ContainerError(RuntimeError):
    """A podman step failed or the container did not boot; the message carries the output."""


class SystemdContainer:
    """A running container with systemd as PID 1; removed (by id) when the block exits.

    >>> with SystemdContainer(image) as box:
    ...     box.exec(["systemctl", "start", "named"])

    `__enter__` raises ContainerError when podman fails or systemd does not reach
    running/degraded within `boot_timeout` seconds (the container is removed first).
    """

    def __init__(
        self,
        image: str,
        *,
        name_prefix: str = "dnscache-sys",
        network: str = "none",
        caps: Sequence[str] = DEFAULT_CAPS,
        extra_args: Sequence[str] = (),
        boot_timeout: float = 90.0,
        podman_conf: Path = PODMAN_CONF,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.image = image
        self.name = f"{name_prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.network = network
        self.caps = tuple(caps)
        self.extra_args = tuple(extra_args)
        self.boot_timeout = boot_timeout
        self.podman_conf = podman_conf
        self._env = podman_env(os.environ if environ is None else environ, podman_conf)
        self._clock = clock
        self._sleep = sleep
        self.container_id: str | None = None
        self.boot_state: str | None = None
        self.boot_seconds: float | None = None

    # -- lifecycle --------------------------------------------------------------------
    def run_args(self) -> list[str]:
        """The `podman run` argv (pure: no side effects)."""
        argv = ["podman", "run", "--detach", "--name", self.name, "--hostname", "dnscache-test",
                "--systemd=always", f"--network={self.network}"]
        if self.network != "none":
            argv.append("--dns=none")
        for cap in self.caps:
            argv += ["--cap-add", cap]
        argv += [*self.extra_args, self.image, "/sbin/init"]
        return argv

    def __enter__(self) -> SystemdContainer:
        result = self._podman(self.run_args()[1:], timeout=120)
        if result.returncode != 0:
            raise ContainerError(f"podman run {self.image}: {result.stderr.strip()}")
        self.container_id = result.stdout.strip().splitlines()[-1]
        logger.info("started container %s (%s) from %s", self.name, self.container_id[:12],
                    self.image)
        try:
            self.wait_booted()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the container by its id (idempotent)."""
        if self.container_id is None:
            return
        result = self._podman(["rm", "--force", "--time", "5", self.container_id], timeout=120)
        if result.returncode != 0:
            logger.warning("podman rm %s: %s", self.container_id[:12], result.stderr.strip())
        else:
            logger.info("removed container %s", self.name)
        self.container_id = None

    def wait_booted(self) -> str:
        """Poll `systemctl is-system-running` until running/degraded; return the state.

        Raises ContainerError after `boot_timeout` seconds, with the failed units and the
        container log.
        """
        start = self._clock()
        state = ""
        while self._clock() - start < self.boot_timeout:
            result = self.exec(["systemctl", "is-system-running"], check=False, timeout=15)
            state = result.stdout.strip()
            if state in BOOTED_STATES:
                self.boot_state = state
                self.boot_seconds = self._clock() - start
                if state == "degraded":
                    failed = self.exec(["systemctl", "--failed", "--no-legend"], check=False)
                    logger.warning("%s booted degraded: %s", self.name, failed.stdout.strip())
                return state
            self._sleep(0.5)
        failed = self.exec(["systemctl", "--failed", "--no-legend"], check=False, timeout=15)
        logs = self._podman(["logs", "--tail", "40", self.name], timeout=30)
        raise ContainerError(
            f"{self.name}: systemd not up after {self.boot_timeout:.0f}s (state {state!r}); "
            f"failed units: {failed.stdout.strip()!r}; log: {(logs.stdout + logs.stderr)[-2000:]}"
        )

    def reboot(self) -> str:
        """Restart the container (its file system persists): a real boot of what is on its
        disk, for first-boot behaviour. Returns the boot state like `wait_booted`."""
        result = self._podman(["restart", "--time", "10", self._target()], timeout=120)
        if result.returncode != 0:
            raise ContainerError(f"podman restart {self.name}: {result.stderr.strip()}")
        return self.wait_booted()

    # -- use --------------------------------------------------------------------------
    def exec(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        input_text: str | None = None,
        user: str | None = None,
        privileged: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the container; raise ContainerError on non-zero exit if `check`.
        `privileged` gives argv the container's whole capability set (CAP_SYS_PTRACE too), which
        entering another user's namespaces with nsenter needs."""
        args = ["exec"]
        if privileged:
            args.append("--privileged")
        if input_text is not None:
            args.append("--interactive")
        if user is not None:
            args += ["--user", user]
        args += [self._target(), *argv]
        result = self._podman(args, timeout=timeout, input_text=input_text)
        if check and result.returncode != 0:
            raise ContainerError(
                f"{self.name}: {' '.join(argv)} exited {result.returncode}: "
                f"{(result.stdout[-1500:] + result.stderr[-1500:]).strip()}"
            )
        return result

    def copy_in(self, src: Path | str, dst: str) -> None:
        """Copy a host file or directory to `dst` inside the container (`podman cp`)."""
        result = self._podman(["cp", str(src), f"{self._target()}:{dst}"], timeout=120)
        if result.returncode != 0:
            raise ContainerError(f"podman cp {src} -> {dst}: {result.stderr.strip()}")

    def copy_out(self, src: str, dst: Path | str) -> None:
        """Copy `src` from the container to the host path `dst`."""
        result = self._podman(["cp", f"{self._target()}:{src}", str(dst)], timeout=120)
        if result.returncode != 0:
            raise ContainerError(f"podman cp {src} <- container: {result.stderr.strip()}")

    def read_file(self, path: str) -> str:
        """Text of a file inside the container."""
        return self.exec(["cat", "--", path]).stdout

    def testinfra_host(self) -> Any:
        """A testinfra Host on this container through the fast podman:// backend.

        testinfra runs `podman exec` with the process environment; podman exec works with
        or without our CONTAINERS_CONF (the runtime is recorded in the container).
        """
        import testinfra  # imported lazily: only system tests need it

        return testinfra.get_host(f"podman://{self._target()}")

    # -- helpers ----------------------------------------------------------------------
    def _target(self) -> str:
        if self.container_id is None:
            raise ContainerError(f"{self.name}: container is not running")
        return self.container_id

    def _podman(
        self, args: Sequence[str], *, timeout: float, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["podman", *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self._env,
                input=input_text,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(
                f"podman {' '.join(args)}: timed out after {timeout:.0f}s"
            ) from exc


def install_agent(
    container: SystemdContainer,
    wheel_dir: Path,
    *,
    requirement: str = "dnscache-agent",
    venv: str = AGENT_VENV,
    timeout: float = 300.0,
) -> str:
    """Install `requirement` from the wheels in `wheel_dir` into a venv in the container.

    Works with no network inside the container (`--no-index --find-links`): `wheel_dir`
    must hold the agent's wheel and every dependency's (see `build_wheelhouse`). Returns
    the venv path. Raises ContainerError when pip fails.
    """
    staging = "/tmp/dnscache-wheels"
    container.exec(["rm", "-rf", staging])
    container.copy_in(wheel_dir, staging)
    container.exec(["python3", "-m", "venv", venv], timeout=120)
    container.exec(
        [f"{venv}/bin/pip", "install", "--no-index", "--find-links", staging,
         "--disable-pip-version-check", "--no-cache-dir", requirement],
        timeout=timeout,
    )
    return venv


def build_wheelhouse(
    project_dir: Path,
    dest: Path,
    dependencies: Sequence[str],
    *,
    python: str = "python3",
    timeout: float = 540.0,
) -> list[Path]:
    """Build the project's wheel and download its dependencies' wheels into `dest`.

    Runs on the host (PyPI reachable, pip's cache makes reruns fast); the container then
    installs offline. Returns the wheel files. Raises ContainerError on a pip failure.
    """
    dest.mkdir(parents=True, exist_ok=True)
    steps = [
        [python, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-w", str(dest), str(project_dir)],
    ]
    if dependencies:
        steps.append([python, "-m", "pip", "download", "--disable-pip-version-check",
                      "--only-binary=:all:", "-d", str(dest), *dependencies])
    for argv in steps:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                    check=False)
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"{' '.join(argv[:4])}: timed out") from exc
        if result.returncode != 0:
            raise ContainerError(f"{' '.join(argv[:4])}: {result.stderr.strip()[-2000:]}")
    return sorted(dest.glob("*.whl"))


def project_dependencies(pyproject_text: str) -> list[str]:
    """`[project] dependencies` of a pyproject.toml (pure)."""
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
    data = tomllib.loads(pyproject_text)
    deps = data.get("project", {}).get("dependencies", [])
    return [str(dep) for dep in deps]


def fake_vpc_resolver_script(address: str, answer: str) -> str:
    """A stand-in for the Amazon resolver inside a container with no network: a dnspython
    UDP responder on `address`:53 answering every A query with `answer`. Returned as Python
    source to run in the container (which has dnspython but not this repository)."""
    return f"""import socket
import dns.flags, dns.message, dns.rdatatype, dns.rrset
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{address}", 53))
while True:
    data, peer = s.recvfrom(4096)
    try:
        q = dns.message.from_wire(data)
    except Exception:
        continue
    r = dns.message.make_response(q)
    r.flags |= dns.flags.RA
    if q.question and q.question[0].rdtype == dns.rdatatype.A:
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "{answer}"))
    s.sendto(r.to_wire(), peer)
"""
