"""The agent as a systemd service, in a container booting systemd (SYS_ADMIN, so hardening is
really applied): install the wheel, `apply`, `install-service`; then READY, hardening, drift
repair of a clobbered resolv.conf, a killed named, a hung main loop and `systemctl stop`.

The "VPC resolver": the container has no network (--network=none), so 169.254.169.253 is an
address on its own loopback answered by a small dnspython responder. That keeps the agent's
defaults (forwarder and resolv.conf fallback both 169.254.169.253, as on EC2) instead of a
test-only forwarder, and no packet leaves the container's namespace. IMDS points at a closed
loopback port.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from dnscache_agent import resolv_conf
from rig.containers import SystemdContainer, fake_vpc_resolver_script, install_agent

StartContainer = Callable[..., SystemdContainer]

VPC = "169.254.169.253"
ANSWER = "192.0.2.10"
VERIFY_INTERVAL = 10
WATCHDOG_SEC = 6
IMDS = "DNSCACHE_AGENT_IMDS_ENDPOINT=http://127.0.0.1:9"
UNIT = "dnscache-agent.service"

FAKE_VPC = fake_vpc_resolver_script(VPC, ANSWER)

AGENT_TOML = f"""
[daemon]
verify_interval = {VERIFY_INTERVAL}
"""

# Test-only: the IMDS guard, and a short watchdog so the hang test takes seconds, not a
# minute. Everything else is the shipped unit.
DROP_IN = f"""[Service]
Environment={IMDS}
WatchdogSec={WATCHDOG_SEC}s
"""
REPAIR_DROP_IN = f"""[Service]
Environment={IMDS}
"""
# Widen named's restart gap, so the test can see lookups answered while it is down.
NAMED_DROP_IN = """[Service]
RestartSec=5s
"""


def sh(box: SystemdContainer, script: str, *, check: bool = True, timeout: float = 60) -> str:
    return box.exec(["sh", "-ec", script], check=check, timeout=timeout).stdout


def show(box: SystemdContainer, unit: str, *props: str) -> dict[str, str]:
    out = sh(box, f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_for(what: str, predicate: Callable[[], bool], timeout: float,
             interval: float = 0.5) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def journal(box: SystemdContainer, unit: str, since: str = "") -> str:
    since_arg = f"--since '{since}'" if since else ""
    return sh(box, f"journalctl -q --no-pager -o cat -u {unit} {since_arg}", check=False)


def wired(box: SystemdContainer) -> bool:
    conf = resolv_conf.parse(sh(box, "cat /etc/resolv.conf"))
    return bool(conf.nameservers) and conf.nameservers[0] == "127.0.0.1" and \
        VPC in conf.nameservers[1:]


def ready(box: SystemdContainer) -> bool:
    state = show(box, UNIT, "ActiveState", "SubState", "StatusText")
    return state["ActiveState"] == "active" and "headroom" in state.get("StatusText", "")


def write_file(box: SystemdContainer, tmp_path: Path, path: str, text: str) -> None:
    local = tmp_path / Path(path).name
    local.write_text(text)
    sh(box, f"mkdir -p {Path(path).parent}")
    box.copy_in(local, path)


def start_service(box: SystemdContainer, wheelhouse: Path, tmp_path: Path) -> str:
    venv = install_agent(box, wheelhouse)
    cmd = f"{venv}/bin/dnscache-agent"
    write_file(box, tmp_path, "/root/fake_vpc.py", FAKE_VPC)
    # The image's stock named listens on every address, 169.254.169.253 included; the
    # agent's config (listen-on 127.0.0.1 only) starts it again at apply.
    sh(box, f"systemctl stop named; ip addr add {VPC}/32 dev lo; "
            f"systemd-run --unit fake-vpc-dns {venv}/bin/python /root/fake_vpc.py; sleep 1; "
            "systemctl is-active fake-vpc-dns; "
            # What DHCP gave the instance before the agent: the VPC resolver only.
            f"printf 'nameserver {VPC}\\nsearch ec2.internal\\n' > /etc/resolv.conf")
    write_file(box, tmp_path, "/etc/dnscache-agent/agent.toml", AGENT_TOML)
    write_file(box, tmp_path, f"/etc/systemd/system/{UNIT}.d/test.conf", DROP_IN)
    write_file(box, tmp_path, "/etc/systemd/system/dnscache-agent-repair.service.d/test.conf",
               REPAIR_DROP_IN)
    write_file(box, tmp_path, "/etc/systemd/system/named.service.d/test.conf", NAMED_DROP_IN)
    out = box.exec(["env", IMDS, cmd, "apply"], timeout=180)
    assert "healthy" in out.stdout, out.stdout + out.stderr
    assert wired(box)
    out = box.exec(["env", IMDS, cmd, "install-service"], timeout=180)
    assert f"changed /etc/systemd/system/{UNIT}" in out.stdout, out.stdout + out.stderr
    assert re.search(rf"^enabled and started .*{UNIT}", out.stdout, re.M), out.stdout
    unit = box.read_file(f"/etc/systemd/system/{UNIT}")
    assert f"ExecStart={cmd} run --repair-trigger" in unit
    return cmd


def test_service_lifecycle(
    systemd_container: StartContainer, agent_wheelhouse: Path, tmp_path: Path
) -> None:
    box = systemd_container("base")
    start_service(box, agent_wheelhouse, tmp_path)

    # READY=1 (ActiveState leaves "activating" only then) and STATUS= with the headroom.
    wait_for("service READY with a headroom status", lambda: ready(box), 60)
    status = show(box, UNIT, "StatusText", "Type", "WatchdogUSec", "NRestarts")
    assert re.search(r"lo headroom \d+% \(\d+ of 1024 pkt/s\); config ok",
                     status["StatusText"]), status
    assert status["WatchdogUSec"] == f"{WATCHDOG_SEC}s"
    assert status["NRestarts"] == "0"
    assert "nss-lookup.target" in show(box, UNIT, "Before")["Before"]
    logs = journal(box, UNIT)
    assert re.search(r"^INFO dnscache_agent.daemon: ready: \S*amazonaws.com A @127.0.0.1: "
                     "NOERROR", logs, re.M), logs
    # Journal-friendly: no timestamps of our own (the journal adds them).
    assert not re.search(r"^\d{4}-\d\d-\d\d", logs, re.M), logs

    # Hardening is enforced, not just written down: the main process has no capabilities,
    # cannot gain any, and its mount namespace has /etc, /var and /usr read-only.
    pid = show(box, UNIT, "MainPID")["MainPID"]
    proc_status = sh(box, f"cat /proc/{pid}/status")
    assert re.search(r"^CapEff:\s+0+$", proc_status, re.M), proc_status
    assert re.search(r"^NoNewPrivs:\s+1$", proc_status, re.M), proc_status
    for path in ("/etc/dnscache-hardening-probe", "/var/lib/dnscache-agent/probe",
                 "/usr/local/probe"):
        # (--privileged: the daemon runs as its own user, so entering its namespace takes
        # CAP_SYS_PTRACE, which podman exec leaves out by default.)
        probe = box.exec(["nsenter", "-t", pid, "-m", "sh", "-c", f"echo x > {path}"],
                         check=False, privileged=True)
        assert probe.returncode != 0 and "Read-only file system" in probe.stderr, (path, probe)
    assert box.exec(["nsenter", "-t", pid, "-m", "sh", "-c",
                     "echo x > /run/dnscache-agent/probe && rm /run/dnscache-agent/probe"],
                    check=False, privileged=True).returncode == 0
    assert sh(box, "ls /etc/dnscache-hardening-probe 2>&1 || true").strip().endswith(
        "No such file or directory")

    # A DHCP renew clobbers resolv.conf: repaired within the verify interval (plus the
    # oneshot apply's own run time), with the drifted file and line in the journal.
    since = sh(box, "date '+%Y-%m-%d %H:%M:%S'").strip()
    sh(box, f"printf 'nameserver {VPC}\\nsearch ec2.internal\\n' > /etc/resolv.conf.new; "
            "mv /etc/resolv.conf.new /etc/resolv.conf")
    assert not wired(box)
    took = wait_for("resolv.conf repaired", lambda: wired(box), VERIFY_INTERVAL + 15)
    assert took <= VERIFY_INTERVAL + 10, took
    logs = journal(box, UNIT, since)
    assert re.search(r"drift: /etc/resolv.conf:1: drift: line 1 is 'nameserver "
                     + re.escape(VPC), logs), logs
    assert "repair: asked the repair unit through /run/dnscache-agent/repair-request" in logs
    repair_log = journal(box, "dnscache-agent-repair.service", since)
    assert "wrote /etc/resolv.conf" in repair_log, repair_log
    wait_for("repair confirmed", lambda: "host matches the plan again" in journal(
        box, UNIT, since), VERIFY_INTERVAL + 5)

    # named is killed: while it is down, lookups are answered through the fallback
    # resolver in resolv.conf; then named is back (systemd's Restart=, or the agent).
    named_pid = show(box, "named", "MainPID")["MainPID"]
    sh(box, f"kill -9 {named_pid}")
    down = box.exec(["dig", "+time=1", "+tries=1", "@127.0.0.1", "down.example.test"],
                    check=False)
    assert down.returncode != 0, down.stdout  # the cache really is down
    assert ANSWER in sh(box, "getent hosts during-outage.example.test")
    wait_for("named restarted", lambda: show(box, "named", "MainPID")["MainPID"]
             not in ("0", named_pid) and box.exec(
                 ["dig", "+short", "+time=1", "+tries=1", "@127.0.0.1", "back.example.test"],
                 check=False).stdout.strip() == ANSWER, 30)

    # A hung main loop (the process stopped, as if wedged): no WATCHDOG=1 pings, so systemd
    # kills it after WatchdogSec and Restart=on-failure brings it back to READY.
    since = sh(box, "date '+%Y-%m-%d %H:%M:%S'").strip()
    pid = show(box, UNIT, "MainPID")["MainPID"]
    sh(box, f"kill -STOP {pid}")
    wait_for("watchdog restart", lambda: show(box, UNIT, "NRestarts")["NRestarts"] == "1",
             WATCHDOG_SEC + 30)
    wait_for("READY again after the watchdog restart", lambda: ready(box), 60)
    assert show(box, UNIT, "MainPID")["MainPID"] != pid
    manager_log = sh(box, f"journalctl -q --no-pager -o cat --since '{since}'", check=False)
    assert "Watchdog timeout" in manager_log, manager_log[-3000:]

    # systemctl stop: clean and quick, and DNS keeps working through the cache.
    took_stop = float(sh(box, f"s=$(date +%s.%N); systemctl stop {UNIT}; e=$(date +%s.%N); "
                               "echo \"$e - $s\" | bc 2>/dev/null || "
                               "python3 -c \"print($e - $s)\""))
    final = show(box, UNIT, "ActiveState", "Result")
    assert final == {"ActiveState": "inactive", "Result": "success"}, final
    assert took_stop < 1.5, took_stop
    print(f"resolv.conf repaired in {took:.1f}s; systemctl stop took {took_stop:.2f}s")
    assert "stopping" in journal(box, UNIT, since)
    assert wired(box)
    assert ANSWER in sh(box, "dig +short @127.0.0.1 after-stop.example.test")
    assert ANSWER in sh(box, "getent hosts after-stop2.example.test")
