"""Drift repair as it runs in production, for every kind of file the plan writes.

Containers boot systemd with SYS_ADMIN, so the shipped units' sandbox is really applied (the
first release's drift test clobbered only resolv.conf, and stayed green while every repair of
bind's config failed inside the repair unit's sandbox). The units are the shipped ones,
unmodified but for the IMDS guard; the settings file sets a 5 s verify interval.

- Each resolver stack the rig can boot: every file and link of the plan, clobbered one at a
  time while the service runs, is repaired within the verify interval (plus the oneshot's
  run time), and `verify` passes again.
- `rollback` with the service active is final: the units are stopped, disabled and removed,
  and nothing comes back.
- The Packer path: an image with the units enabled and no plan applied boots, and then serves
  DNS through the cache.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dnscache_agent import resolv_conf
from rig.containers import SystemdContainer, fake_vpc_resolver_script, install_agent
from tests.system.test_service import sh, wait_for

StartContainer = Callable[..., SystemdContainer]

VPC = "169.254.169.253"
ANSWER = "192.0.2.10"
VERIFY_INTERVAL = 5
#: The oneshot apply (python start, named-checkconf, a reload, two health queries) and the
#: daemon's recheck after a repair.
REPAIR_SLACK = 15
#: dnscache_agent.daemon: ROOT_CHECK_VERIFIES x verify_interval, at least 30 s.
ROOT_CHECK_SECONDS = 35
IMDS = "DNSCACHE_AGENT_IMDS_ENDPOINT=http://127.0.0.1:9"
UNIT = "dnscache-agent.service"
AGENT_TOML = f"[daemon]\nverify_interval = {VERIFY_INTERVAL}\n"
GUARD = f"[Service]\nEnvironment={IMDS}\n"
# The Amazon resolver's stand-in as a boot-time unit, so it is there after a reboot too.
FAKE_VPC_UNIT = f"""[Unit]
Description=fake VPC resolver for the tests
Before=named.service dnscache-agent.service
[Service]
ExecStartPre=-/usr/sbin/ip addr add {VPC}/32 dev lo
ExecStart=/opt/dnscache-agent/venv/bin/python /root/fake_vpc.py
# Type=simple counts as started at fork: hold the units ordered after it (the image's stock
# named binds every address) until python has bound the port.
ExecStartPost=/bin/sleep 2
[Install]
WantedBy=multi-user.target
"""
# The VPC resolver with DNS disabled: its address takes packets and never answers.
SINK = f"""import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{VPC}", 53))
time.sleep(3600)
"""
# Debian's stock named.conf.options, as a package upgrade or cloud-init would put back.
STOCK_OPTIONS = """options {
\tdirectory "/var/cache/bind";
\tdnssec-validation auto;
\tlisten-on-v6 { any; };
};
"""


DHCP = (
    # A DHCP server in a namespace of the container's own, handing out the VPC resolver. An
    # hour's lease (renew at 30 min, as on EC2): no renew rewrites resolv.conf during a test,
    # so what repairs a clobbered file is the repair unit, never a lease (the renew path, the
    # hook included, is tests/integration/test_dhcp_renew.py).
    "ip netns add dhcp; ip link add eth1 type veth peer name eth1p; "
    "ip link set eth1p netns dhcp; ip link set eth1 up; "
    "ip -n dhcp link set lo up; ip -n dhcp link set eth1p up; "
    "ip -n dhcp addr add 169.254.77.1/24 dev eth1p; "
    "systemd-run --unit dhcp-server ip netns exec dhcp dnsmasq --keep-in-foreground "
    "--conf-file=/dev/null --port=0 --user=root --interface=eth1p --bind-interfaces "
    "--dhcp-range=169.254.77.10,169.254.77.20,255.255.255.0,1h "
    f"--dhcp-option=option:dns-server,{VPC} --dhcp-option=option:domain-name,ec2.internal "
    "--dhcp-option=option:router --dhcp-leasefile=/root/dnsmasq.leases; sleep 1; "
    "dhclient -1 -4 -lf /root/dhclient.leases eth1"
)
NETPLAN_SOURCE = f"""network:
  version: 2
  ethernets:
    eth1:
      addresses: [169.254.77.2/24]
      nameservers:
        addresses: [{VPC}]
        search: [ec2.internal]
