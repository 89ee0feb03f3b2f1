"""The agent's own upgrade under load, in a container booting systemd: the phase of
`python -m bench.change_cost --upgrade` that the simulated VPC cannot host.

In the base system-test image (rig/images.py, built by the lead; never built here): the
agent's wheel installed in a venv, `apply`, `install-service` with the shipped units (only
the IMDS guard added), as tests/system/test_service.py does. The "Amazon resolver" is a
dnspython responder on 169.254.169.253 on the container's loopback (no network). The same
glibc load (bench/glibc_load.py, copied in, run by the container's python3) runs at a steady
rate through the container's /etc/resolv.conf while the agent is upgraded: `pip install
--upgrade` of a wheel one patch version newer built from this tree, `install-service` (it
restarts units whose files changed), then `systemctl restart` of the agent's units, as an
upgrade runbook would. Upstream packets are not counted here (no limit rule in a container).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.change_cost import PhaseWindow

REPO = Path(__file__).resolve().parent.parent
VPC = "169.254.169.253"
ANSWER = "192.0.2.10"
IMDS = "DNSCACHE_AGENT_IMDS_ENDPOINT=http://127.0.0.1:9"
UNIT = "dnscache-agent.service"
DROP_IN = f"[Service]\nEnvironment={IMDS}\n"
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "results", "__pycache__", "*.egg-info",
                                     "tests", "build", "dist", ".mypy_cache", ".ruff_cache")


def bump_patch(version: str) -> str:
    """0.1.0 → 0.1.1 (pure). Raises ValueError on anything but N.N.N."""
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"not a N.N.N version: {version!r}")
    return f"{m[1]}.{m[2]}.{int(m[3]) + 1}"


def newer_wheel(dest: Path) -> tuple[Path, str]:
    """Build this tree's wheel with the patch version bumped (in a copy of the tree)."""
    text = (REPO / "pyproject.toml").read_text()
    old = re.search(r'^version = "([^"]+)"', text, re.M)
    if old is None:
        raise RuntimeError("pyproject.toml: no version line")
    new = bump_patch(old[1])
    with tempfile.TemporaryDirectory(prefix="dnscache-upgrade-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(REPO, src, ignore=COPY_IGNORE, symlinks=True)
        (src / "pyproject.toml").write_text(text.replace(old[0], f'version = "{new}"', 1))
        init = src / "dnscache_agent" / "__init__.py"
        init.write_text(init.read_text().replace(f'"{old[1]}"', f'"{new}"'))
        cp = subprocess.run(["python3", "-m", "pip", "wheel", "--no-deps",
                             "--disable-pip-version-check", "-w", str(dest), str(src)],
                            capture_output=True, text=True, timeout=540)
        if cp.returncode != 0:
            raise RuntimeError(f"pip wheel (newer): {cp.stderr.strip()[-1000:]}")
    found = sorted(dest.glob(f"dnscache_agent-{new}-*.whl"))
    if not found:
        raise RuntimeError(f"no dnscache_agent-{new} wheel in {dest}")
    return found[0], new


def run_upgrade_phase(qps: float, baseline: float, settle: float, names: list[str],
                      agent_toml: str = "[daemon]\nverify_interval = 5\n",
                      ) -> tuple[list[PhaseWindow], dict[str, Any]]:
    """Boot the container, install and wire the agent (`agent_toml` as its settings), run
    the load, upgrade the agent. Returns the phase windows (a baseline and the upgrade) and
    the load's JSON."""
    from rig.containers import (
        SystemdContainer,
        build_wheelhouse,
        fake_vpc_resolver_script,
        install_agent,
        project_dependencies,
    )
    from rig.images import ImageBuilder, image_ref, podman_env

    builder = ImageBuilder.from_host()
    ref = image_ref("base")
    present = subprocess.run(["podman", "image", "exists", ref], env=podman_env(os.environ),
                             capture_output=True, timeout=60).returncode == 0
    if not present and not builder.tarball("base").exists():
        # Building images is the lead's step (scripts/build-images.sh), not a benchmark's.
        raise RuntimeError(f"{ref}: not built (scripts/build-images.sh builds it)")
    ref = builder.ensure("base").ref
    with tempfile.TemporaryDirectory(prefix="dnscache-upgrade-") as tmp_s:
        tmp = Path(tmp_s)
        house = tmp / "wheels"
        build_wheelhouse(REPO, house, project_dependencies((REPO / "pyproject.toml")
                                                            .read_text()))
        newer_dir = tmp / "newer"
        newer, new_version = newer_wheel(newer_dir)
        (tmp / "q.txt").write_text("".join(f"{n} A\n" for n in names))
        (tmp / "fake_vpc.py").write_text(fake_vpc_resolver_script(VPC, ANSWER))
        (tmp / "dropin.conf").write_text(DROP_IN)
        (tmp / "agent.toml").write_text(agent_toml)
        with SystemdContainer(ref, name_prefix="dnscache-upgrade") as box:
            venv = install_agent(box, house)
            cmd = f"{venv}/bin/dnscache-agent"
            for src, dst in (("fake_vpc.py", "/root/fake_vpc.py"),
                             ("q.txt", "/root/q.txt")):
                box.copy_in(tmp / src, dst)
            box.copy_in(REPO / "bench" / "glibc_load.py", "/root/glibc_load.py")
            box.exec(["mkdir", "-p", "/etc/dnscache-agent", f"/etc/systemd/system/{UNIT}.d",
                      "/etc/systemd/system/dnscache-agent-repair.service.d",
                      "/etc/systemd/system/dnscache-agent-pacer.service.d"])
            box.copy_in(tmp / "agent.toml", "/etc/dnscache-agent/agent.toml")
            for unit in (UNIT, "dnscache-agent-repair.service", "dnscache-agent-pacer.service"):
                box.copy_in(tmp / "dropin.conf", f"/etc/systemd/system/{unit}.d/test.conf")
            box.exec(["sh", "-ec",
                      f"systemctl stop named; ip addr add {VPC}/32 dev lo; "
                      f"systemd-run --unit fake-vpc-dns {venv}/bin/python /root/fake_vpc.py; "
                      "sleep 1; systemctl is-active fake-vpc-dns; "
                      f"printf 'nameserver {VPC}\\nsearch ec2.internal\\n' > /etc/resolv.conf"])
            for step in ("apply", "install-service"):
                cp = box.exec(["env", IMDS, cmd, step], timeout=180, check=False)
                if cp.returncode != 0:
                    why = box.exec(["sh", "-c", "journalctl -q --no-pager -o cat -n 8 "
                                    "-u 'dnscache-agent*'"], check=False).stdout
                    raise RuntimeError(f"{step} exit {cp.returncode}: "
                                       f"{cp.stderr.strip()[-400:]} | journal: "
                                       f"{' / '.join(why.strip().splitlines()[-8:])}")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                st = box.exec(["systemctl", "is-active", UNIT], check=False).stdout.strip()
                if st == "active":
                    break
                time.sleep(0.5)
            box.exec(["mkdir", "-p", "/tmp/newer"])
            box.copy_in(newer, f"/tmp/newer/{newer.name}")
            total = baseline + settle + 120
            load = subprocess.Popen(
                ["podman", "exec", "-i", box._target(), "python3", "/root/glibc_load.py",
                 "--queries", "/root/q.txt", "--qps", f"{qps:g}", "--seconds", f"{total:g}",
                 "--drain", "15", "--until-stdin-closes", "--out", "/root/load.json"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=box._env)
            try:
                mono = time.monotonic
                base = PhaseWindow("baseline (container)", mono(), mono(),
                                   wall_start=time.time())
                time.sleep(baseline)
                up = PhaseWindow("agent upgrade", mono(), mono(), wall_start=time.time())
                base.end = up.start
                steps = [
                    [f"{venv}/bin/pip", "install", "--upgrade", "--no-index", "--find-links",
                     "/tmp/newer", "--find-links", "/tmp/dnscache-wheels",
                     "--disable-pip-version-check", "--no-cache-dir", "dnscache-agent"],
                    ["env", IMDS, cmd, "install-service"],
                    ["sh", "-c", "systemctl restart dnscache-agent.service; "
                     "systemctl list-unit-files dnscache-agent-pacer.service >/dev/null "
                     "&& systemctl restart dnscache-agent-pacer.service || true"],
                ]
                said = []
                for argv in steps:
                    cp = box.exec(argv, check=False, timeout=300)
                    said.append(f"{Path(argv[0]).name if argv[0] != 'env' else 'install-service'}"
                                f" exit {cp.returncode}")
                up.action_end = mono()
                up.notes["steps"] = ", ".join(said)
                ver = box.exec([cmd, "--version"], check=False).stdout.strip()
                up.notes["version_after"] = ver
                up.notes["expected"] = new_version
                time.sleep(settle)
                up.end = mono()
                active = box.exec(["systemctl", "is-active", UNIT, "named"], check=False)
                up.notes["units_after"] = " ".join(active.stdout.split())
                assert load.stdin is not None
                load.stdin.close()
                load.wait(60)
            finally:
                if load.poll() is None:
                    load.kill()
                    load.wait(10)
            if load.returncode != 0:
                err = load.stderr.read().decode(errors="replace") if load.stderr else ""
                raise RuntimeError(f"glibc load in the container: {err[-800:]}")
            box.copy_out("/root/load.json", tmp / "load.json")
            data: dict[str, Any] = json.loads((tmp / "load.json").read_text())
    return [base, up], data
