"""Resolver backends on fixture root trees: detection, golden files, the wiring invariants on the
resolv.conf each manager would produce (through small pure models of resolvconf's libc script,
dhclient-script and systemd-resolved), idempotence, byte-exact rollback and drift reports.

Regenerate the golden files after an intended change with
    DNSCACHE_UPDATE_GOLDEN=1 pytest tests/unit/test_resolver_backends.py
and review the diff.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from dnscache_agent import host_facts, planner, resolv_conf, resolvers, verify
from dnscache_agent.checkpoint import StateStore
from dnscache_agent.commands import Runner
from dnscache_agent.health import Health
from dnscache_agent.plan_model import Plan
from dnscache_agent.platform import DEBIAN
from dnscache_agent.resolvers import (
    BackendContext,
    HostView,
    managed_block,
    netplan,
    resolvconf,
    resolved,
)
from dnscache_agent.resolvers import dhclient as dhclient_mod
from dnscache_agent.rootfs import Root
from dnscache_agent.services import NoService
from dnscache_agent.settings import ImdsSettings, Settings
from dnscache_agent.transaction import Transaction, pending

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ROOTS = FIXTURES / "roots"
GOLDEN = FIXTURES / "golden"
UPDATE_GOLDEN = os.environ.get("DNSCACHE_UPDATE_GOLDEN") == "1"
SETTINGS = Settings(imds=ImdsSettings(enabled=False))
VERSION = "GOLDEN"


@dataclass(frozen=True)
class Stack:
    root: str
    backend: str
    # The DHCP server and search list the fixture's manager learnt (the fallback to keep).
    dhcp_server: str
    search: tuple[str, ...]


STACKS = {
    s.root: s for s in (
        Stack("resolvconf-ubuntu1604", "resolvconf", "172.31.0.2", ("ec2.internal",)),
        Stack("dhclient-debian12", "dhclient", "172.31.0.2", ("ec2.internal",)),
        Stack("dhclient-al2", "dhclient", "172.31.0.2",
              ("ec2.internal", "eu-west-1.compute.internal")),
        Stack("netplan-ubuntu2204", "netplan", "172.31.0.2", ("ec2.internal",)),
        Stack("resolved-al2023", "systemd-resolved", "172.31.0.2",
              ("eu-west-1.compute.internal",)),
        Stack("networkmanager-rhel9", "networkmanager", "172.31.0.2",
              ("eu-west-1.compute.internal",)),
    )
}
STACK_IDS = sorted(STACKS)


# --- helpers ---------------------------------------------------------------------------------

def staged(tmp_path: Path, stack: str) -> Root:
    """A private copy of a fixture root (symlinks kept as links)."""
    dst = tmp_path / stack
    shutil.copytree(ROOTS / stack, dst, symlinks=True)
    return Root(dst)


def view_of(root: Root) -> HostView:
    return host_facts.read_view(root, StateStore(root))


def context(root: Root, vpc_resolver: str | None = None) -> BackendContext:
    return BackendContext(view=view_of(root), settings=SETTINGS, agent_version=VERSION,
                          vpc_resolver=vpc_resolver)


def resolver_plan(root: Root, backend_name: str) -> Plan:
    backend = resolvers.get(backend_name)
    ctx = context(root)
    return Plan(files=backend.plan(ctx), resolver_backend=backend.name,
                activate=backend.activate(ctx), bind_installed=True)


def transaction(root: Root) -> Transaction:
    runner = Runner()
    return Transaction(root, DEBIAN, runner=runner, service=NoService(root, DEBIAN, runner),
                       health_check=lambda: Health(True, "not checked on a staged root"))


def snapshot(root: Root) -> dict[str, tuple[str, object, int]]:
    """Every file and symlink under the root: target, or bytes and mode. (Directories the agent
    created for new files stay, empty, after a rollback: the checkpoint records files.)"""
    out: dict[str, tuple[str, object, int]] = {}
    for path in sorted(root.base.rglob("*")):
        rel = "/" + str(path.relative_to(root.base))
        if rel.startswith("/var/lib/dnscache-agent"):
            continue
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path), 0)
        elif path.is_file():
            out[rel] = ("file", path.read_bytes(), path.stat().st_mode & 0o7777)
    return out


def original_effective(stack: str) -> resolv_conf.ResolvConf:
    """What processes saw before the agent: the fixture's resolv.conf, through its link."""
    root = Root(ROOTS / stack)
    view = view_of(root)
    target = view.link_target()
    text = root.read_text(target) if target else root.read_text(resolvers.base.RESOLV_CONF)
    return resolv_conf.parse(text or "")