"""
#: backend → (image, what DHCP / the network manager did before the agent came).
STACKS: dict[str, tuple[str, str]] = {
    "static": ("base",
               f"printf 'nameserver {VPC}\\nsearch ec2.internal\\n' > /etc/resolv.conf"),
    "resolvconf": ("ifupdown-dhclient", DHCP),
    # The classic host without resolvconf: dhclient-script writes resolv.conf itself, and
    # the agent's options hook must keep its timeouts across renews.
    "dhclient": ("ifupdown-dhclient",
                 "dpkg --purge resolvconf >/dev/null 2>&1; rm -f /etc/resolv.conf; "
                 f"printf 'nameserver {VPC}\\n' > /etc/resolv.conf; " + DHCP),
    "systemd-resolved": ("resolved",
                         "ip link add eth1 type veth peer name eth1p; ip link set eth1 up; "
                         "ip link set eth1p up; ip addr add 169.254.77.2/24 dev eth1; "
                         f"resolvectl dns eth1 {VPC}; resolvectl domain eth1 ec2.internal; "
                         "sleep 1"),
    "networkmanager": ("networkmanager",
                       "ip link add eth1 type veth peer name eth1p; ip link set eth1p up; "
                       "nmcli device set eth1 managed yes; "
                       "nmcli connection add type ethernet ifname eth1 con-name vpc "
                       "ipv4.method manual ipv4.addresses 169.254.77.2/24 "
                       f"ipv4.dns {VPC} ipv4.dns-search ec2.internal ipv6.method disabled; "
                       "nmcli connection up vpc; sleep 2"),
    "netplan": ("netplan",
                "mount -o remount,rw /sys; ip link add eth1 type veth peer name eth1p; "
                "ip link set eth1p up; chmod 600 /etc/netplan/50-cloud-init.yaml; "
                "netplan apply; sleep 2"),
}


def write_file(box: SystemdContainer, tmp_path: Path, path: str, text: str) -> None:
    local = tmp_path / (Path(path).name + ".in")
    local.write_text(text)
    sh(box, f"mkdir -p {Path(path).parent}")
    box.copy_in(local, path)


def prepare(box: SystemdContainer, wheelhouse: Path, tmp_path: Path,
            backend: str = "static") -> str:
    """The agent installed, the fake VPC resolver running, the resolver stack as DHCP or its
    manager left it; nothing of the agent applied yet. The backend is chosen in agent.toml
    (where the Ansible role writes it). Returns the agent command."""
    venv = install_agent(box, wheelhouse)
    write_file(box, tmp_path, "/root/fake_vpc.py", fake_vpc_resolver_script(VPC, ANSWER))
    write_file(box, tmp_path, "/etc/systemd/system/fake-vpc-dns.service", FAKE_VPC_UNIT)
    write_file(box, tmp_path, "/etc/dnscache-agent/agent.toml",
               AGENT_TOML + f'[resolver]\nbackend = "{backend}"\n')
    if backend == "netplan":
        write_file(box, tmp_path, "/etc/netplan/50-cloud-init.yaml", NETPLAN_SOURCE)
    for unit in (UNIT, "dnscache-agent-repair.service"):
        write_file(box, tmp_path, f"/etc/systemd/system/{unit}.d/imds-guard.conf", GUARD)
    # The stock named listens on every address (169.254.169.253 included): stop it before
    # the fake resolver binds; the agent's config (loopback only) starts it again.
    sh(box, "systemctl stop named; systemctl daemon-reload; "
            "systemctl enable --now fake-vpc-dns; sleep 1; systemctl is-active fake-vpc-dns")
    sh(box, STACKS[backend][1], timeout=120)
    return f"{venv}/bin/dnscache-agent"


def verify_report(box: SystemdContainer, cmd: str) -> dict[str, object]:
    out = box.exec(["env", IMDS, cmd, "verify", "--json"], check=False, timeout=120)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def failing(report: dict[str, object]) -> list[str]:
    checks = report["checks"]
    assert isinstance(checks, list)
    return [f"{c['name']}: {c['detail']}" for c in checks if not c["ok"]]


def owned_paths(report: dict[str, object]) -> list[tuple[str, str]]:
    """(kind, path) of every file and link the plan owns, from verify's checks."""
    checks = report["checks"]
    assert isinstance(checks, list)
    out = []
    for c in checks:
        kind = str(c["name"]).split(" ", 1)[0]
        if kind in ("file", "link") and c["path"]:
            out.append((kind, str(c["path"])))
    return sorted(set(out))


def service_ready(box: SystemdContainer) -> bool:
    out = sh(box, f"systemctl show {UNIT} -p ActiveState -p StatusText", check=False)
    return "ActiveState=active" in out and "config ok" in out


def clobber(box: SystemdContainer, kind: str, path: str) -> None:
    if kind == "link":
        sh(box, f"rm -f {path}")
    elif path.endswith("named.conf.options") or path.endswith("/named.conf"):
        sh(box, f"cat > {path} <<'EOF'\n{STOCK_OPTIONS}EOF")
    elif path.endswith("resolv.conf"):
        sh(box, f"rm -f {path}; printf 'nameserver {VPC}\\nsearch ec2.internal\\n' > {path}")
    else:
        # Replaced by rename, as a package upgrade or an editor does.
        sh(box, f"printf '# replaced by the test\\n' > {path}.new && mv {path}.new {path}")


