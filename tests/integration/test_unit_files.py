"""The shipped systemd units, as `install-service` installs them, checked by systemd's own
tools run as real processes: `systemd-analyze verify` must print nothing to stderr (it exits 0
on unknown keys and bad values), and the long-running unit's offline exposure must stay at or
below 2.0."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dnscache_agent import agent_units
from tests.machinery import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
SERVICE_UNITS = ("dnscache-agent.service", "dnscache-agent-repair.service",
                 "dnscache-agent-repair.path")
PACER = "dnscache-agent-pacer.service"
UNITS = (*SERVICE_UNITS, PACER)
MAX_EXPOSURE = 2.0


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        skip_or_fail("systemd-analyze is not installed (package systemd)")
    # SYSTEMD_LOG_COLOR/SYSTEMD_COLORS off: plain text to parse.
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env=env, check=False)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with the units installed by the real CLI, pointing at a real executable."""
    root = tmp_path_factory.mktemp("root")
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text("ID=debian\nVERSION_ID=12\n")
    command = root / "opt/dnscache-agent/venv/bin/dnscache-agent"
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\nexit 0\n")
    command.chmod(0o755)
    # The pacer's unit runs the package's second entry point, installed beside the first.
    pacer = command.with_name("dnscache-agent-pacer")
    pacer.write_text("#!/bin/sh\nexit 0\n")
    pacer.chmod(0o755)
    result = subprocess.run(
        [sys.executable, "-m", "dnscache_agent", "install-service", "--root", str(root),
         "--exec-path", str(command)],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert f"changed /etc/systemd/system/{UNITS[0]}" in result.stdout
    assert "changed /etc/systemd/system/multi-user.target.wants/dnscache-agent.service" \
        in result.stdout
    # The units are checkpointed like any other file the agent writes (rollback removes them).
    manifest = (root / "var/lib/dnscache-agent/original/manifest.json").read_text()
    assert all(f"/etc/systemd/system/{name}" in manifest for name in SERVICE_UNITS)
    # The pacer's unit is the cache's (apply plans it on systemd hosts), rendered the same way.
    files, _ = agent_units.plan_units(
        {PACER: agent_units.shipped_units()[PACER]}, str(command), owner="pacer")
    for f in files:
        (root / f.path.lstrip("/")).write_bytes(f.content)
    return root


def test_install_service_writes_the_units_and_the_wants_link(staged: Path) -> None:
    unit_dir = staged / "etc/systemd/system"
    for name in SERVICE_UNITS:
        text = (unit_dir / name).read_text()
        assert "/usr/local/bin/dnscache-agent" not in text
        assert (REPO / "packaging/systemd" / name).exists()
    link = unit_dir / "multi-user.target.wants/dnscache-agent.service"
    assert os.readlink(link) == "/etc/systemd/system/dnscache-agent.service"
    # A second run changes nothing.
    again = subprocess.run(
        [sys.executable, "-m", "dnscache_agent", "install-service", "--root", str(staged),
         "--exec-path", str(staged / "opt/dnscache-agent/venv/bin/dnscache-agent")],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert again.returncode == 0, again.stderr
    assert "changed" not in again.stdout and "nothing to do" in again.stdout, again.stdout


def test_systemd_analyze_verify_prints_nothing(staged: Path) -> None:
    unit_dir = staged / "etc/systemd/system"
    result = _analyze("verify", *[str(unit_dir / n) for n in UNITS], cwd=unit_dir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def _exposure(unit: Path) -> float:
    result = _analyze("security", "--offline=yes", str(unit), cwd=unit.parent)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@pytest.mark.parametrize("unit", ["dnscache-agent.service", "dnscache-agent-pacer.service"])
def test_long_running_units_exposure_is_at_most_2(staged: Path, unit: str) -> None:
    exposure = _exposure(staged / "etc/systemd/system" / unit)
    print(f"{unit} exposure {exposure}")
    assert exposure <= MAX_EXPOSURE


def test_privileged_half_is_the_short_lived_one(staged: Path) -> None:
    """The repair unit keeps more privilege, so it must stay a oneshot started on demand."""
    text = (staged / "etc/systemd/system/dnscache-agent-repair.service").read_text()
    assert "Type=oneshot" in text and "[Install]" not in text
    main = (staged / "etc/systemd/system/dnscache-agent.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "Before=nss-lookup.target",
                 "CapabilityBoundingSet=\n", "ProtectSystem=strict"):
        assert line in main
    assert "ReadWritePaths" not in main.replace("# drop-in: ReadWritePaths", "")
    exposure = _exposure(staged / "etc/systemd/system/dnscache-agent-repair.service")
    print(f"dnscache-agent-repair.service exposure {exposure}")
    assert exposure > _exposure(staged / "etc/systemd/system/dnscache-agent.service")