def apply_resolver(root: Root, backend: str) -> Plan:
    plan = resolver_plan(root, backend)
    transaction(root).apply(plan)
    return plan


# --- what each manager would write, from the files on a staged root ------------------------

RENEW_LEASE = dhclient_mod.Lease(servers=("172.31.0.2",), domain_name="ec2.internal",
                                 domain_search="ec2.internal")


def resolvconf_output(root: Root, records: dict[str, str] | None = None) -> str:
    """`resolvconf -u` on the staged root (records from /run/resolvconf/interface)."""
    record_dir = root.path(resolvconf.RECORD_DIR)
    found = {p.name: p.read_text() for p in record_dir.iterdir()} if record_dir.is_dir() else {}
    found.update(records or {})
    return resolvconf.simulate_libc(
        records=found, interface_order=root.read_text(resolvconf.INTERFACE_ORDER),
        head=root.read_text(resolvconf.HEAD), base=root.read_text(resolvconf.BASE),
        tail=root.read_text(resolvconf.TAIL), defaults=root.read_text(resolvconf.DEFAULTS))


def installed_hook(root: Root) -> str | None:
    """The dhclient options hook the agent wrote on the staged root (either layout)."""
    texts = [root.read_text(h.path) for h in dhclient_mod.HOOK_LAYOUTS]
    found = [t for t in texts if t is not None]
    assert len(found) <= 1, "one layout per host when its dhclient-script is known"
    return found[0] if found else None


def simulate_resolved_uplink(drop_in: str, link_servers: list[str], search: list[str]) -> str:
    """resolved's /run/systemd/resolve/resolv.conf: global DNS= first, then link servers,
    de-duplicated (resolved-resolv-conf.c)."""
    servers: list[str] = []
    for line in drop_in.splitlines():
        if line.startswith("DNS="):
            value = line[4:].split()
            servers = value if value else []
    for s in link_servers:
        if s not in servers:
            servers.append(s)
    return "".join(f"nameserver {s}\n" for s in servers) + f"search {' '.join(search)}\n"


def manager_outputs(root: Root, stack: Stack) -> dict[str, str]:
    """The resolv.conf processes read after apply, and after a DHCP renew / regeneration."""
    backend = resolvers.get(stack.backend)
    effective = backend.effective_resolv_conf(view_of(root))
    if stack.backend == "resolvconf":
        renewed = {"eth0.dhclient": dhclient_mod.simulate_dhclient_script(
            "", RENEW_LEASE).replace("domain ec2.internal\n", "")}
        return {"after apply (resolvconf -u)": resolvconf_output(root),
                "after renew": resolvconf_output(root, renewed)}
    if stack.backend == "dhclient":
        conf = root.read_text(dhclient_mod.DHCLIENT_CONF) or ""
        lease = replace(RENEW_LEASE, domain_name="", domain_search=" ".join(stack.search))
        return {"after apply": root.read_text(effective) or "",
                "after renew": dhclient_mod.simulate_dhclient_script(
                    conf, lease, hook_text=installed_hook(root))}
    text = root.read_text(effective) or ""
    outputs = {"after apply": text}
    if stack.backend in ("systemd-resolved", "netplan"):
        drop_in = root.read_text(resolved.DROP_IN) or ""
        outputs["resolved uplink after restart"] = simulate_resolved_uplink(
            drop_in, [stack.dhcp_server], list(stack.search))
    # resolved and NetworkManager never write /etc/resolv.conf now: a renew leaves it.
    outputs["after renew"] = root.read_text(effective) or ""
    return outputs


# --- detection -------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACK_IDS)
def test_detection_picks_the_manager_that_owns_resolv_conf(stack: str) -> None:
    detection = resolvers.detect(view_of(Root(ROOTS / stack)))
    assert detection.backend == STACKS[stack].backend, detection
    assert detection.reason


def test_detection_explains_al2023_direct_mode_and_ubuntu_stub() -> None:
    al = resolvers.detect(view_of(Root(ROOTS / "resolved-al2023")))
    ub = resolvers.detect(view_of(Root(ROOTS / "netplan-ubuntu2204")))
    assert "direct-to-VPC" in al.reason
    assert "127.0.0.53" in ub.reason and "netplan" in ub.reason
    # netplan hosts also run resolved: both detect, netplan wins on priority.
    assert [b for b, _ in ub.candidates][:2] == ["netplan", "systemd-resolved"]


