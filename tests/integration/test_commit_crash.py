"""kill -9 of a real agent process at EACH durable step of a transaction's commit and of a
rollback's discard, then the next run: the host files are all old or all new, never a mix, and
no later command is wedged.

The kill point comes from the checkpoint's `step` hook, which a small driver (below) turns into
SIGKILL of its own process at the N-th step; the agent code it runs is the real one (facts,
plan, named-checkconf, Transaction) on a staged Debian root. A clean run lists the steps first,
so every step the code has is covered, including ones added later.

What SIGKILL shows: the order of renames and unlinks (process-crash atomicity). What it cannot
show: power loss, where the fsyncs matter (the file and directory fsyncs are there, in the order
tests/unit/test_checkpoint_damage.py checks with the same hook).

Needs root (chown) and bind9's named-checkconf; each case is about four agent processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.machinery import skip_or_fail, tree_snapshot

REPO = Path(__file__).resolve().parents[2]
STATE = "/var/lib/dnscache-agent"
ENV = {**os.environ, "DNSCACHE_AGENT_IMDS_ENDPOINT": "http://127.0.0.1:9",
       "PYTHONPATH": str(REPO)}
AGENT = [sys.executable, "-m", "dnscache_agent"]
#: The commit point: after this step the journal no longer exists under its name.
COMMIT = "journal:discard-tombstoned"

DRIVER = r'''
import os, signal, sys
from dnscache_agent.app import Agent, Options
from dnscache_agent.checkpoint import StateStore
from dnscache_agent.health import Health
from dnscache_agent.services import NoService
from dnscache_agent.transaction import Transaction


def main():
    mode, root_dir, config, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    count = 0

    def step(name):
        nonlocal count
        count += 1
        print(f"STEP {name}", flush=True)
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    agent = Agent(Options(root=root_dir, config=config))
    root, profile = agent.root, agent.facts.profile
    txn = Transaction(root, profile, runner=agent.runner,
                      service=NoService(root, profile, agent.runner),
                      health_check=lambda: Health(True, "driver"),
                      store=StateStore(root, agent.settings.agent.state_dir, step=step))
    if mode == "apply":
        txn.apply(agent.plan())
    elif mode == "rollback":
        txn.rollback()
    else:
        txn.recover()
    return 0


sys.exit(main())
'''


def needs_machinery() -> None:
    if os.geteuid() != 0:
        skip_or_fail("needs root (chown of staged files)")
    if shutil.which("named-checkconf") is None or not Path("/etc/bind/named.conf").exists():
        skip_or_fail("needs bind9 (named-checkconf, /etc/bind) installed")


def build_root(base: Path) -> Path:
    """A Debian 12 root: bind9's own /etc/bind with stock options, a plain resolv.conf, named
    and its dpkg record (the tree's bind version comes from there, not from this host)."""
    (base / "etc").mkdir(parents=True)
    shutil.copytree("/etc/bind", base / "etc/bind", symlinks=True)
    (base / "etc/bind/named.conf.options").write_text(
        'options {\n\tdirectory "/var/cache/bind";\n\tdnssec-validation auto;\n};\n')
    (base / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    (base / "etc/resolv.conf").write_text("search ec2.internal\nnameserver 172.31.0.2\n")
    (base / "usr/sbin").mkdir(parents=True)
    (base / "usr/sbin/named").write_text("#!/bin/sh\n")
    (base / "var/lib/dpkg").mkdir(parents=True)
    (base / "var/lib/dpkg/status").write_text(
        "Package: bind9\nStatus: install ok installed\nVersion: 1:9.18.28-1~deb12u2\n")
    return base


def copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True, timeout=60)
    return dst


def host(root: Path) -> dict[str, tuple[object, ...]]:
    """The host files (the agent's state left out)."""
    return tree_snapshot(root, skip=STATE)


def driver(tmp_path: Path, mode: str, root: Path, config: Path, kill_at: int
           ) -> tuple[int, list[str]]:
    script = tmp_path / "driver.py"
    if not script.exists():
        script.write_text(DRIVER)
    cp = subprocess.run([sys.executable, str(script), mode, str(root), str(config),
                         str(kill_at)], env=ENV, capture_output=True, text=True, timeout=120,
                        check=False)
    if kill_at == 0:
        assert cp.returncode == 0, cp.stderr
    steps = [line.split(" ", 1)[1] for line in cp.stdout.splitlines()
             if line.startswith("STEP ")]
    return cp.returncode, steps


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENT, *args], env=ENV, capture_output=True, text=True,
                          timeout=120, check=False)


