"""The resolvers the benchmark compares, each run inside the instance namespace on
127.0.0.1:53 in turn (except "no cache", which sends straight to the Amazon resolver).

Config rendering is pure (`render_*`); `Peer` objects start and stop their process by PID.
Peers are configured as their packages ship them, plus only what forwarding to
169.254.169.253 needs (and per-run paths, so nothing lands in the host's /run or /var).
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from rig import netns
from rig.vpc import SimulatedVpc

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
AMAZON_DNS = "169.254.169.253"
LOOPBACK = "127.0.0.1"
# "Raised" forward limit for dnsmasq: its default of 150 refuses most of a cold burst.
DNSMASQ_FORWARD_MAX = 5000
READY_TIMEOUT = 20.0
PACER_ADDR = "127.0.0.2"
# Just under the 1024 budget (TCP is charged 5 packets a query). A perfect cache paced at
# 900/s makes the cold 5000 qps workload wait up to 1.95 s, at 1000/s 1.42 s
# (bench.minimum.paced_waits); a host whose other traffic also uses the link-local
# allowance needs more headroom.
PACER_RATE = 1000


def render_bind_defaults(workdir: Path, forwarder: str = AMAZON_DNS) -> str:
    """Debian 12's stock /etc/bind/named.conf.options with its forwarders block uncommented.

    Only paths differ from stock (pid file, session key and working directory in `workdir`,
    so the peer never shares /run/named with the agent's named), and the default zones are
    included as Debian's named.conf does. `dnssec-validation auto` becomes `no`: the rig's
    resolver serves only its own zones, not the root DNSKEY a validator needs, so stock
    validation would SERVFAIL every answer here (on EC2 the Amazon resolver serves it).
    """
    return (
        "options {\n"
        f'\tdirectory "{workdir}";\n'
        f'\tpid-file "{workdir}/named.pid";\n'
        f'\tsession-keyfile "{workdir}/session.key";\n'
        "\tforwarders {\n"
        f"\t\t{forwarder};\n"
        "\t};\n"
        "\tdnssec-validation no;\n"
        "\tlisten-on-v6 { any; };\n"
        "};\n"
        'include "/etc/bind/named.conf.default-zones";\n'
    )


def render_unbound_defaults(workdir: Path, forwarder: str = AMAZON_DNS) -> str:
    """unbound's built-in defaults, listening on loopback, with everything forwarded to the
    Amazon resolver (no trust anchor: Debian adds one through unbound.conf.d, which a
    forward to the VPC resolver's private zones cannot validate anyway). unbound answers
    NXDOMAIN for the RFC 6761 `test.` zone by default; the rig's zone is vpc.test, so that
    one default local zone is turned off."""
    return (
        "server:\n"
        f"\tinterface: {LOOPBACK}\n"
        "\tdo-daemonize: no\n"
        '\tchroot: ""\n'
        f'\tdirectory: "{workdir}"\n'
        f'\tpidfile: "{workdir}/unbound.pid"\n'
        "\tuse-syslog: no\n"
        f'\tlogfile: "{workdir}/unbound.log"\n'
        '\tlocal-zone: "test." nodefault\n'
        "forward-zone:\n"
        '\tname: "."\n'
        f"\tforward-addr: {forwarder}\n"
    )


def dnsmasq_argv(workdir: Path, forwarder: str = AMAZON_DNS,
                 forward_max: int = DNSMASQ_FORWARD_MAX) -> list[str]:
    """dnsmasq at its defaults (cache-size 150), forwarding only, with a raised forward-max."""
    return ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", f"--server={forwarder}", f"--listen-address={LOOPBACK}",
            "--bind-interfaces", f"--dns-forward-max={forward_max}",
            f"--pid-file={workdir}/dnsmasq.pid", f"--log-facility={workdir}/dnsmasq.log"]


def has_packaged_pacer() -> bool:
    """Whether this tree's agent has the `[pacer]` settings (the shipped budget pacer)."""
    from dnscache_agent import settings

    return hasattr(settings, "PacerSettings")


def agent_settings(workdir: Path, health_name: str = "h1.vpc.test",
                   forwarders: Sequence[str] = (), extra: str = "",
                   pacer: bool | None = True) -> str:
    """The agent's settings file for the bench: state kept in the run's work directory;
    `extra` is more `[cache]` lines. With the packaged pacer (`pacer` None: the tree has
    none), its stats and warm files go to the work directory too (not the host's /run and
    /var), or `pacer=False` turns it off."""
    fwd = ("forwarders = [" + ", ".join(f'"{f}"' for f in forwarders) + "]\n"
           if forwarders else "")
    text = (f'[agent]\nstate_dir = "{workdir}/state"\n\n'
            f'[cache]\nhealth_name = "{health_name}"\n{fwd}{extra}')
    if pacer is not None:
        text += (f'\n[pacer]\nenabled = {"true" if pacer else "false"}\n'
                 f'stats_file = "{workdir}/pacer-stats.json"\n'
                 f'warm_file = "{workdir}/pacer-warm.json"\n')
    return text


class Peer(ABC):
    """One resolver under test. `start()` gives a running resolver with an empty cache."""

    name: str = ""
    label: str = ""
    server: str = LOOPBACK
    has_cache = True
    is_agent = False  # the agent's named: restart scenario, warm list

    def __init__(self, vpc: SimulatedVpc, workdir: Path) -> None:
        self.vpc = vpc
        self.workdir = workdir

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def stub_resolv_conf(self, original: str) -> str | None:
        """/etc/resolv.conf for the glibc mode while this peer runs, or None when the peer
        writes its own (the agent). A cache is put first the way an admin would by hand,
        the original servers kept as fallback and glibc's default timeout:5 attempts:2."""
        return "nameserver 127.0.0.1\n" + original

    def restart(self) -> None:
        """Stop (if running) and start with a cold cache."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and undo anything the peer changed in the instance."""
        self.stop()

    def wait_ready(self, proc: subprocess.Popen[Any] | None = None) -> None:
        """Wait until something answers on server:53 (any rcode). Raises RuntimeError."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {proc.returncode} at start")
            cp = self.vpc.exec_instance(["dig", f"@{self.server}", "+time=1", "+tries=1",
                                         "version.bind", "CH", "TXT"], timeout=10)
            if cp.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer on {self.server}:53 in "
                           f"{READY_TIMEOUT:g}s")


class NoCache(Peer):
    """Applications asking the Amazon resolver directly."""

    name = "nocache"
    label = "no cache"
    server = AMAZON_DNS
    has_cache = False

    def stub_resolv_conf(self, original: str) -> str | None:
        return original

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class ProcessPeer(Peer):
    """A resolver we run in the foreground in the instance namespace and stop by PID."""

    def __init__(self, vpc: SimulatedVpc, workdir: Path) -> None:
        super().__init__(vpc, workdir)
        self.proc: subprocess.Popen[Any] | None = None

    @abstractmethod
    def argv(self) -> list[str]: ...

    def prepare(self) -> None:
        """Write config files into a fresh work directory (called before each start)."""

    def start(self) -> None:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        self.prepare()
        with open(self.workdir / "stderr.log", "ab") as err:
            self.proc = self.vpc.popen_instance(self.argv(), stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=err)
        log.info("%s started, pid %s", self.name, self.proc.pid)
        self.wait_ready(self.proc)

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        netns.stop_process(proc, grace=10)
        log.info("%s pid %s stopped", self.name, proc.pid)


def _chown_bind(path: Path) -> None:
    try:
        shutil.chown(path, user="bind", group="bind")
    except (LookupError, OSError):
        log.warning("cannot chown %s to bind", path)


class BindDefaults(ProcessPeer):
    name = "bind9"
    label = "bind9 defaults"

    def prepare(self) -> None:
        (self.workdir / "named.conf").write_text(render_bind_defaults(self.workdir))
        _chown_bind(self.workdir)

    def argv(self) -> list[str]:
        return ["named", "-g", "-u", "bind", "-c", str(self.workdir / "named.conf")]


class UnboundDefaults(ProcessPeer):
    name = "unbound"
    label = "unbound defaults"

    def prepare(self) -> None:
        (self.workdir / "unbound.conf").write_text(render_unbound_defaults(self.workdir))
        if _has_user("unbound"):
            shutil.chown(self.workdir, user="unbound")

    def argv(self) -> list[str]:
        return ["unbound", "-d", "-c", str(self.workdir / "unbound.conf")]


class Dnsmasq(ProcessPeer):
    name = "dnsmasq"
    label = f"dnsmasq (forward-max {DNSMASQ_FORWARD_MAX})"

    def argv(self) -> list[str]:
        return dnsmasq_argv(self.workdir)


def _has_user(user: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


class Agent(Peer):
    """The agent's rendered config, applied by `dnscache-agent apply` in the instance.

    The agent starts named itself (its process backend: named daemonizes); a cold restart
    stops the named of the instance namespace by PID and applies again, which starts it
    ("nothing to change" + named not running → start). `close()` rolls the agent back.
    """

    name = "agent"
    label = "dnscache-agent"
    is_agent = True
    forwarders: tuple[str, ...] = ()
    extra_settings = ""
    packaged_pacer = True  # as shipped: on where the tree has it

    def __init__(self, vpc: SimulatedVpc, workdir: Path, pid_file: Path = Path(
            "/run/named/named.pid")) -> None:
        super().__init__(vpc, workdir)
        self.pid_file = pid_file
        self.applied = False
        self.settings = workdir / "agent.toml"

    def _agent(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = ["env", "-u", "DNSCACHE_AGENT_IMDS_ENDPOINT", f"PYTHONPATH={REPO}"]
        return self.vpc.exec_instance([*env, sys.executable, "-m", "dnscache_agent", args[0],
                                       "--config", str(self.settings), *args[1:]],
                                      timeout=timeout)

    def start(self) -> None:
        if not self.applied:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.settings.write_text(agent_settings(
                self.workdir, forwarders=self.forwarders, extra=self.extra_settings,
                pacer=self.packaged_pacer if has_packaged_pacer() else None))
        cp = self._agent("apply")
        if cp.returncode != 0:
            raise RuntimeError(f"dnscache-agent apply failed: {cp.stdout}{cp.stderr}")
        self.applied = True
        if len(self.named_pids()) != 1:
            # apply found "named running" through a pid file of another namespace's named
            # and reloaded that one: what answers here would not be a fresh agent config.
            raise RuntimeError(f"after apply, named processes in {self.vpc.instance_ns}: "
                               f"{self.named_pids()} (expected exactly one; is another "
                               f"named using {self.pid_file}?)")
        self.wait_ready()

    def stub_resolv_conf(self, original: str) -> str | None:
        return None  # `apply` renders it: cache first, fallback, timeout:, attempts:

    def named_pids(self) -> list[int]:
        """PIDs of named processes in this VPC's instance namespace. Found by namespace, not
        through the agent's pid file: /run is shared by every namespace on the host, so
        another test's named can own /run/named/named.pid."""
        out: list[int] = []
        for pid in netns.pids(self.vpc.instance_ns):
            try:
                if psutil.Process(pid).name() == "named":
                    out.append(pid)
            except psutil.Error:
                continue
        return out

    def stop(self) -> None:
        for pid in self.named_pids():
            proc = psutil.Process(pid)
            proc.terminate()
            try:
                proc.wait(15)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.info("agent's named pid %s stopped", pid)

    def close(self) -> None:
        if self.applied:
            cp = self._agent("rollback")
            if cp.returncode != 0:
                log.warning("dnscache-agent rollback: %s", cp.stderr.strip())
        self.stop()


class AgentPaced(Agent):
    """The agent's config forwarding to bench/pacer.py on 127.0.0.2, which paces packets to
    the Amazon resolver under the budget (a prototype of a mechanism the agent could ship)."""

    name = "agent+pacer"
    label = "dnscache-agent + pacer prototype"
    forwarders = (PACER_ADDR,)
    packaged_pacer = False  # the prototype alone, not both in a row
    # Misses now wait in the pacer's queue instead of being lost, and each waiting miss
    # holds one of named's recursion slots: at 5000 qps cold, 2000 slots (the 2-vCPU
    # default) dropped 30% of lookups, 10000 slots 0.55%.
    extra_settings = "recursive_clients = 10000\n"

    def __init__(self, vpc: SimulatedVpc, workdir: Path, **kw: Any) -> None:
        super().__init__(vpc, workdir, **kw)
        self.pacer: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pacer = self.vpc.popen_instance(
            ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "bench.pacer", "--listen",
             PACER_ADDR, "--upstream", AMAZON_DNS, "--rate", str(PACER_RATE),
             "--run-for", "1800"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=open(self.workdir / "pacer.log", "ab"), text=True)  # noqa: SIM115
        assert self.pacer.stdout is not None
        line = self.pacer.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"pacer did not start: {line!r}")
        super().start()

    def stop(self) -> None:
        super().stop()
        if self.pacer is not None:
            proc, self.pacer = self.pacer, None
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


class AgentNoPacer(Agent):
    """The agent with its shipped pacer turned off (`[pacer] enabled = false`): the
    difference to "agent" is what the pacer does."""

    name = "agent-nopacer"
    label = "dnscache-agent, pacer off"
    packaged_pacer = False


PEERS: dict[str, type[Peer]] = {
    "nocache": NoCache,
    "bind9": BindDefaults,
    "unbound": UnboundDefaults,
    "dnsmasq": Dnsmasq,
    "agent": Agent,
    "agent-nopacer": AgentNoPacer,
    "agent+pacer": AgentPaced,
}


def default_peers() -> tuple[str, ...]:
    """The peers of a full run: with the packaged pacer, the agent with it on and off;
    before it, the agent and the prototype pacer."""
    agents = ("agent-nopacer", "agent") if has_packaged_pacer() else ("agent", "agent+pacer")
    return ("nocache", "bind9", "unbound", "dnsmasq", *agents)
