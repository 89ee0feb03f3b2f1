"""Real resolver managers inside containers booting systemd: apply with the matching backend,
resolve through the system resolver path, regenerate the manager's output, roll back.

Inside each container (its own network namespace, no outside network) the "VPC resolver"
169.254.169.253 is an address on the container's loopback answered by a small dnspython
responder, so bind has an upstream and the agent's health check passes. No packet leaves the
container. The DHCP round trip for resolvconf uses a namespace of the container's own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dnscache_agent import resolv_conf
from rig.containers import SystemdContainer, fake_vpc_resolver_script, install_agent

StartContainer = Callable[..., SystemdContainer]

VPC = "169.254.169.253"
ANSWER = "192.0.2.10"
ENV = ["env", "DNSCACHE_AGENT_IMDS_ENDPOINT=http://127.0.0.1:9"]

FAKE_VPC = fake_vpc_resolver_script(VPC, ANSWER)


def sh(box: SystemdContainer, script: str, *, check: bool = True, timeout: float = 60) -> str:
    return box.exec(["sh", "-ec", script], check=check, timeout=timeout).stdout


def prepare(box: SystemdContainer, wheelhouse: Path, tmp_path: Path) -> str:
    """Install the agent, start the fake VPC resolver; returns the agent's command path."""
    venv = install_agent(box, wheelhouse)
    script = tmp_path / "fake_vpc.py"
    script.write_text(FAKE_VPC)
    box.copy_in(script, "/root/fake_vpc.py")
    # The image's stock named listens on every address, 169.254.169.253 included; the agent's
    # config (listen-on 127.0.0.1 only) starts it again at apply.
    sh(box, f"systemctl stop named; ip addr add {VPC}/32 dev lo; "
            f"systemd-run --unit fake-vpc-dns {venv}/bin/python /root/fake_vpc.py; sleep 1; "
            "systemctl is-active fake-vpc-dns")
    return f"{venv}/bin/dnscache-agent"


def agent(box: SystemdContainer, cmd: str, *args: str, check: bool = True) -> str:
    out = box.exec([*ENV, cmd, *args], check=check, timeout=180)
    return out.stdout + out.stderr


def snapshot(box: SystemdContainer, paths: list[str]) -> dict[str, str]:
    """Each path as `ls`-style kind + content (symlink target or sha256)."""
    out = {}
    for p in paths:
        out[p] = sh(box, f"if [ -L {p} ]; then echo link $(readlink {p}); "
                         f"elif [ -e {p} ]; then echo file $(sha256sum < {p}); "
                         f"else echo absent; fi").strip()
    return out


def assert_wired(text: str, fallback: str = VPC, search: tuple[str, ...] = ()) -> None:
    conf = resolv_conf.parse(text)
    assert conf.nameservers[0] == "127.0.0.1", text
    assert fallback in conf.nameservers[1:3], text
    assert len(conf.nameservers) <= 3 and "rotate" not in conf.options, text
    if search:
        assert conf.search == search, text
    assert resolv_conf.check_invariants(text) == [], text


def assert_resolves_through_cache(box: SystemdContainer) -> None:
    hosts = sh(box, "getent hosts www.example.test")
    assert ANSWER in hosts
    # The cache answered it: bind now holds the name (dig +norecurse gets it from cache).
    dig = sh(box, "dig +short +norecurse @127.0.0.1 www.example.test A")
    assert ANSWER in dig


def test_resolvconf_with_real_dhclient_renew(
    systemd_container: StartContainer, agent_wheelhouse: Path, tmp_path: Path
) -> None:
    box = systemd_container("ifupdown-dhclient")
    cmd = prepare(box, agent_wheelhouse, tmp_path)
    # A DHCP server in a namespace of the container's own, handing out the VPC resolver.
    sh(box, "ip netns add dhcp; ip link add eth1 type veth peer name eth1p; "
            "ip link set eth1p netns dhcp; ip link set eth1 up; "
            "ip -n dhcp link set lo up; ip -n dhcp link set eth1p up; "
            "ip -n dhcp addr add 169.254.77.1/24 dev eth1p; "
            "systemd-run --unit dhcp-server ip netns exec dhcp dnsmasq --keep-in-foreground "
            "--conf-file=/dev/null --port=0 --user=root --interface=eth1p --bind-interfaces "
            "--dhcp-range=169.254.77.10,169.254.77.20,255.255.255.0,2m "
            f"--dhcp-option=option:dns-server,{VPC} --dhcp-option=option:domain-name,ec2.internal "
            "--dhcp-option=option:router --dhcp-option=option:T1,6 --dhcp-option=option:T2,100 "
            "--dhcp-leasefile=/root/dnsmasq.leases; sleep 1")
    sh(box, "dhclient -1 -4 -v -lf /root/dhclient.leases eth1", timeout=90)
    records = sh(box, "cd /run/resolvconf/interface && grep -H . * /etc/resolvconf/resolv.conf.d/*",
                 check=False)
    assert sh(box, "readlink /etc/resolv.conf").strip().endswith("/run/resolvconf/resolv.conf")
    before_text = sh(box, "cat /etc/resolv.conf")
    before_servers = resolv_conf.parse(before_text).nameservers
    assert VPC in before_servers and "127.0.0.1" not in before_servers, (before_text, records)
    paths = ["/etc/resolv.conf", "/etc/default/resolvconf", "/etc/resolvconf/resolv.conf.d/base",
             "/etc/tmpfiles.d/dnscache-agent-resolvconf.conf",
             "/run/resolvconf/interface/lo.dnscache", "/etc/dhcp/dhclient.conf"]
    before = snapshot(box, paths)

    facts = agent(box, cmd, "facts")
    assert "resolver:  resolvconf:" in facts
    agent(box, cmd, "apply", "--resolver-backend", "resolvconf")
    assert_wired(sh(box, "cat /etc/resolv.conf"), search=("ec2.internal",))
    assert_resolves_through_cache(box)

    # A DHCP renew by the running dhclient (T1 = 6 s) rewrites eth1.dhclient and reruns libc.
    leases = sh(box, "grep -c 'lease {' /root/dhclient.leases").strip()
    sh(box, f"for i in $(seq 1 80); do n=$(grep -c 'lease {{' /root/dhclient.leases);"
            f" [ $n -gt {leases} ] && exit 0; sleep 0.5; done; exit 1", timeout=60)
    sh(box, "sleep 1; resolvconf -u")
    assert_wired(sh(box, "cat /etc/resolv.conf"), search=("ec2.internal",))
    assert "ok   resolver wiring" in agent(box, cmd, "verify", check=False)

    # A reboot empties /run: the tmpfiles entry puts the record back.
    sh(box, "rm /run/resolvconf/interface/lo.dnscache; resolvconf -u; "
            "systemd-tmpfiles --create /etc/tmpfiles.d/dnscache-agent-resolvconf.conf; "
            "resolvconf -u")
    assert_wired(sh(box, "cat /etc/resolv.conf"))

    agent(box, cmd, "rollback")
    assert snapshot(box, paths) == before
    assert resolv_conf.parse(sh(box, "cat /etc/resolv.conf")).nameservers == before_servers


