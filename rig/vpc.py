"""The simulated VPC: an "instance" namespace and a "vpc" namespace joined by a veth pair.

    instance ns                          vpc ns
    lo 127.0.0.1                         lo
    eth0 169.254.100.2/16  <-- veth -->  vpc0 169.254.100.1/16
                                              169.254.169.253/32  named (authoritative)
                                              169.254.169.254/32  fake IMDSv2 on :80
                                         nftables: > limit_pps packets/s to .253:53 dropped

Processes run in the instance namespace through `ip netns exec`, which bind-mounts
/etc/netns/<instance>/{resolv.conf,bind} over /etc: the agent sees its own resolv.conf and
/etc/bind, and the host's stay untouched. Everything is undone on exit, also on exceptions.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from rig import netns, nft
from rig.authoritative import AuthoritativeServer
from rig.dnsperf_output import DnsperfResult, parse_dnsperf
from rig.fake_imds import ImdsFacts, InterfaceFacts, facts_json
from rig.zone import SearchZoneSpec, ZoneSpec, render_search_zone, render_zone

log = logging.getLogger(__name__)

DEFAULT_RESOLV_CONF = "nameserver 169.254.169.253\nsearch ec2.internal\n"
# Where `ip netns exec` looks for per-namespace /etc files (fixed by iproute2).
NETNS_ETC = Path("/etc/netns")
HOST_ETC_BIND = Path("/etc/bind")
OVERLAID_ETC_DIRS = ("dhcp", "default", "systemd", "NetworkManager", "netplan", "resolvconf",
                     "dnscache-agent")
# Overlaid even when the host has none: `ip netns exec` can only bind-mount over an existing
# /etc entry, so an empty host directory is made for the run (and removed again), and the
# agent's own files (the pacer's settings) land in the instance's copy, never on the host.
ALWAYS_OVERLAID_ETC_DIRS = ("dnscache-agent",)
# One simulated VPC at a time on this machine: the cache under test uses the host's /run/named
# (pid file, lock) and /var/cache/bind, so two rigs would stop each other's named. Processes
# building a rig wait here for the one before to close.
RIG_LOCK = Path(os.environ.get("DNSCACHE_RIG_LOCK", "/run/lock/dnscache-agent-rig.lock"))
# Directory holding the `rig` package, so `python -m rig.fake_imds` works in a namespace.
_RIG_PARENT = Path(__file__).resolve().parent.parent

_OVERLAY_PROBE = r"""
import errno, json, os
out = {}
data = open("/etc/resolv.conf").read()
tmp = "/etc/.rig-probe-resolv.conf"
try:
    with open(tmp, "w") as f:
        f.write(data)
    os.rename(tmp, "/etc/resolv.conf")
    out["resolv_conf_rename_error"] = None
except OSError as e:
    out["resolv_conf_rename_error"] = errno.errorcode.get(e.errno, str(e.errno))
finally:
    if os.path.exists(tmp):
        os.unlink(tmp)
a, b = "/etc/bind/.rig-probe-a", "/etc/bind/.rig-probe-b"
try:
    with open(a, "w") as f:
        f.write("probe\n")
    os.rename(a, b)
    out["bind_dir_rename_ok"] = open(b).read() == "probe\n"
except OSError as e:
    out["bind_dir_rename_ok"] = False
    out["bind_dir_rename_error"] = errno.errorcode.get(e.errno, str(e.errno))
finally:
    for p in (a, b):
        if os.path.exists(p):
            os.unlink(p)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class VpcAddresses:
    """Link-local addressing of the simulated VPC (nothing here is routable off-host)."""

    instance_ip: str = "169.254.100.2"
    vpc_ip: str = "169.254.100.1"
    prefix_len: int = 16
    resolver: str = "169.254.169.253"
    imds: str = "169.254.169.254"
    instance_if: str = "eth0"
    vpc_if: str = "vpc0"


@dataclass(frozen=True)
class OverlayProbe:
    """What atomic renames do under `ip netns exec`'s /etc bind mounts.

    `resolv_conf_rename_error` is the errno name (e.g. "EBUSY") of renaming a file over the
    bind-mounted /etc/resolv.conf, or None if that worked; `bind_dir_rename_ok` says whether
    a rename inside the bind-mounted /etc/bind directory worked.
    """

    resolv_conf_rename_error: str | None
    bind_dir_rename_ok: bool