def wired(box: SystemdContainer) -> bool:
    conf = resolv_conf.parse(sh(box, "cat /etc/resolv.conf", check=False))
    return bool(conf.nameservers) and conf.nameservers[0] == "127.0.0.1"


@pytest.mark.parametrize("backend", list(STACKS))
def test_every_planned_file_is_repaired_under_the_shipped_units(
    systemd_container: StartContainer, agent_wheelhouse: Path, tmp_path: Path, backend: str
) -> None:
    image = STACKS[backend][0]
    box = systemd_container(image)
    cmd = prepare(box, agent_wheelhouse, tmp_path, backend)
    out = box.exec(["env", IMDS, cmd, "apply"], check=False, timeout=180)
    assert out.returncode == 0 and "healthy" in out.stdout, out.stdout + out.stderr
    out = box.exec(["env", IMDS, cmd, "install-service"], check=False, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for("service READY, config ok", lambda: service_ready(box), 60)
    report = verify_report(box, cmd)
    assert report["ok"], failing(report)
    owned = owned_paths(report)
    kinds = {p for _, p in owned}
    assert "/etc/bind/named.conf.options" in kinds and f"/etc/systemd/system/{UNIT}" in kinds
    assert any(k == "link" for k, _ in owned), owned
    took: dict[str, float] = {}
    for kind, path in owned:
        before = sh(box, f"cat {path} 2>/dev/null || readlink {path} || true")
        since = sh(box, "date '+%Y-%m-%d %H:%M:%S'").strip()
        time.sleep(1.0)  # journal timestamps have 1 s resolution
        clobber(box, kind, path)
        def repaired(path: str = path, since: str = since) -> bool:
            return not failing(verify_report(box, cmd)) and path in sh(
                box, "journalctl -q --no-pager -o cat -u dnscache-agent-repair.service "
                     f"--since '{since}'", check=False)

        # What the daemon's user cannot read (netplan's 0600 files) the privileged repair
        # checks every few verify intervals instead.
        slow = backend == "netplan" and not path.startswith(
            ("/etc/bind/", "/etc/systemd/system/", "/etc/dnscache-agent/", "/etc/sysusers.d/"))
        limit = VERIFY_INTERVAL + REPAIR_SLACK + (ROOT_CHECK_SECONDS if slow else 0)
        try:
            took[path] = wait_for(f"{path} repaired", repaired, limit, interval=1.0)
        except AssertionError as exc:
            logs = sh(box, "journalctl -q --no-pager -o cat -u dnscache-agent "
                           f"-u dnscache-agent-repair --since '{since}' | tail -40", check=False)
            raise AssertionError(f"{exc}\n{failing(verify_report(box, cmd))}\n{logs}") from None
        after = sh(box, f"cat {path} 2>/dev/null || readlink {path} || true")
        if path not in ("/etc/resolv.conf",):  # a manager may lay it out its own way
            assert after == before, path
        assert wired(box), (path, sh(box, "cat /etc/resolv.conf", check=False))
    failed = sh(box, "systemctl --failed --no-legend", check=False)
    assert "dnscache-agent" not in failed, failed
    repair_log = sh(box, "journalctl -q --no-pager -o cat -u dnscache-agent-repair.service",
                    check=False)
    assert "Traceback" not in repair_log and "Operation not permitted" not in repair_log, \
        repair_log[-3000:]
    print(f"{backend}: repaired in seconds: " + ", ".join(f"{p} {t:.1f}" for p, t in took.items()))


def test_rollback_with_the_service_running_is_final(
    systemd_container: StartContainer, agent_wheelhouse: Path, tmp_path: Path
) -> None:
    box = systemd_container("base")
    cmd = prepare(box, agent_wheelhouse, tmp_path)
    before = sh(box, "cat /etc/resolv.conf; cat /etc/bind/named.conf.options")
    units_before = sh(box, "ls /etc/systemd/system /etc/systemd/system/*.wants")
    box.exec(["env", IMDS, cmd, "apply"], timeout=180)
    box.exec(["env", IMDS, cmd, "install-service"], timeout=180)
    wait_for("service READY", lambda: service_ready(box), 60)
    out = box.exec(["env", IMDS, cmd, "rollback"], check=False, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"stopped and disabled {UNIT}" in out.stdout, out.stdout
    assert "rolled back to the pre-agent state" in out.stdout
    # Nothing comes back: wait well past several verify intervals.
    time.sleep(3 * VERIFY_INTERVAL)
    assert sh(box, "cat /etc/resolv.conf; cat /etc/bind/named.conf.options") == before
    assert sh(box, "ls /etc/systemd/system /etc/systemd/system/*.wants") == units_before
    states = sh(box, f"systemctl is-active {UNIT} dnscache-agent-repair.path "
                     "dnscache-agent-repair.service || true")
    assert set(states.split()) == {"inactive"}, states
    assert sh(box, "ls /var/lib/dnscache-agent 2>/dev/null || true").strip() == ""
    assert ANSWER in sh(box, "getent hosts after-rollback.example.test")


def test_packer_image_serves_dns_through_the_cache_after_first_boot(
    systemd_container: StartContainer, agent_wheelhouse: Path, tmp_path: Path
) -> None:
    """packaging/packer/install-dnscache-agent.sh's flow: the units are installed and enabled
    on the builder, no plan is applied; the first boot's repair applies it."""
    box = systemd_container("base")
    cmd = prepare(box, agent_wheelhouse, tmp_path)
    out = box.exec(["env", IMDS, cmd, "install-service", "--no-start"], check=False,
                   timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "enabled and started" not in out.stdout
    assert not wired(box)
    state = box.reboot()
    assert state in ("running", "degraded")
    try:
        wait_for("first boot: service READY with the plan applied", lambda: service_ready(box)
                 and wired(box), 90, interval=1.0)
    except AssertionError as exc:
        logs = sh(box, "systemctl --no-pager status dnscache-agent dnscache-agent-pacer named "
                       "| tail -40; journalctl -q --no-pager -o cat -u dnscache-agent "
                       "-u dnscache-agent-repair -u dnscache-agent-pacer | tail -60", check=False)
        raise AssertionError(f"{exc}\n{logs}") from None
    assert ANSWER in sh(box, "dig +short @127.0.0.1 first-boot.example.test")
    assert ANSWER in sh(box, "getent hosts first-boot2.example.test")
    report = verify_report(box, cmd)
    assert report["ok"], failing(report)
    repair_log = sh(box, "journalctl -q --no-pager -o cat -u dnscache-agent-repair.service",
                    check=False)
    assert re.search(r"wrote /etc/bind/named.conf.options", repair_log), repair_log[-3000:]


def test_a_dark_vpc_resolver_neither_blocks_boot_nor_loops(
    systemd_container: StartContainer, agent_wheelhouse: Path, tmp_path: Path
) -> None:
    """DNS disabled in the VPC (nothing answers at 169.254.169.253, packets vanish): apply
    keeps the cache in place, the service reaches READY at once and says the upstream is
    unreachable, is not restarted, and lookups work as soon as the resolver answers again."""
    box = systemd_container("base")
    cmd = prepare(box, agent_wheelhouse, tmp_path)
    # Packets vanish (a socket that never answers), not refused: the worst case, where
    # named waits out every fetch, as when DNS is disabled in the VPC.
    write_file(box, tmp_path, "/root/sink.py", SINK)
    sh(box, "systemctl stop fake-vpc-dns; systemd-run --unit vpc-sink "
            "/opt/dnscache-agent/venv/bin/python /root/sink.py; sleep 1")
    out = box.exec(["env", IMDS, cmd, "apply"], check=False, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "upstream unreachable" in out.stdout, out.stdout
    assert wired(box)
    out = box.exec(["env", IMDS, cmd, "install-service"], check=False, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    took = wait_for("READY with a dark upstream", lambda: "ActiveState=active" in sh(
        box, f"systemctl show {UNIT} -p ActiveState", check=False), 30)
    status = sh(box, f"systemctl show {UNIT} -p StatusText -p NRestarts")
    assert "upstream resolver unreachable" in status, status
    assert sh(box, "systemctl is-active nss-lookup.target", check=False).strip() == "active"
    time.sleep(3 * VERIFY_INTERVAL)
    status = sh(box, f"systemctl show {UNIT} -p NRestarts -p ActiveState")
    assert "NRestarts=0" in status and "ActiveState=active" in status, status
    # The resolver comes back: lookups through the cache work, and the status says so.
    sh(box, "systemctl stop vpc-sink; systemctl start fake-vpc-dns")
    wait_for("lookups through the cache", lambda: ANSWER in sh(
        box, "getent hosts back.example.test", check=False), 30)
    wait_for("status ok again", lambda: "config ok" in sh(
        box, f"systemctl show {UNIT} -p StatusText", check=False)
        and "unreachable" not in sh(box, f"systemctl show {UNIT} -p StatusText", check=False),
        3 * VERIFY_INTERVAL + 10)
    print(f"READY after {took:.1f}s with the resolver dark")