def test_resolvectl_resolvconf_shim_is_not_the_resolvconf_package() -> None:
    view = view_of(Root(ROOTS / "netplan-ubuntu2204"))
    shim = replace(view, binaries=view.binaries | {"resolvconf"})
    assert resolvers.get("resolvconf").detect(shim) is None


# --- golden files ----------------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACK_IDS)
def test_plan_matches_golden_files(stack: str) -> None:
    root = Root(ROOTS / stack)
    plan = resolver_plan(root, STACKS[stack].backend)
    rendered = {f.path: f.content for f in plan.files}
    rendered["/COMMANDS"] = "".join(" ".join(c.argv) + "\n" for c in plan.activate).encode()
    golden_dir = GOLDEN / stack
    if UPDATE_GOLDEN:
        shutil.rmtree(golden_dir, ignore_errors=True)
        for path, content in rendered.items():
            dst = golden_dir / path.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(content)
    expected = {"/" + str(p.relative_to(golden_dir)): p.read_bytes()
                for p in golden_dir.rglob("*") if p.is_file()}
    assert rendered == expected


# --- invariants on what the manager produces --------------------------------------------------

@pytest.mark.parametrize("stack", STACK_IDS)
def test_manager_output_keeps_every_invariant(tmp_path: Path, stack: str) -> None:
    spec = STACKS[stack]
    root = staged(tmp_path, stack)
    apply_resolver(root, spec.backend)
    original = original_effective(stack)
    assert original.search == spec.search
    for when, text in manager_outputs(root, spec).items():
        conf = resolv_conf.parse(text)
        problems = resolv_conf.check_invariants(
            text, original=original, fallback=SETTINGS.resolver.fallback_servers)
        assert problems == [], (when, text)
        assert conf.nameservers[0] == "127.0.0.1", (when, text)
        assert spec.dhcp_server in conf.nameservers[1:], (when, text)
        assert len(conf.nameservers) <= resolv_conf.MAXNS, (when, text)
        assert conf.search == spec.search, (when, text)
        assert "rotate" not in conf.options, (when, text)


def test_al2_rotate_and_long_timeout_are_replaced() -> None:
    plan = resolver_plan(Root(ROOTS / "dhclient-al2"), "dhclient")
    text = next(f.content for f in plan.files if f.path == "/etc/resolv.conf").decode()
    options = resolv_conf.parse(text).options
    assert "rotate" not in options
    assert options == ("timeout:1", "attempts:2")


def test_without_the_truncate_setting_resolvconf_would_drop_the_fallback(tmp_path: Path) -> None:
    """Why /etc/default/resolvconf is edited: the factory default truncates after 127.0.0.1."""
    root = staged(tmp_path, "resolvconf-ubuntu1604")
    apply_resolver(root, "resolvconf")
    root.path(resolvconf.DEFAULTS).write_text("")
    conf = resolv_conf.parse(resolvconf_output(root))
    assert conf.nameservers == ("127.0.0.1",)


def test_resolvconf_caps_at_three_servers_with_many_dhcp_servers(tmp_path: Path) -> None:
    root = staged(tmp_path, "resolvconf-ubuntu1604")
    apply_resolver(root, "resolvconf")
    many = "".join(f"nameserver 169.254.{i}.1\n" for i in range(4))
    conf = resolv_conf.parse(resolvconf_output(root, {"eth0.dhclient": many,
                                                      "lo.named": "nameserver 127.0.0.1\n"}))
    assert conf.nameservers == ("127.0.0.1", "169.254.0.1", "169.254.1.1")


def test_resolvconf_record_sorts_before_ethernet_records() -> None:
    names = ["eth0.dhclient", "ens5.dhclient", resolvconf.RECORD_NAME, "tun0"]
    assert resolvconf.list_records(names, None)[0] == resolvconf.RECORD_NAME
    # The record is named so the factory order never excludes it (pdns is excluded).
    assert resolvconf.list_records(["lo.pdns"], "lo.!(pdns|pdns-recursor)\n") == []


def test_resolvconf_tmpfiles_entry_recreates_the_same_record() -> None:
    plan = resolver_plan(Root(ROOTS / "resolvconf-ubuntu1604"), "resolvconf")
    files = {f.path: f.content.decode() for f in plan.files}
    line = next(x for x in files[resolvconf.TMPFILES].splitlines() if x.startswith("f "))
    fields = line.split(None, 6)
    assert fields[1] == resolvconf.RECORD
    argument = fields[6].encode().decode("unicode_escape")
    assert argument == files[resolvconf.RECORD]


