"""The daemon's own cost: RSS and CPU (% of one core) of `dnscache-agent run`, with psutil.

Two ways to run it (root):

  python3 -m bench.daemon_cost --pid PID [--seconds 180]
      measure a running daemon (e.g. `systemctl show -p MainPID dnscache-agent`);

  python3 -m bench.daemon_cost --container [--seconds 180]
      boot the system-test image (rig/), install the wheel, `apply`, `install-service` with
      the shipped unit and default settings (statistics every 1 s, verify every 60 s), then
      run this script inside the container against the service's main PID.

CPU is (user + system) time of the process over the wall time; the commands it runs (`ip
route get` at start, `named -V` and `systemctl is-active` at each verify, `ethtool` each second
when installed) are reported separately as children's time. RSS is sampled every second.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def measure(pid: int, seconds: float, interval: float = 1.0) -> dict[str, Any]:
    """Sample `pid` for `seconds`; returns the figures (raises psutil.NoSuchProcess if it
    exits)."""
    import psutil

    proc = psutil.Process(pid)
    t0 = time.monotonic()
    c0 = proc.cpu_times()
    rss: list[int] = []
    end = t0 + seconds
    while time.monotonic() < end:
        rss.append(proc.memory_info().rss)
        time.sleep(min(interval, max(0.0, end - time.monotonic())))
    c1 = proc.cpu_times()
    wall = time.monotonic() - t0
    own = (c1.user - c0.user) + (c1.system - c0.system)
    children = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    return {
        "pid": pid,
        "cmdline": " ".join(proc.cmdline())[:200],
        "seconds": round(wall, 1),
        "rss_mb_max": round(max(rss) / 2**20, 1),
        "rss_mb_mean": round(sum(rss) / len(rss) / 2**20, 1),
        "uss_mb": round(proc.memory_full_info().uss / 2**20, 1),
        "cpu_pct_one_core": round(own / wall * 100, 3),
        "children_cpu_pct_one_core": round(children / wall * 100, 3),
        "threads": proc.num_threads(),
    }


def in_container(seconds: float) -> dict[str, Any]:
    """Boot the base image, install and start the service, measure inside the container."""
    sys.path.insert(0, str(REPO))
    import tempfile

    from rig.containers import (
        SystemdContainer,
        build_wheelhouse,
        install_agent,
        project_dependencies,
    )
    from rig.images import ImageBuilder

    vpc = "169.254.169.253"
    fake_vpc = (
        "import socket\nimport dns.flags, dns.message, dns.rdatatype, dns.rrset\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"s.bind(('{vpc}', 53))\n"
        "while True:\n"
        "    data, peer = s.recvfrom(4096)\n"
        "    q = dns.message.from_wire(data)\n"
        "    r = dns.message.make_response(q)\n"
        "    r.flags |= dns.flags.RA\n"
        "    if q.question and q.question[0].rdtype == dns.rdatatype.A:\n"
        "        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, 'IN', 'A',"
        " '192.0.2.10'))\n"
        "    s.sendto(r.to_wire(), peer)\n")
    ref = ImageBuilder.from_host().ensure("base").ref
    with tempfile.TemporaryDirectory() as tmp, SystemdContainer(ref) as box:
        wheels = Path(tmp) / "wheels"
        deps = project_dependencies((REPO / "pyproject.toml").read_text(encoding="utf-8"))
        build_wheelhouse(REPO, wheels, deps)
        venv = install_agent(box, wheels)
        (Path(tmp) / "fake_vpc.py").write_text(fake_vpc)
        box.copy_in(Path(tmp) / "fake_vpc.py", "/root/fake_vpc.py")
        box.copy_in(Path(__file__), "/root/daemon_cost.py")
        imds = "DNSCACHE_AGENT_IMDS_ENDPOINT=http://127.0.0.1:9"
        box.exec(["sh", "-ec",
                  f"systemctl stop named; ip addr add {vpc}/32 dev lo; "
                  f"systemd-run --unit fake-vpc-dns {venv}/bin/python /root/fake_vpc.py; "
                  f"sleep 1; printf 'nameserver {vpc}\\n' > /etc/resolv.conf; "
                  "mkdir -p /etc/systemd/system/dnscache-agent.service.d; "
                  f"printf '[Service]\\nEnvironment={imds}\\n' > "
                  "/etc/systemd/system/dnscache-agent.service.d/imds.conf; "
                  f"env {imds} {venv}/bin/dnscache-agent apply; "
                  f"env {imds} {venv}/bin/dnscache-agent install-service"], timeout=300)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = box.exec(["systemctl", "is-active", "dnscache-agent"], check=False)
            if state.stdout.strip() == "active":
                break
            time.sleep(1)
        else:
            raise RuntimeError("dnscache-agent did not become active")
        time.sleep(10)  # let imports and the first verify settle
        pid = box.exec(["systemctl", "show", "-p", "MainPID", "--value",
                        "dnscache-agent"]).stdout.strip()
        out = box.exec([f"{venv}/bin/python", "/root/daemon_cost.py", "--pid", pid,
                        "--seconds", str(seconds)], timeout=seconds + 120)
        result: dict[str, Any] = json.loads(out.stdout)
        result["status"] = box.exec(["systemctl", "show", "-p", "StatusText", "--value",
                                     "dnscache-agent"]).stdout.strip()
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pid", type=int, help="measure this running daemon")
    where.add_argument("--container", action="store_true",
                       help="boot a systemd container with the service and measure it there")
    parser.add_argument("--seconds", type=float, default=180.0)
    args = parser.parse_args(argv)
    result = measure(args.pid, args.seconds) if args.pid else in_container(args.seconds)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
