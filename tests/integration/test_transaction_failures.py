"""The transaction against real failures: a full tmpfs (ENOSPC), a read-only mount, kill -9 and
SIGTERM of a real agent process in the middle of a transaction, and the real named-checkconf
rejecting a config. Every case checks the staged root byte for byte afterwards.

Needs root (mount, chroot for named-checkconf -t) and bind9's named-checkconf. Every agent
process gets DNSCACHE_AGENT_IMDS_ENDPOINT=http://127.0.0.1:9 (a refused loopback port).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dnscache_agent.commands import Runner
from dnscache_agent.errors import ValidationError
from dnscache_agent.health import Health
from dnscache_agent.plan_model import FileChange, Validator
from dnscache_agent.platform import DEBIAN, REDHAT
from dnscache_agent.rootfs import Root
from dnscache_agent.services import NoService
from dnscache_agent.transaction import Transaction
from tests.machinery import (
    first_missing,
    missing_paths,
    missing_root,
    missing_tools,
    module_requires,
    tree_snapshot,
)

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "fixtures" / "golden" / "bind"
OPTIONS = "/etc/bind/named.conf.options"
STATE = "/var/lib/dnscache-agent"
ENV = {**os.environ, "DNSCACHE_AGENT_IMDS_ENDPOINT": "http://127.0.0.1:9",
       "PYTHONPATH": str(REPO)}
AGENT = [sys.executable, "-m", "dnscache_agent"]

_machinery = module_requires(first_missing([
    missing_root("mount, named-checkconf -t"),
    missing_tools("named-checkconf", package="bind9"),
    missing_paths("/etc/bind/named.conf", why="package bind9"),
]))

# A test-only driver: the real agent code (facts, plan, Transaction) on a staged root that the
# transaction treats as live, with a health check that blocks, so a signal can land mid-way
# deterministically. It prints a marker when the chosen health check starts.
DRIVER = '''
import sys, time
from pathlib import Path
from dnscache_agent.app import Agent, Options
from dnscache_agent.checkpoint import StateStore
from dnscache_agent.errors import DnscacheError
from dnscache_agent.health import Health
from dnscache_agent.rootfs import Root
from dnscache_agent.services import NoService
from tests.machinery import tree_snapshot
from dnscache_agent.transaction import Transaction


class LiveLikeRoot(Root):
    @property
    def is_live(self):
        return True


def main():
    root_dir, config, block_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    agent = Agent(Options(root=root_dir, config=config))
    root = LiveLikeRoot(Path(root_dir))
    calls = []

    def health():
        calls.append(1)
        if len(calls) == block_at:
            print("BLOCKED-IN-HEALTH-CHECK", flush=True)
            time.sleep(120)
        return Health(True, "driver")

    profile = agent.facts.profile
    txn = Transaction(root, profile, runner=agent.runner,
                      service=NoService(root, profile, agent.runner), health_check=health,
                      store=StateStore(root, agent.settings.agent.state_dir))
    try:
        txn.apply(agent.plan())
    except DnscacheError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


sys.exit(main())
'''


def build_root(base: Path) -> Path:
    """A Debian 12 root with bind9's own /etc/bind, a plain resolv.conf, and named present."""
    (base / "etc").mkdir(parents=True, exist_ok=True)
    shutil.copytree("/etc/bind", base / "etc/bind", symlinks=True)
    # Pristine Debian options, whatever this machine's copy holds now.
    (base / OPTIONS.lstrip("/")).write_text(
        'options {\n\tdirectory "/var/cache/bind";\n\tdnssec-validation auto;\n'
        '\tlisten-on-v6 { any; };\n};\n')
    (base / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n'
                                         'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    (base / "etc/resolv.conf").write_text("search ec2.internal\nnameserver 172.31.0.2\n")
    (base / "usr/sbin").mkdir(parents=True, exist_ok=True)
    (base / "usr/sbin/named").write_text("#!/bin/sh\n")
    # A staged tree's bind version comes from its package database, never this host's named.
    (base / "var/lib/dpkg").mkdir(parents=True, exist_ok=True)
    (base / "var/lib/dpkg/status").write_text(
        "Package: bind9\nStatus: install ok installed\nVersion: 1:9.18.28-1~deb12u2\n")
    return base


def agent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENT, *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout, check=False)


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, timeout=30, capture_output=True)


def umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], check=False, timeout=30, capture_output=True)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text('[resolver]\nbackend = "static"\n')
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build_root(tmp_path / "root")


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points to unmount (last first) after the test, whatever happened."""
    made: list[Path] = []
    yield made
    for target in reversed(made):
        umount(target)


def test_real_apply_then_nothing_to_do_then_rollback(root: Path, config: Path) -> None:
    before = tree_snapshot(root, skip=STATE)
    first = agent("apply", "--root", str(root), "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert f"changed {OPTIONS}" in first.stdout and "changed /etc/resolv.conf" in first.stdout
    second = agent("apply", "--root", str(root), "--config", str(config))
    assert (second.returncode, second.stdout.strip()) == (
        0, "nothing to do: the host already matches the plan")
    assert agent("plan", "--root", str(root), "--config", str(config)).returncode == 0
    back = agent("rollback", "--root", str(root), "--config", str(config))
    assert back.returncode == 0, back.stderr
    assert tree_snapshot(root, skip=STATE) == before


def test_enospc_leaves_the_originals_intact(tmp_path: Path, config: Path,
                                            mounts: list[Path]) -> None:
    base = tmp_path / "small"
    base.mkdir()
    mount("-t", "tmpfs", "-o", "size=2m", "dnscache-test", str(base))
    mounts.append(base)
    root = build_root(base)
    # The agent's state on its own filesystem, so the write that fails is the host file's.
    state = root / STATE.lstrip("/")
    state.mkdir(parents=True)
    mount("-t", "tmpfs", "-o", "size=4m", "dnscache-test-state", str(state))
    mounts.append(state)
    before = tree_snapshot(root, skip=STATE)
    with open(root / "filler", "wb", buffering=0) as fh:  # fill the filesystem to the last block
        try:
            for _ in range(1024):
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == 28
        else:
            pytest.fail("the 2 MiB tmpfs did not fill up")
    before["/filler"] = tree_snapshot(root, skip=STATE)["/filler"]
    result = agent("apply", "--root", str(root), "--config", str(config))
    assert result.returncode == 6, (result.stdout, result.stderr)
    # The first file the plan writes (the pacer's settings, then bind's options) fails.
    assert f"{root}/etc/dnscache-agent/pacer.toml: cannot write: No space left on device" \
        in result.stderr
    assert result.stderr.count("\n") == 1
    assert tree_snapshot(root, skip=STATE) == before
    assert not list((root / "etc/bind").glob(".*dnscache-tmp"))
    assert not list(root.glob("etc/dnscache-agent/.*dnscache-tmp"))
    assert not (state / "journal").exists()


@pytest.mark.parametrize("kind", ["bind-mount", "tmpfs"])
def test_read_only_target_leaves_the_originals_intact(root: Path, config: Path,
                                                      mounts: list[Path], kind: str) -> None:
    target = root / "etc/bind"
    if kind == "bind-mount":
        mount("--bind", str(target), str(target))
        mounts.append(target)
        mount("-o", "remount,ro,bind", str(target))
    else:
        saved = root.parent / "bind-saved"
        shutil.copytree(target, saved, symlinks=True)
        mount("-t", "tmpfs", "-o", "size=1m", "dnscache-test-ro", str(target))
        mounts.append(target)
        subprocess.run(["cp", "-a", f"{saved}/.", str(target)], check=True, timeout=30)
        mount("-o", "remount,ro", str(target))
    before = tree_snapshot(root, skip=STATE)
    result = agent("apply", "--root", str(root), "--config", str(config))
    assert result.returncode == 6, (result.stdout, result.stderr)
    assert f"{root}{OPTIONS}: cannot create a temporary file: Read-only file system" \
        in result.stderr
    assert tree_snapshot(root, skip=STATE) == before
    assert not (root / STATE.lstrip("/") / "journal").exists()


def start_driver(tmp_path: Path, root: Path, config: Path, block_at: int
                 ) -> subprocess.Popen[str]:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(config), str(block_at)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the marker (or the driver dies)
    if line.strip() != "BLOCKED-IN-HEALTH-CHECK":
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"driver did not reach the health check: {line!r} {err}")
    return proc


@pytest.mark.parametrize("block_at", [1, 2])
@pytest.mark.parametrize("then", ["apply", "rollback"])
def test_kill_9_midway_is_recovered(tmp_path: Path, root: Path, config: Path, block_at: int,
                                    then: str) -> None:
    before = tree_snapshot(root, skip=STATE)
    proc = start_driver(tmp_path, root, config, block_at)
    try:
        assert (root / STATE.lstrip("/") / "journal" / "manifest.json").exists()
        # The kill lands after a host file was replaced.
        assert tree_snapshot(root, skip=STATE) != before
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    result = agent(then, "--root", str(root), "--config", str(config))
    assert result.returncode == 0, result.stderr
    if then == "apply":
        assert f"recovered {OPTIONS} from an interrupted run" in result.stdout
        assert agent("plan", "--root", str(root), "--config", str(config)).returncode == 0
        result = agent("rollback", "--root", str(root), "--config", str(config))
        assert result.returncode == 0, result.stderr
    else:
        assert f"restored {OPTIONS}" in result.stdout
    assert tree_snapshot(root, skip=STATE) == before
    assert not (root / STATE.lstrip("/")).exists()


@pytest.mark.parametrize("block_at", [1, 2])
def test_sigterm_midway_restores_everything(tmp_path: Path, root: Path, config: Path,
                                            block_at: int) -> None:
    before = tree_snapshot(root, skip=STATE)
    proc = start_driver(tmp_path, root, config, block_at)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10  # handled at once, not after the sleep
    assert proc.returncode not in (0, -signal.SIGTERM), err
    assert "interrupted by SIGTERM; rolled back" in err
    assert tree_snapshot(root, skip=STATE) == before
    assert not (root / STATE.lstrip("/") / "journal").exists()
    # Nothing half-done is left for the next run to recover.
    result = agent("apply", "--root", str(root), "--config", str(config))
    assert result.returncode == 0 and "recovered" not in result.stdout


def test_named_checkconf_rejection_changes_nothing(root: Path, config: Path) -> None:
    # The host's own include is broken: the staged tree cannot pass, so nothing is swapped in.
    (root / "etc/bind/named.conf.local").write_text('zone "broken" {\n')
    before = tree_snapshot(root, skip=STATE)
    result = agent("apply", "--root", str(root), "--config", str(config))
    assert result.returncode == 5, (result.stdout, result.stderr)
    assert f"{OPTIONS}: named-checkconf rejected the rendered config:" in result.stderr
    assert result.stderr.count("\n") == 1
    assert tree_snapshot(root, skip=STATE) == before
    assert not (root / STATE.lstrip("/")).exists()


def test_a_broken_rendered_file_is_rejected_by_the_real_checkconf(root: Path) -> None:
    before = tree_snapshot(root, skip=STATE)
    runner = Runner()
    txn = Transaction(Root(root), DEBIAN, runner=runner,
                      service=NoService(Root(root), DEBIAN, runner),
                      health_check=lambda: Health(True, "unused"))
    broken = FileChange(OPTIONS, b'options {\n\tforwarders { 1.2.3.4; }; };\n};\n',
                        validator=Validator.NAMED_CHECKCONF)
    with pytest.raises(ValidationError, match="named-checkconf rejected"):
        txn.validate([broken])
    bogus = FileChange(OPTIONS, b'options {\n\tstale-answer-client-timeout banana;\n};\n',
                       validator=Validator.NAMED_CHECKCONF)
    with pytest.raises(ValidationError, match="banana"):
        txn.validate([bogus])
    assert tree_snapshot(root, skip=STATE) == before


@pytest.mark.parametrize("golden", sorted(p.relative_to(GOLDEN).as_posix()
                                          for p in GOLDEN.rglob("named.conf*")))
def test_golden_configs_pass_the_real_named_checkconf(tmp_path: Path, golden: str) -> None:
    """This machine's named-checkconf (9.18) accepts every golden config; the version gating
    for older bind is in the unit tests."""
    text = (GOLDEN / golden).read_bytes()
    if golden.endswith("named.conf.options"):
        root, profile = build_root(tmp_path / "root"), DEBIAN
    else:
        root, profile = tmp_path / "root", REDHAT
        (root / "etc").mkdir(parents=True)
        (root / "etc/named.rfc1912.zones").write_text(
            'zone "localhost" IN { type primary; file "/etc/bind/db.local"; };\n')
    runner = Runner()
    txn = Transaction(Root(root), profile, runner=runner,
                      service=NoService(Root(root), profile, runner),
                      health_check=lambda: Health(True, "unused"))
    txn.validate([FileChange(profile.options_path, text, validator=Validator.NAMED_CHECKCONF)])
