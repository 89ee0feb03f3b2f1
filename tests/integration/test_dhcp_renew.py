"""A real DHCP round trip for the dhclient backend: dnsmasq serves leases in one namespace, the
real ISC dhclient and Debian's dhclient-script run in another, with the config the agent planned.

Addresses are link-local (169.254.77.0/24) inside namespaces this test creates; the DNS server
the lease names (169.254.77.53) is never queried. dhclient-script is a copy of the host's with
its hook directories pointed into the test's root (empty, except for the exit hook the agent
writes there), so no host hook (timesyncd, routes) runs; its make_resolv_conf is unchanged.
Inside `ip netns exec`, /etc/resolv.conf is a bind mount of /etc/netns/<ns>/resolv.conf:
dhclient-script writes it with `cat >` and the agent's hostfs falls back to an in-place write
when rename(2) over the mount fails with EBUSY.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from dnscache_agent import host_facts, resolv_conf, resolvers, verify
from dnscache_agent.checkpoint import StateStore
from dnscache_agent.commands import Runner
from dnscache_agent.health import Health
from dnscache_agent.plan_model import Plan
from dnscache_agent.platform import DEBIAN
from dnscache_agent.resolvers import BackendContext
from dnscache_agent.resolvers import dhclient as dhclient_mod
from dnscache_agent.rootfs import Root
from dnscache_agent.services import NoService
from dnscache_agent.settings import ImdsSettings, Settings
from dnscache_agent.transaction import Transaction
from rig import netns
from tests.machinery import (
    first_missing,
    missing_paths,
    missing_root,
    missing_tools,
    module_requires,
)

REPO = Path(__file__).resolve().parents[2]
SERVER_ADDR = "169.254.77.1"
DNS_FROM_DHCP = "169.254.77.53"
DOMAIN = "dnscache.test"
SEARCH = DOMAIN + "."  # dhclient prints the RFC 3397 domain-search list fully qualified
SETTINGS = Settings(imds=ImdsSettings(enabled=False))
HOST_SCRIPT = Path("/sbin/dhclient-script")
HOST_CONF = Path("/etc/dhcp/dhclient.conf")

_machinery = module_requires(first_missing([
    missing_root("network namespaces, dhclient"),
    missing_tools("dnsmasq", "dhclient", "ip"),
    missing_paths(HOST_SCRIPT, why="package isc-dhcp-client"),
]))


@dataclass
class Lab:
    server_ns: str
    client_ns: str
    client_if: str
    work: Path

    @property
    def resolv_conf(self) -> Path:
        """What processes in the client namespace see as /etc/resolv.conf."""
        return Path("/etc/netns") / self.client_ns / "resolv.conf"

    @property
    def leases(self) -> Path:
        return self.work / "dhclient.leases"

    def pid_file(self, tag: str) -> Path:
        return self.work / f"dhclient-{tag}.pid"


def _hooked_script(work: Path, exit_hooks: Path | None = None) -> Path:
    """A copy of dhclient-script whose hook paths point at folders under `work`, the exit-hook
    folder at `exit_hooks` (where the test root's agent writes its hook) when given."""
    hooks = work / "hooks"
    (hooks / "enter.d").mkdir(parents=True)
    (hooks / "exit.d").mkdir()
    exit_dir = exit_hooks or hooks / "exit.d"
    replacements = {"/etc/dhcp/dhclient-enter-hooks.d": hooks / "enter.d",
                    "/etc/dhcp/dhclient-exit-hooks.d": exit_dir,
                    "/etc/dhcp/dhclient-enter-hooks": hooks / "enter",
                    "/etc/dhcp/dhclient-exit-hooks": hooks / "exit"}
    # One pass, longest match first: a replacement (exit_dir may end in /etc/dhcp/...) is
    # never rewritten again.
    pattern = "|".join(re.escape(k) for k in sorted(replacements, key=len, reverse=True))
    text = re.sub(pattern, lambda m: str(replacements[m.group(0)]), HOST_SCRIPT.read_text())
    script = work / "dhclient-script"
    script.write_text(text)
    script.chmod(0o755)
    return script


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    token = os.urandom(3).hex()
    server_ns = netns.unique_name("dcr", "srv", token=token)
    client_ns = netns.unique_name("dcr", "cli", token=token)
    srv_if, cli_if = f"dcs{token}", f"dcc{token}"
    overlay = Path("/etc/netns") / client_ns
    dnsmasq: subprocess.Popen[bytes] | None = None
    try:
        netns.add(server_ns)
        netns.add(client_ns)
        netns.run(["ip", "link", "add", srv_if, "type", "veth", "peer", "name", cli_if])
        netns.run(["ip", "link", "set", srv_if, "netns", server_ns])
        netns.run(["ip", "link", "set", cli_if, "netns", client_ns])
        for ns, ifname in ((server_ns, srv_if), (client_ns, cli_if)):
            netns.run(netns.exec_argv(ns, ["ip", "link", "set", "lo", "up"]))
            netns.run(netns.exec_argv(ns, ["ip", "link", "set", ifname, "up"]))
        netns.run(netns.exec_argv(server_ns, ["ip", "addr", "add", f"{SERVER_ADDR}/24",
                                              "dev", srv_if]))
        overlay.mkdir(parents=True)
        (overlay / "resolv.conf").write_text("")
        dnsmasq = subprocess.Popen(netns.exec_argv(server_ns, [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            "--user=root", "--group=root", f"--interface={srv_if}", "--bind-interfaces",
            f"--dhcp-leasefile={tmp_path / 'dnsmasq.leases'}", "--pid-file",
            "--dhcp-range=169.254.77.10,169.254.77.20,255.255.255.0,2m",
            f"--dhcp-option=option:dns-server,{DNS_FROM_DHCP}",
            f"--dhcp-option=option:domain-name,{DOMAIN}",
            f"--dhcp-option=option:domain-search,{DOMAIN}",
            "--dhcp-option=option:router",  # no default route in the client namespace
            # Renew after 6 s instead of half the 2-minute minimum lease.
            "--dhcp-option=option:T1,6", "--dhcp-option=option:T2,100",
        ]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        assert dnsmasq.poll() is None, dnsmasq.stderr.read() if dnsmasq.stderr else ""
        yield Lab(server_ns, client_ns, cli_if, tmp_path)
    finally:
        for ns in (client_ns, server_ns):
            with contextlib.suppress(netns.RigError):
                netns.kill_all_in(ns)
        if dnsmasq is not None:
            netns.kill_pids([dnsmasq.pid])
            dnsmasq.wait(5)
        for ns in (client_ns, server_ns):
            with contextlib.suppress(netns.RigError):
                netns.delete(ns)
        shutil.rmtree(overlay, ignore_errors=True)


def dhclient(lab: Lab, conf: Path, tag: str) -> int:
    """`dhclient -1` in the client namespace; returns the PID of the daemon it leaves."""
    script = lab.work / "dhclient-script"
    if not script.exists():
        _hooked_script(lab.work)
    argv = netns.exec_argv(lab.client_ns, [
        "dhclient", "-1", "-4", "-v", "-cf", str(conf), "-sf", str(script),
        "-lf", str(lab.leases), "-pf", str(lab.pid_file(tag)), lab.client_if])
    cp = netns.run(argv, timeout=60, check=False)
    assert cp.returncode == 0, cp.stderr
    # The daemonised child writes the pid file; the parent may exit first.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        words = lab.pid_file(tag).read_text().split() if lab.pid_file(tag).exists() else []
        if words:
            return int(words[0])
        time.sleep(0.05)
    raise AssertionError(f"dhclient ({tag}) wrote no pid file within 10 s")


def stop(pid: int) -> None:
    netns.kill_pids([pid])


def lease_count(lab: Lab) -> int:
    return lab.leases.read_text().count("lease {") if lab.leases.exists() else 0


def wait_for_renew(lab: Lab, before: int, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lease_count(lab) > before:
            time.sleep(0.5)  # dhclient-script runs right after the lease is recorded
            return
        time.sleep(0.2)
    raise AssertionError(f"no DHCP renew within {timeout:g}s")


def write_in_namespace(lab: Lab, content: bytes) -> None:
    """The agent's own writer, run where /etc/resolv.conf is a bind mount."""
    code = ("import sys; from pathlib import Path; from dnscache_agent import hostfs; "
            "hostfs.atomic_write(Path('/etc/resolv.conf'), sys.stdin.buffer.read(), "
            "hostfs.FileMeta(0o644, 0, 0))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cp = subprocess.run(netns.exec_argv(lab.client_ns, [sys.executable, "-c", code]),
                        input=content, capture_output=True, timeout=30, env=env, check=False)
    assert cp.returncode == 0, cp.stderr.decode()


def transaction(root: Root) -> Transaction:
    runner = Runner()
    return Transaction(root, DEBIAN, runner=runner, service=NoService(root, DEBIAN, runner),
                       health_check=lambda: Health(True, "staged root"))


def test_dhcp_renew_keeps_cache_first_and_dhcp_server_as_fallback(lab: Lab) -> None:
    root = Root(lab.work / "root")
    root.path("/etc/dhcp").mkdir(parents=True)
    conf = root.path("/etc/dhcp/dhclient.conf")
    shutil.copyfile(HOST_CONF, conf)
    original_conf = conf.read_bytes()
    # The backend picks its hook layout from the installed script; the test's copy of the
    # script sources exit hooks from the root, where the agent writes its hook.
    root.path("/usr/sbin").mkdir(parents=True)
    shutil.copyfile(HOST_SCRIPT, root.path("/usr/sbin/dhclient-script"))
    hook_dir = root.path("/etc/dhcp/dhclient-exit-hooks.d")
    hook_dir.mkdir()
    _hooked_script(lab.work, hook_dir)
    hook = root.path(dhclient_mod.HOOK_LAYOUTS[0].path)

    # Before the agent: the lease's server is the only one.
    pid = dhclient(lab, conf, "before")
    before = lab.resolv_conf.read_text()
    stop(pid)
    assert resolv_conf.parse(before).nameservers == (DNS_FROM_DHCP,)
    assert resolv_conf.parse(before).search == (SEARCH,)
    assert resolv_conf.parse(before).options == ()  # Debian's script writes no options line
    root.path("/etc/resolv.conf").write_text(before)

    # Apply the dhclient backend to the files the namespace's dhclient uses.
    backend = resolvers.get("dhclient")
    view = host_facts.read_view(root, StateStore(root))
    ctx = BackendContext(view=view, settings=SETTINGS, agent_version="test")
    plan = Plan(files=backend.plan(ctx), resolver_backend=backend.name, bind_installed=True)
    transaction(root).apply(plan)
    assert [f.path for f in plan.files if f.path.startswith("/etc/dhcp/dhclient-exit")] == [
        dhclient_mod.HOOK_LAYOUTS[0].path]  # Debian's layout only, read from the script
    assert hook.is_file()
    wired = root.path("/etc/resolv.conf").read_bytes()
    write_in_namespace(lab, wired)  # rename over the bind mount: EBUSY, then in place
    assert lab.resolv_conf.read_bytes() == wired
    original = resolv_conf.parse(before)
    assert resolv_conf.check_invariants(wired.decode(), original=original) == []

    # A new lease (INIT-REBOOT from the lease file), then a real RENEW by the running daemon.
    pid = dhclient(lab, conf, "after")
    try:
        after_reboot = lab.resolv_conf.read_text()
        count = lease_count(lab)
        wait_for_renew(lab, count)
        after_renew = lab.resolv_conf.read_text()
    finally:
        stop(pid)
    lease = dhclient_mod.Lease((DNS_FROM_DHCP,), domain_name=DOMAIN, domain_search=SEARCH)
    for text in (after_reboot, after_renew):
        conf_parsed = resolv_conf.parse(text)
        assert conf_parsed.nameservers == ("127.0.0.1", DNS_FROM_DHCP), text
        assert conf_parsed.search == (SEARCH,), text
        # The exit hook put the short timeout back after dhclient-script's rewrite.
        assert conf_parsed.options == ("timeout:1", "attempts:2"), text
        assert resolv_conf.check_invariants(text, original=original) == [], text
        # The pure model the unit tests rely on matches the real dhclient-script + hook.
        assert text == dhclient_mod.simulate_dhclient_script(
            conf.read_text(), lease, hook_text=hook.read_text())

    # A dhclient started before the agent keeps the pre-agent config in memory (dhclient
    # reads it only at start; on EC2 the one from boot renews every half hour). Its leases
    # must still put the cache first: the hook does it, as the prepend would.
    stale_conf = lab.work / "dhclient-before-the-agent.conf"
    stale_conf.write_bytes(original_conf)
    pid = dhclient(lab, stale_conf, "stale")
    try:
        stale_reboot = lab.resolv_conf.read_text()
        wait_for_renew(lab, lease_count(lab))
        stale_renew = lab.resolv_conf.read_text()
    finally:
        stop(pid)
    for text in (stale_reboot, stale_renew):
        conf_parsed = resolv_conf.parse(text)
        assert conf_parsed.nameservers == ("127.0.0.1", DNS_FROM_DHCP), text
        assert conf_parsed.options == ("timeout:1", "attempts:2"), text
        assert text == dhclient_mod.simulate_dhclient_script(
            stale_conf.read_text(), lease, hook_text=hook.read_text())

    # verify after the renew passes: the plan marks resolv.conf as regenerated by dhclient,
    # so the renew's own layout is judged by the wiring invariants, not called drift (the
    # daemon would otherwise "repair" a correct file every lease). The root's resolv.conf gets
    # what the renew wrote in the namespace. No bind in this test: its two checks are left out.
    root.path("/etc/resolv.conf").write_text(after_renew)
    root.path("/etc/os-release").write_text("ID=debian\nVERSION_ID=12\n")
    facts = host_facts.gather(root, SETTINGS, backend_override="dhclient")
    renewed_plan = replace(plan, regenerated=frozenset(backend.regenerated))
    report = verify.verify(facts, SETTINGS, renewed_plan, root)
    checks = {c.name: c for c in report.checks
              if c.name not in (verify.BIND_INSTALLED, verify.FORWARDERS)}
    assert all(c.ok for c in checks.values()), [c for c in checks.values() if not c.ok]
    for f in plan.files:
        assert f"file {f.path}" in checks and f"mode {f.path}" in checks
    assert checks[verify.RESOLVER_WIRING].ok

    # Rollback restores the config byte for byte, removes the hook, and the next lease
    # behaves as before.
    transaction(root).rollback()
    assert conf.read_bytes() == original_conf
    assert not hook.exists()
    assert root.path("/etc/resolv.conf").read_text() == before
    pid = dhclient(lab, conf, "rolled-back")
    stop(pid)
    rolled_back = resolv_conf.parse(lab.resolv_conf.read_text())
    assert rolled_back.nameservers == (DNS_FROM_DHCP,)
    assert rolled_back.options == ()


def test_redhat_dhclient_d_hook_fixes_res_options_in_a_real_shell(lab: Lab) -> None:
    """AL2's layout, run the way Red Hat's dhclient-script does (bash sources NAME.sh, calls
    NAME_config) on what that script writes from RES_OPTIONS; the pure model must agree."""
    root = Root(lab.work / "root")
    shutil.copytree(REPO / "tests/fixtures/roots/dhclient-al2", root.base, symlinks=True)
    backend = resolvers.get("dhclient")
    view = host_facts.read_view(root, StateStore(root))
    ctx = BackendContext(view=view, settings=SETTINGS, agent_version="test")
    hook = next(f for f in backend.plan(ctx) if f.path.endswith(".sh"))
    assert hook.path == "/etc/dhcp/dhclient.d/dnscache_agent.sh" and hook.mode == 0o755
    script = lab.work / "dnscache_agent.sh"
    script.write_bytes(hook.content)
    written = ("; generated by /usr/sbin/dhclient-script\nsearch ec2.internal\n"
               "options rotate timeout:5 attempts:5 edns0\nnameserver 127.0.0.1\n"
               "nameserver 169.254.77.53\n")
    lab.resolv_conf.write_text(written)
    cp = netns.run(netns.exec_argv(lab.client_ns, [
        "bash", "-c", f'subsystem=dnscache_agent; . "{script}"; "${{subsystem}}_config"']),
        timeout=30, check=False)
    assert cp.returncode == 0, cp.stderr
    text = lab.resolv_conf.read_text()
    assert resolv_conf.parse(text).options == ("edns0", "timeout:1", "attempts:2"), text
    assert text == dhclient_mod.apply_options_hook(written, dhclient_mod.hook_options(
        hook.content.decode()))
    # A second lease with nothing to change leaves the file alone (no rewrite, same bytes).
    before = lab.resolv_conf.stat().st_mtime_ns
    netns.run(netns.exec_argv(lab.client_ns, [
        "bash", "-c", f'. "{script}"; dnscache_agent_config']), timeout=30)
    assert lab.resolv_conf.read_text() == text
    assert lab.resolv_conf.stat().st_mtime_ns == before
    # A lease from a dhclient started before the agent (no prepend in its config): the cache
    # goes first, once, in the real shell as in the model.
    stale = ("; generated by /usr/sbin/dhclient-script\nsearch ec2.internal\n"
             "options rotate timeout:5\nnameserver 169.254.77.53\nnameserver 127.0.0.1\n")
    lab.resolv_conf.write_text(stale)
    netns.run(netns.exec_argv(lab.client_ns, [
        "bash", "-c", f'. "{script}"; dnscache_agent_config']), timeout=30)
    text = lab.resolv_conf.read_text()
    assert resolv_conf.parse(text).nameservers == ("127.0.0.1", "169.254.77.53"), text
    assert text == dhclient_mod.apply_options_hook(stale, dhclient_mod.hook_options(
        hook.content.decode()))