def test_systemd_resolved(
    systemd_container: StartContainer, agent_wheelhouse: Path, tmp_path: Path
) -> None:
    box = systemd_container("resolved")
    cmd = prepare(box, agent_wheelhouse, tmp_path)
    # What networkd/DHCP would tell resolved about eth1: the VPC resolver and search domain.
    sh(box, "ip link add eth1 type veth peer name eth1p; ip link set eth1 up; "
            "ip link set eth1p up; ip addr add 169.254.77.2/24 dev eth1; "
            f"resolvectl dns eth1 {VPC}; resolvectl domain eth1 ec2.internal; sleep 1")
    link = sh(box, "readlink /etc/resolv.conf").strip()
    assert link.endswith("stub-resolv.conf"), link
    paths = ["/etc/resolv.conf", "/etc/systemd/resolved.conf.d/dnscache-agent.conf"]
    before = snapshot(box, paths)

    assert "resolver:  systemd-resolved:" in agent(box, cmd, "facts")
    agent(box, cmd, "apply", "--resolver-backend", "systemd-resolved")
    assert_wired(sh(box, "cat /etc/resolv.conf"), search=("ec2.internal",))
    assert_resolves_through_cache(box)
    status = sh(box, "resolvectl status --no-pager")
    assert "127.0.0.1" in status.split("Link")[0], status
    # resolved's own path (stub on 127.0.0.53) also reaches the cache, and both listen on :53.
    assert ANSWER in sh(box, "dig +short @127.0.0.53 stub.example.test A")
    assert ANSWER in sh(box, "dig +short +norecurse @127.0.0.1 stub.example.test A")

    sh(box, "systemctl restart systemd-resolved; sleep 1")
    assert_wired(sh(box, "cat /etc/resolv.conf"), search=("ec2.internal",))
    uplink = sh(box, "cat /run/systemd/resolve/resolv.conf")
    assert resolv_conf.parse(uplink).nameservers[0] == "127.0.0.1", uplink

    agent(box, cmd, "rollback")
    assert snapshot(box, paths) == before


def test_networkmanager(
    systemd_container: StartContainer, agent_wheelhouse: Path, tmp_path: Path
) -> None:
    box = systemd_container("networkmanager")
    cmd = prepare(box, agent_wheelhouse, tmp_path)
    sh(box, "ip link add eth1 type veth peer name eth1p; ip link set eth1p up; "
            "nmcli device set eth1 managed yes; "
            "nmcli connection add type ethernet ifname eth1 con-name vpc "
            "ipv4.method manual ipv4.addresses 169.254.77.2/24 "
            f"ipv4.dns {VPC} ipv4.dns-search ec2.internal ipv6.method disabled; "
            "nmcli connection up vpc; sleep 2", timeout=90)
    original = sh(box, "cat /etc/resolv.conf")
    assert "Generated by NetworkManager" in original and VPC in original, original
    paths = ["/etc/resolv.conf", "/etc/NetworkManager/conf.d/dnscache-agent.conf"]
    before = snapshot(box, paths)

    assert "resolver:  networkmanager:" in agent(box, cmd, "facts")
    agent(box, cmd, "apply", "--resolver-backend", "networkmanager")
    assert_wired(sh(box, "cat /etc/resolv.conf"), search=("ec2.internal",))
    assert_resolves_through_cache(box)

    sh(box, "nmcli general reload; nmcli connection up vpc; sleep 2", timeout=90)
    assert_wired(sh(box, "cat /etc/resolv.conf"), search=("ec2.internal",))

    agent(box, cmd, "rollback")
    sh(box, "sleep 2")
    assert snapshot(box, paths) == before