def test_resolvconf_default_file_keeps_the_hosts_lines() -> None:
    plan = resolver_plan(Root(ROOTS / "resolvconf-ubuntu1604"), "resolvconf")
    text = next(f.content for f in plan.files if f.path == resolvconf.DEFAULTS).decode()
    original = (ROOTS / "resolvconf-ubuntu1604/etc/default/resolvconf").read_text()
    assert text.startswith(original)
    assert resolvconf.truncates_after_loopback(original)
    assert not resolvconf.truncates_after_loopback(text)


def test_dhclient_renew_keeps_cache_first_with_a_real_config_policy() -> None:
    conf = managed_block.with_block("supersede domain-name \"ec2.internal\";\n",
                                    [dhclient_mod.PREPEND])
    assert dhclient_mod.name_servers(conf, ["172.31.0.2"]) == ["127.0.0.1", "172.31.0.2"]
    # An older recipe's prepend earlier in the file is overridden by the agent's last one.
    conf2 = "prepend domain-name-servers 169.254.1.1;\n" + conf
    assert dhclient_mod.name_servers(conf2, ["172.31.0.2"])[0] == "127.0.0.1"


@pytest.mark.parametrize("stack", ["dhclient-debian12", "dhclient-al2"])
def test_dhclient_renew_keeps_the_short_timeout_through_the_hook(tmp_path: Path,
                                                                  stack: str) -> None:
    """Without the hook a renew drops `options timeout:1 attempts:2` (Debian writes no options
    line; AL2 rewrites RES_OPTIONS, rotate included) and a dead cache costs glibc 5 s."""
    root = staged(tmp_path, stack)
    plan = apply_resolver(root, "dhclient")
    conf = root.read_text(dhclient_mod.DHCLIENT_CONF) or ""
    lease = replace(RENEW_LEASE, domain_search=" ".join(STACKS[stack].search))
    bare = dhclient_mod.simulate_dhclient_script(conf, lease)
    assert resolv_conf.parse(bare).options == ()
    hooked = dhclient_mod.simulate_dhclient_script(conf, lease, hook_text=installed_hook(root))
    assert resolv_conf.parse(hooked).options == ("timeout:1", "attempts:2")
    assert hooked.startswith(bare)
    # Red Hat's script writes RES_OPTIONS (here the fixture's old rotate line) before the hook.
    redhat = bare + "options timeout:2 attempts:5 rotate edns0\n"
    fixed = dhclient_mod.apply_options_hook(redhat, ("timeout:1", "attempts:2"))
    assert resolv_conf.parse(fixed).options == ("edns0", "timeout:1", "attempts:2")
    assert resolv_conf.check_invariants(fixed) == []
    # The hook is a planned file: rollback removes it (test_rollback_... checks bytes).
    assert [f.path for f in plan.files if "/dhclient" in f.path and f.path.endswith(
        ("dnscache-agent", "dnscache_agent.sh"))] == [
        {"dhclient-debian12": "/etc/dhcp/dhclient-exit-hooks.d/dnscache-agent",
         "dhclient-al2": "/etc/dhcp/dhclient.d/dnscache_agent.sh"}[stack]]



@pytest.mark.parametrize("stack", ["dhclient-debian12", "dhclient-al2"])
def test_a_dhclient_running_since_before_apply_renews_with_the_cache_first(
        tmp_path: Path, stack: str) -> None:
    """dhclient reads dhclient.conf only at start: the one running since boot renews with the
    pre-agent config (no prepend). The hook puts the cache first anyway, exactly once."""
    root = staged(tmp_path, stack)
    old_conf = root.read_text(dhclient_mod.DHCLIENT_CONF) or ""
    apply_resolver(root, "dhclient")
    lease = replace(RENEW_LEASE, domain_search=" ".join(STACKS[stack].search))
    bare = dhclient_mod.simulate_dhclient_script(old_conf, lease)
    assert resolv_conf.parse(bare).nameservers[0] != "127.0.0.1"
    hooked = dhclient_mod.simulate_dhclient_script(old_conf, lease,
                                                   hook_text=installed_hook(root))
    parsed = resolv_conf.parse(hooked)
    assert parsed.nameservers == ("127.0.0.1", *lease.servers)
    assert resolv_conf.check_invariants(hooked) == []
    # A list that has the cache already (the new config's prepend, or a late copy) keeps it
    # once, first.
    late = "nameserver 172.31.0.2\nnameserver 127.0.0.1\n"
    assert resolv_conf.parse(dhclient_mod.apply_options_hook(late, ())).nameservers == (
        "127.0.0.1", "172.31.0.2")
    first = "nameserver 127.0.0.1\nnameserver 172.31.0.2\n"
    assert resolv_conf.parse(dhclient_mod.apply_options_hook(first, ())).nameservers == (
        "127.0.0.1", "172.31.0.2")


