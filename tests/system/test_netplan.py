"""netplan (with systemd-networkd and systemd-resolved) for real, in a container booting systemd:
detection, apply, then `netplan apply` (what the override must survive), then rollback.

The link is a veth pair inside the container's own network namespace (this kernel has no dummy
link type); the "VPC resolver" 169.254.169.253 is the fake responder on the container loopback
that test_resolver_managers.py uses. No packet leaves the container.

`netplan apply` needs a writable /sys: it runs `udevadm trigger --attr-match=subsystem=net`,
which writes "change" to each link's uevent file, and podman mounts sysfs read-only. The test
remounts the container's own sysfs read-write; that sysfs was mounted in the container's network
namespace, so it lists (and the trigger touches) only the container's links: lo, eth1, eth1p.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dnscache_agent import resolv_conf
from rig.containers import SystemdContainer
from tests.system.test_resolver_managers import (
    ANSWER,
    VPC,
    agent,
    assert_resolves_through_cache,
    assert_wired,
    prepare,
    sh,
    snapshot,
)

StartContainer = Callable[..., SystemdContainer]

SOURCE = "/etc/netplan/50-cloud-init.yaml"
OVERRIDE = "/etc/netplan/99-dnscache-agent.yaml"
GENERATED = "/run/systemd/network/10-netplan-eth1.network"
SOURCE_YAML = f"""\
network:
  version: 2
  ethernets:
    eth1:
      addresses: [169.254.77.2/24]
      nameservers:
        addresses: [{VPC}]
        search: [ec2.internal]
"""


def netplan_apply(box: SystemdContainer) -> None:
    """`netplan apply`, then wait until resolved has eth1's servers from networkd again."""
    out = box.exec(["netplan", "apply"], check=False, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    sh(box, "for i in $(seq 1 40); do resolvectl dns eth1 | grep -q '[0-9]' && exit 0; "
            "sleep 0.25; done; exit 1", timeout=30)


def link_servers(box: SystemdContainer) -> list[str]:
    """eth1's DNS servers as resolved has them (from networkd, from netplan's file)."""
    return sh(box, "resolvectl dns eth1").split(":", 1)[1].split()


def global_servers(box: SystemdContainer) -> list[str]:
    """resolved's global servers (without a tty, resolvectl prints `DNS Servers a b` with no
    colon). While /etc/resolv.conf is the agent's file ("foreign" mode), resolved also imports
    its servers, so the list can repeat."""
    status = sh(box, "resolvectl status --no-pager").split("Link")[0]
    line = next((x for x in status.splitlines() if "DNS Servers" in x), "")
    return line.split("DNS Servers", 1)[1].lstrip(":").split() if line else []


def test_netplan_override_survives_netplan_apply(
    systemd_container: StartContainer, agent_wheelhouse: Path, tmp_path: Path
) -> None:
    box = systemd_container("netplan")
    cmd = prepare(box, agent_wheelhouse, tmp_path)
    sh(box, "mount -o remount,rw /sys; ip link add eth1 type veth peer name eth1p; "
            "ip link set eth1p up")
    source = tmp_path / "50-cloud-init.yaml"
    source.write_text(SOURCE_YAML)
    box.copy_in(source, SOURCE)
    sh(box, f"chown root:root {SOURCE}; chmod 600 {SOURCE}")
    netplan_apply(box)
    assert link_servers(box) == [VPC]
    link = sh(box, "readlink /etc/resolv.conf").strip()
    assert link.endswith("stub-resolv.conf"), link
    paths = ["/etc/resolv.conf", "/etc/systemd/resolved.conf.d/dnscache-agent.conf", SOURCE,
             OVERRIDE, GENERATED]
    before = snapshot(box, paths)

    # Auto-detection picks netplan (ahead of systemd-resolved, which also detects itself).
    facts = agent(box, cmd, "facts")
    assert "resolver:  netplan:" in facts, facts
    agent(box, cmd, "apply", "--resolver-backend", "netplan")
    assert sh(box, f"stat -c %a {OVERRIDE}").strip() == "600"
    assert_wired(sh(box, "cat /etc/resolv.conf"), search=("ec2.internal",))
    assert_resolves_through_cache(box)
    # Activation ran `netplan generate` only: the file networkd reads names the cache, but
    # the running link keeps its servers until networkd reloads (no link was bounced).
    generated = sh(box, f"cat {GENERATED}")
    assert "DNS=127.0.0.1" in generated, generated

    # The thing the override must survive: netplan regenerates and networkd reconfigures.
    netplan_apply(box)
    assert_wired(sh(box, "cat /etc/resolv.conf"), search=("ec2.internal",))
    assert global_servers(box)[:2] == ["127.0.0.1", VPC], sh(box, "resolvectl status")
    uplink = resolv_conf.parse(sh(box, "cat /run/systemd/resolve/resolv.conf"))
    assert uplink.nameservers[:2] == ("127.0.0.1", VPC), uplink
    # netplan concatenates sequences across files: the source's static server stays ahead of
    # the override's on this link (with DHCP-only sources, the EC2 case, 127.0.0.1 is first).
    # The global `DNS=127.0.0.1 …` with `Domains=~.` is what routes resolved's lookups.
    assert link_servers(box) == [VPC, "127.0.0.1"]
    assert ANSWER in sh(box, "dig +short @127.0.0.53 after-apply.example.test A")
    assert ANSWER in sh(box, "dig +short +norecurse @127.0.0.1 after-apply.example.test A")
    assert_resolves_through_cache(box)
    assert "ok   resolver wiring" in agent(box, cmd, "verify", check=False)

    agent(box, cmd, "rollback")
    assert snapshot(box, paths) == before
    netplan_apply(box)
    assert link_servers(box) == [VPC]
    assert "127.0.0.1" not in global_servers(box)