#: This process's hold on RIG_LOCK: [fd, count]. Re-entrant within a process, so a test that
#: builds a second rig while a module's rig is up does not wait for itself (flock locks open
#: files, not processes: a second open in the same process would block).
_HELD: list[int] = [-1, 0]


def _acquire_rig_lock(timeout: float = 1800.0) -> int:
    """An exclusive flock on RIG_LOCK, waited for up to `timeout` seconds; returns a token for
    `_release_rig_lock`."""
    if _HELD[1] > 0:
        _HELD[1] += 1
        return _HELD[0]
    RIG_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(RIG_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _HELD[:] = [fd, 1]
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise netns.RigError(f"{RIG_LOCK}: another simulated VPC held it for "
                                     f"{timeout:.0f}s") from None
            time.sleep(0.2)


def _release_rig_lock() -> None:
    _HELD[1] -= 1
    if _HELD[1] <= 0:
        os.close(_HELD[0])  # releases the flock for the next rig
        _HELD[:] = [-1, 0]


class SimulatedVpc:
    """A running simulated VPC. Build with `SimulatedVpc.create(...)`, use as a context manager."""

    def __init__(
        self, instance_ns: str, vpc_ns: str, workdir: Path, *, addresses: VpcAddresses,
        limit_pps: int, zone: ZoneSpec, search_zone: SearchZoneSpec, netns_etc: Path,
    ) -> None:
        self.instance_ns = instance_ns
        self.vpc_ns = vpc_ns
        self.workdir = workdir
        self.addresses = addresses
        self.limit_pps = limit_pps
        self.zone = zone
        self.search_zone = search_zone
        self.instance_etc = netns_etc / instance_ns
        self.named: AuthoritativeServer | None = None
        self.imds_facts: ImdsFacts | None = None
        self._netns_etc = netns_etc
        self._created_netns_etc = False
        self._imds_proc: subprocess.Popen[str] | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self._namespaces: list[str] = []
        self._blackholed = False
        self._closed = False
        self._lock_fd: int | None = None
        self._created_host_dirs: list[Path] = []

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def create(
        cls, limit_pps: int = 1024, name_prefix: str = "rig", *,
        zone: ZoneSpec | None = None, search_zone: SearchZoneSpec | None = None,
        named: bool = True, imds: bool | ImdsFacts = False,
        resolv_conf: str = DEFAULT_RESOLV_CONF, copy_etc_bind: bool = True,
        addresses: VpcAddresses | None = None, netns_etc: Path = NETNS_ETC,
        host_etc_bind: Path = HOST_ETC_BIND,
    ) -> SimulatedVpc:
        """Build namespaces, veth, limit rule, /etc overlay, named and (optionally) IMDS.

        `imds=True` serves default `ImdsFacts`; pass an `ImdsFacts` to choose them.
        Raises netns.RigError on any failed step, after undoing what was done.
        """
        addresses = addresses or VpcAddresses()
        lock = _acquire_rig_lock()
        token = netns.unique_name(name_prefix, "x").split("-")[-2]
        instance_ns = netns.unique_name(name_prefix, "inst", token=token)
        vpc_ns = netns.unique_name(name_prefix, "vpc", token=token)
        workdir = Path(tempfile.mkdtemp(prefix=f"{name_prefix}-{token}-"))
        workdir.chmod(0o755)  # named runs as the bind user and reads its files below here
        vpc = cls(instance_ns, vpc_ns, workdir, addresses=addresses, limit_pps=limit_pps,
                  zone=zone or ZoneSpec(), netns_etc=netns_etc,
                  search_zone=search_zone or SearchZoneSpec(instance_ip=addresses.instance_ip))
        vpc._lock_fd = lock
        try:
            vpc._build_network()
            vpc._build_etc(resolv_conf, host_etc_bind if copy_etc_bind else None)
            if named:
                vpc._start_named()
            if imds:
                vpc._start_imds(imds if isinstance(imds, ImdsFacts) else vpc.default_imds_facts())
        except BaseException:
            vpc.close()
            raise
        log.info("simulated VPC up: instance=%s vpc=%s limit=%s pps", instance_ns, vpc_ns,
                 limit_pps)
        return vpc

    def __enter__(self) -> SimulatedVpc:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except netns.RigError:
            if exc is None:
                raise
            log.exception("cleanup of simulated VPC failed while handling another error")

    def close(self) -> None:
        """Stop what the rig started (by PID), delete namespaces and /etc/netns dirs.

        Runs every step even if one fails; raises netns.RigError listing the failures.
        """
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []

        def step(what: str, fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 (cleanup must go on)
                log.warning("cleanup: %s failed: %s", what, exc)
                errors.append(f"{what}: {exc}")

        for proc in self._procs:
            step(f"stop pid {proc.pid}", netns.stop_process, proc)
        if self._imds_proc is not None:
            step("stop fake IMDS", netns.stop_process, self._imds_proc)
        if self.named is not None:
            step("stop named", self.named.stop)
        for ns in self._namespaces:
            step(f"end leftovers in {ns}", netns.kill_all_in, ns)
        for ns in self._namespaces:
            step(f"delete netns {ns}", netns.delete, ns)
        if self.instance_etc.exists():
            step(f"remove {self.instance_etc}", shutil.rmtree, self.instance_etc)
        for directory in self._created_host_dirs:
            step(f"remove {directory}", _rmdir_if_empty, directory)
        if self._created_netns_etc:
            step(f"remove {self._netns_etc}", _rmdir_if_empty, self._netns_etc)
        step(f"remove {self.workdir}", shutil.rmtree, self.workdir)
        log.info("simulated VPC %s / %s removed", self.instance_ns, self.vpc_ns)
        if self._lock_fd is not None:
            _release_rig_lock()
            self._lock_fd = None
        if errors:
            raise netns.RigError("simulated VPC cleanup: " + "; ".join(errors))

    def _build_network(self) -> None:
        a = self.addresses
        for ns in (self.instance_ns, self.vpc_ns):
            netns.add(ns)
            self._namespaces.append(ns)
            netns.run([netns.IP, "-n", ns, "link", "set", "lo", "up"])
        netns.run([netns.IP, "-n", self.instance_ns, "link", "add", a.instance_if, "type", "veth",
                   "peer", "name", a.vpc_if, "netns", self.vpc_ns])
        netns.run([netns.IP, "-n", self.instance_ns, "addr", "add",
                   f"{a.instance_ip}/{a.prefix_len}", "dev", a.instance_if])
        netns.run([netns.IP, "-n", self.vpc_ns, "addr", "add", f"{a.vpc_ip}/{a.prefix_len}",
                   "dev", a.vpc_if])
        for extra in (a.resolver, a.imds):
            netns.run([netns.IP, "-n", self.vpc_ns, "addr", "add", f"{extra}/32", "dev", a.vpc_if])
        netns.run([netns.IP, "-n", self.instance_ns, "link", "set", a.instance_if, "up"])
        netns.run([netns.IP, "-n", self.vpc_ns, "link", "set", a.vpc_if, "up"])
        self._nft(nft.render_setup(a.resolver, self.limit_pps))

    def _build_etc(self, resolv_conf: str, host_etc_bind: Path | None) -> None:
        if not self._netns_etc.exists():
            self._netns_etc.mkdir(mode=0o755)
            self._created_netns_etc = True
        self.instance_etc.mkdir(mode=0o755)
        (self.instance_etc / "resolv.conf").write_text(resolv_conf, encoding="ascii")
        if host_etc_bind is not None:
            # cp -a keeps owner root:bind and the setgid mode that named relies on.
            netns.run(["cp", "-a", str(host_etc_bind), str(self.instance_etc / "bind")])
        # Every /etc directory a resolver backend may write gets its own copy, so an agent
        # run in the instance namespace never edits the host's files.
        for name in OVERLAID_ETC_DIRS:
            src = Path("/etc") / name
            if name in ALWAYS_OVERLAID_ETC_DIRS and not src.exists():
                src.mkdir(mode=0o755)
                self._created_host_dirs.append(src)
            if src.is_dir():
                netns.run(["cp", "-a", str(src), str(self.instance_etc / name)])

    def _start_named(self) -> None:
        a = self.addresses
        self.named = AuthoritativeServer.start(
            self.vpc_ns, self.workdir / "named", [a.resolver, a.vpc_ip],
            [(self.zone.origin, render_zone(self.zone)),
             (self.search_zone.origin, render_search_zone(self.search_zone))],
        )

    def agent_toml(self, text: str = "") -> str:
        """Agent settings for a run in this VPC: `text` after the lines that keep the agent's
        state and the pacer's stats and warm files in the work directory (the host's /var and
        /run are shared with the namespace). `text` must not have [agent] or [pacer]."""
        return (f'[agent]\nstate_dir = "{self.workdir}/state"\n\n'
                f'[pacer]\nstats_file = "{self.workdir}/pacer/stats.json"\n'
                f'warm_file = "{self.workdir}/pacer/warm.json"\n\n' + text)

    def default_imds_facts(self) -> ImdsFacts:
        """IMDS facts matching this VPC's addressing."""
        a = self.addresses
        net = f"169.254.0.0/{a.prefix_len}"
        return ImdsFacts(interfaces=(InterfaceFacts(vpc_ipv4_cidr_blocks=(net,),
                                                    local_ipv4s=(a.instance_ip,)),))

    def _start_imds(self, facts: ImdsFacts, ready_timeout: float = 10.0) -> None:
        self.imds_facts = facts
        facts_file = self.workdir / "imds-facts.json"
        facts_file.write_text(facts_json(facts), encoding="utf-8")
        argv = self.vpc_cmd([sys.executable, "-m", "rig.fake_imds", "--host", self.addresses.imds,
                             "--port", "80", "--facts-json", str(facts_file)])
        self._imds_proc = subprocess.Popen(
            argv, cwd=_RIG_PARENT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, text=True)
        line = _read_line(self._imds_proc, ready_timeout)
        if not line.startswith("listening"):
            raise netns.RigError(f"fake IMDS did not start in {self.vpc_ns}: {line!r}")
        log.info("fake IMDS pid %s at http://%s", self._imds_proc.pid, self.addresses.imds)

    # ----------------------------------------------------------------- running things
    def instance_cmd(self, argv: Sequence[str]) -> list[str]:
        """`argv` prefixed with `ip netns exec <instance>`."""
        return netns.exec_argv(self.instance_ns, argv)

    def vpc_cmd(self, argv: Sequence[str]) -> list[str]:
        """`argv` prefixed with `ip netns exec <vpc>`."""
        return netns.exec_argv(self.vpc_ns, argv)

    def exec_instance(
        self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the instance namespace and wait (bounded by `timeout`)."""
        return netns.run(self.instance_cmd(argv), timeout=timeout, check=check, input=input)

    def exec_vpc(
        self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the vpc namespace and wait (bounded by `timeout`)."""
        return netns.run(self.vpc_cmd(argv), timeout=timeout, check=check)

    def popen_instance(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` in the instance namespace; the rig ends it by PID on close."""
        proc: subprocess.Popen[Any] = subprocess.Popen(self.instance_cmd(argv), **kwargs)
        self._procs.append(proc)
        return proc

    def dig(self, *args: str, server: str | None = None,
            timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        """`dig @server ARGS` from the instance namespace (server defaults to the resolver)."""
        server = server or self.addresses.resolver
        return self.exec_instance(["dig", f"@{server}", "+time=2", "+tries=1", *args],
                                  timeout=timeout)

    def dnsperf(
        self, queries_file: Path | str, *, server: str = "127.0.0.1", qps: int = 1000,
        seconds: float = 5.0, clients: int = 4, timeout: float = 2.0,
        max_outstanding: int | None = None, port: int = 53, extra: Sequence[str] = (),
    ) -> DnsperfResult:
        """Run a bounded dnsperf load from the instance namespace and parse its statistics.

        `max_outstanding` defaults to enough for `qps` x `timeout` in flight (dnsperf's own
        default of 100 would cap the offered rate once queries start to be lost).
        Raises ValueError for runs over 60 s, netns.RigError if dnsperf fails.
        """
        if not 0 < seconds <= 60:
            raise ValueError(f"dnsperf runs are bounded to 60 s: {seconds}")
        outstanding = max_outstanding or min(65000, max(100, math.ceil(qps * timeout * 1.5)))
        argv = ["dnsperf", "-s", server, "-p", str(port), "-d", str(queries_file),
                "-Q", str(qps), "-l", f"{seconds:g}", "-c", str(clients), "-t", f"{timeout:g}",
                "-q", str(outstanding), *extra]
        cp = self.exec_instance(argv, timeout=seconds + timeout + 30)
        if cp.returncode != 0:
            raise netns.RigError(f"dnsperf exit {cp.returncode}: {cp.stderr.strip()[-2000:]}")
        return parse_dnsperf(cp.stdout)

    # ----------------------------------------------------------------- the limit
    def _nft(self, script: str) -> None:
        netns.run(self.vpc_cmd(["nft", "-f", "-"]), input=script)

    def set_limit(self, pps: int, burst: int | None = None) -> None:
        """Change the packets/s allowed to the resolver (also ends a blackhole); `burst`
        (packets the bucket holds) stays as last set unless given."""
        burst = getattr(self, "burst", nft.DEFAULT_BURST) if burst is None else burst
        self._nft(nft.render_replace(self.addresses.resolver, pps, burst=burst))
        self.limit_pps = pps
        self.burst = burst
        self._blackholed = False
        log.info("resolver limit in %s set to %s pps (burst %s)", self.vpc_ns, pps, burst)

    def blackhole(self) -> None:
        """Drop every packet to the resolver (upstream gone, for serve-stale tests)."""
        self._nft(nft.render_replace(self.addresses.resolver, None))
        self._blackholed = True
        log.info("resolver in %s blackholed", self.vpc_ns)

    def restore(self) -> None:
        """Undo `blackhole()`: back to the last limit."""
        self.set_limit(self.limit_pps)

    @property
    def blackholed(self) -> bool:
        return self._blackholed

    def counters(self) -> nft.NftCounters:
        """Totals of packets to the resolver that passed / were dropped since creation."""
        cp = netns.run(self.vpc_cmd(["nft", "-j", "list", "counters", "table", "ip", nft.TABLE]))
        return nft.parse_counters(cp.stdout)

    def sample_rates(self, seconds: float, interval: float = 1.0) -> list[nft.CounterRate]:
        """Passed/dropped packets per second, one sample per `interval`, for `seconds`."""
        out: list[nft.CounterRate] = []
        prev, t0 = self.counters(), time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            time.sleep(max(0.0, min(interval, end - time.monotonic())))
            cur, t1 = self.counters(), time.monotonic()
            out.append(nft.rate(prev, cur, t1 - t0))
            prev, t0 = cur, t1
        return out

    # ----------------------------------------------------------------- IMDS and /etc
    @property
    def imds_url(self) -> str | None:
        """Base URL of the fake IMDS as seen from the instance (None when not started)."""
        return f"http://{self.addresses.imds}" if self._imds_proc is not None else None

    def imds_stats(self) -> dict[str, int]:
        """Request counts of the in-namespace fake IMDS ("METHOD path" -> n)."""
        import json

        if self.imds_url is None:
            raise netns.RigError("this VPC was created without imds=True")
        code = ("import urllib.request,sys;sys.stdout.write(urllib.request.urlopen("
                f"'{self.imds_url}/_rig/stats',timeout=5).read().decode())")
        cp = self.exec_instance([sys.executable, "-c", code], timeout=15, check=True)
        data: dict[str, int] = json.loads(cp.stdout)
        return data

    def probe_etc_overlay(self) -> OverlayProbe:
        """Try atomic renames over the bind-mounted /etc/resolv.conf and inside /etc/bind."""
        import json

        cp = self.exec_instance([sys.executable, "-c", _OVERLAY_PROBE], timeout=15, check=True)
        data = json.loads(cp.stdout)
        return OverlayProbe(data["resolv_conf_rename_error"], bool(data["bind_dir_rename_ok"]))


def _rmdir_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):  # another run put its own namespace dir there
        path.rmdir()


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """First stdout line of `proc`, or "" if it exits or `timeout` passes first."""
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if sel.select(timeout):
            return proc.stdout.readline().strip()
        return ""
    finally:
        sel.close()