def test_dhclient_hook_layout_is_read_from_the_installed_script() -> None:
    debian = (ROOTS / "dhclient-debian12/usr/sbin/dhclient-script").read_text()
    redhat = (ROOTS / "dhclient-al2/usr/sbin/dhclient-script").read_text()
    assert [h.name for h in dhclient_mod.hook_layouts(debian)] == ["debian"]
    assert [h.name for h in dhclient_mod.hook_layouts(redhat)] == ["redhat"]
    # Unknown script: both hooks (each is inert under the other family's script).
    assert [h.name for h in dhclient_mod.hook_layouts(None)] == ["debian", "redhat"]
    assert [h.name for h in dhclient_mod.hook_layouts("#!/bin/sh\n")] == ["debian", "redhat"]
    plan = resolver_plan(Root(ROOTS / "dhclient-al2"), "dhclient")
    hook = next(f for f in plan.files if f.path.endswith("dnscache_agent.sh"))
    # dhclient.d runs only executable files, and calls NAME_config where NAME is the file's stem.
    assert hook.mode == 0o755
    assert "dnscache_agent_config() {" in hook.content.decode()
    assert dhclient_mod.hook_options(hook.content.decode()) == ("timeout:1", "attempts:2")


def test_dhclient_edits_per_interface_config_when_present(tmp_path: Path) -> None:
    root = staged(tmp_path, "dhclient-al2")
    per_iface = root.path("/etc/dhcp/dhclient-eth0.conf")
    per_iface.parent.mkdir(parents=True, exist_ok=True)
    per_iface.write_text("timeout 60;\n")
    paths = [f.path for f in resolver_plan(root, "dhclient").files]
    assert paths == ["/etc/dhcp/dhclient.conf", "/etc/dhcp/dhclient-eth0.conf",
                     "/etc/dhcp/dhclient.d/dnscache_agent.sh", "/etc/resolv.conf"]


def test_resolved_drop_in_resets_and_routes_everything_to_the_cache() -> None:
    plan = resolver_plan(Root(ROOTS / "resolved-al2023"), "systemd-resolved")
    text = next(f.content for f in plan.files if f.path == resolved.DROP_IN).decode()
    lines = [x for x in text.splitlines() if x and not x.startswith("#")]
    assert lines == ["[Resolve]", "DNS=", "DNS=127.0.0.1 172.31.0.2", "Domains=", "Domains=~."]


def test_port_53_split_bind_on_127_0_0_1_resolved_stub_on_127_0_0_53() -> None:
    """bind listens on 127.0.0.1 only and resolved's stub on 127.0.0.53: the backend leaves
    DNSStubListener alone because the two never contend for the same address and port."""
    root = Root(ROOTS / "netplan-ubuntu2204")
    facts = host_facts.gather(root, SETTINGS)
    bind = planner.render_bind_config(facts, SETTINGS).content.decode()
    listen = re.findall(r"listen-on port 53 \{([^}]*)\}", bind)
    assert [x.split() for x in listen] == [["127.0.0.1;"]]
    plan = resolver_plan(root, "netplan")
    everything = b"".join(f.content for f in plan.files).decode()
    assert "DNSStubListener=no" not in everything
    stub = resolv_conf.parse(root.read_text(resolved.STUB) or "").nameservers
    assert stub == ("127.0.0.53",) and "127.0.0.1" not in stub