def no_tombstones(root: Path) -> None:
    leftovers = [str(p) for p in (root / "var/lib").rglob(".discarded-*")]
    assert leftovers == []


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text('[resolver]\nbackend = "static"\n')
    return path


def test_kill_at_each_step_of_apply(tmp_path: Path, config: Path) -> None:
    needs_machinery()
    template = build_root(tmp_path / "template")
    old = host(template)
    reference = copy(template, tmp_path / "reference")
    _, steps = driver(tmp_path, "apply", reference, config, 0)
    new = host(reference)
    assert old != new
    assert COMMIT in steps and steps[-1] == "journal:discard-deleted"
    # Backups, manifests (temp then rename), then the commit: every kind is there.
    assert any(s.startswith("journal:backup-synced:") for s in steps)
    assert any(s.startswith("original:manifest-tmp-synced") for s in steps)
    commit_at = steps.index(COMMIT) + 1
    for n, name in enumerate(steps, 1):
        root = copy(template, tmp_path / f"kill-{n}")
        code, seen = driver(tmp_path, "apply", root, config, n)
        assert (code, seen[-1]) == (-9, name), (n, name)
        code, _ = driver(tmp_path, "recover", root, config, 0)
        assert host(root) == (new if n >= commit_at else old), f"killed after {name}"
        # Nothing is wedged: apply, then rollback, from the CLI.
        result = agent("apply", "--root", str(root), "--config", str(config))
        assert result.returncode == 0, (name, result.stderr)
        assert host(root) == new, f"killed after {name}"
        result = agent("rollback", "--root", str(root), "--config", str(config))
        assert result.returncode == 0, (name, result.stderr)
        assert host(root) == old, f"killed after {name}"
        assert not (root / STATE.lstrip("/")).exists(), f"killed after {name}"
        no_tombstones(root)
        shutil.rmtree(root)


def test_kill_at_each_step_of_rollback(tmp_path: Path, config: Path) -> None:
    needs_machinery()
    template = build_root(tmp_path / "template")
    old = host(template)
    applied = copy(template, tmp_path / "applied")
    result = agent("apply", "--root", str(applied), "--config", str(config))
    assert result.returncode == 0, result.stderr
    new = host(applied)
    _, steps = driver(tmp_path, "rollback", copy(applied, tmp_path / "reference"), config, 0)
    assert host(tmp_path / "reference") == old
    assert any(s.startswith("original:restored:") for s in steps)
    assert steps[-2:] == ["original:discard-tombstoned", "original:discard-deleted"]
    for n, name in enumerate(steps, 1):
        root = copy(applied, tmp_path / f"kill-{n}")
        code, seen = driver(tmp_path, "rollback", root, config, n)
        assert (code, seen[-1]) == (-9, name), (n, name)
        # A rollback killed mid-way is finished by the next one, and nothing is wedged.
        result = agent("rollback", "--root", str(root), "--config", str(config))
        assert result.returncode == 0, (name, result.stderr)
        assert host(root) == old, f"killed after {name}"
        assert not (root / STATE.lstrip("/")).exists(), f"killed after {name}"
        no_tombstones(root)
        result = agent("apply", "--root", str(root), "--config", str(config))
        assert result.returncode == 0, (name, result.stderr)
        assert host(root) == new, f"killed after {name}"
        shutil.rmtree(root)