def test_netplan_override_extends_the_existing_interface_ids() -> None:
    text = (ROOTS / "netplan-ubuntu2204/etc/netplan/50-cloud-init.yaml").read_text()
    assert netplan.ethernet_ids(text) == ["eth0"]
    two = "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n" \
          "    \"ens6\":\n      dhcp4: true\n  bridges:\n    br0: {}\n"
    assert netplan.ethernet_ids(two) == ["eth0", "ens6"]
    plan = resolver_plan(Root(ROOTS / "netplan-ubuntu2204"), "netplan")
    override = next(f for f in plan.files if f.path == netplan.NETPLAN_OVERRIDE)
    assert override.mode == 0o600
    assert '"eth0":' in override.content.decode()
    assert "addresses: [127.0.0.1, 172.31.0.2]" in override.content.decode()
    assert [c.argv[0] for c in plan.activate] == ["netplan", "systemctl"]


def test_networkmanager_stops_writing_resolv_conf() -> None:
    plan = resolver_plan(Root(ROOTS / "networkmanager-rhel9"), "networkmanager")
    drop_in = next(f for f in plan.files if f.path.startswith("/etc/NetworkManager/conf.d/"))
    lines = [x for x in drop_in.content.decode().splitlines() if x and not x.startswith("#")]
    assert lines == ["[main]", "dns=none", "rc-manager=unmanaged"]


def test_stub_only_source_still_gets_a_fallback(tmp_path: Path) -> None:
    """No uplink file (resolved not running yet): the VPC resolver, else bind's forwarder."""
    root = staged(tmp_path, "netplan-ubuntu2204")
    root.path(resolved.UPLINK).unlink()
    for vpc, expected in (("172.31.0.2", "172.31.0.2"), (None, "169.254.169.253")):
        ctx = context(root, vpc_resolver=vpc)
        text = next(f.content for f in resolvers.get("netplan").plan(ctx)
                    if f.path == "/etc/resolv.conf").decode()
        assert resolv_conf.parse(text).nameservers == ("127.0.0.1", expected)


# --- idempotence, rollback, drift ------------------------------------------------------------

@pytest.mark.parametrize("stack", STACK_IDS)
def test_plan_is_idempotent(tmp_path: Path, stack: str) -> None:
    spec = STACKS[stack]
    root = staged(tmp_path, stack)
    first, second = resolver_plan(root, spec.backend), resolver_plan(root, spec.backend)
    assert first == second
    transaction(root).apply(first)
    if spec.backend == "resolvconf":  # what `resolvconf -u` would now write
        root.path("/run/resolvconf/resolv.conf").write_text(resolvconf_output(root))
    after = resolver_plan(root, spec.backend)
    assert after.files == first.files
    assert pending(after, root) == []
    assert transaction(root).apply(after).nothing_to_do


@pytest.mark.parametrize("stack", STACK_IDS)
def test_rollback_restores_every_file_byte_for_byte(tmp_path: Path, stack: str) -> None:
    root = staged(tmp_path, stack)
    before = snapshot(root)
    plan = apply_resolver(root, STACKS[stack].backend)
    assert snapshot(root) != before
    report = transaction(root).rollback(plan.activate)
    assert sorted(report.restored) == sorted(f.path for f in plan.files)
    assert snapshot(root) == before


@pytest.mark.parametrize("stack", STACK_IDS)
def test_verify_reports_drift_with_file_and_line(tmp_path: Path, stack: str) -> None:
    spec = STACKS[stack]
    root = staged(tmp_path, stack)
    plan = apply_resolver(root, spec.backend)
    if spec.backend == "resolvconf":
        root.path("/run/resolvconf/resolv.conf").write_text(resolvconf_output(root))
    facts = host_facts.gather(root, SETTINGS, backend_override=spec.backend)
    assert all(c.ok for c in verify.check_files(plan, root))
    assert verify.check_resolver(facts, SETTINGS, root).ok

    # Someone edits the agent's first file: verify names the file and the line.
    target = plan.files[0]
    lines = root.path(target.path).read_text().splitlines(keepends=True)
    lines[-1] = "# edited by hand\n"
    root.path(target.path).write_text("".join(lines))
    bad = [c for c in verify.check_files(plan, root) if not c.ok]
    assert [(c.path, c.line) for c in bad] == [(target.path, len(lines))]

    # Something puts the VPC resolver back in front: the resolver check points at the line.
    effective = resolvers.get(spec.backend).effective_resolv_conf(facts.view)
    text = root.read_text(effective) or ""
    first_ns = next(i for i, x in enumerate(text.splitlines(), 1) if x.startswith("nameserver"))
    root.path(effective).write_text(text.replace("nameserver 127.0.0.1\n", ""))
    check = verify.check_resolver(facts, SETTINGS, root)
    assert not check.ok and check.path == effective and check.line == first_ns
