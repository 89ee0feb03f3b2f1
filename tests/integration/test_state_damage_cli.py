"""A damaged state directory through the real command line: every command (rollback included)
prints one line naming the damaged file and what to do, exits with StateError's documented code
(11), and prints no traceback. The state comes from a real `apply --root`; the damage is done by
hand afterwards, one kind per case.

Needs root (the staged files' owners) and bind9's named-checkconf for the first apply.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dnscache_agent.errors import StateError
from tests.integration.test_commit_crash import build_root
from tests.machinery import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
STATE = "var/lib/dnscache-agent"
ENV = {**os.environ, "DNSCACHE_AGENT_IMDS_ENDPOINT": "http://127.0.0.1:9",
       "PYTHONPATH": str(REPO)}
EVERY_COMMAND = ("facts", "plan", "verify", "apply", "rollback")


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dnscache_agent", *args], env=ENV,
                          capture_output=True, text=True, timeout=120, check=False)


def manifest(state: Path) -> Path:
    return state / "manifest.json"


def resolv_backup(state: Path) -> Path:
    data = json.loads(manifest(state).read_text())
    entry = next(e for e in data["entries"] if e["path"] == "/etc/resolv.conf")
    return state / "files" / entry["backup"]


def drop_field(state: Path) -> Path:
    data = json.loads(manifest(state).read_text())
    del data["entries"][0]["existed"]
    manifest(state).write_text(json.dumps(data))
    return manifest(state)


def write(path_of: Callable[[Path], Path], data: bytes | None) -> Callable[[Path], Path]:
    def damage(state: Path) -> Path:
        path = path_of(state)
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data(path.read_bytes()) if callable(data) else data)
        return path
    return damage


# kind → what to do to a checkpoint directory; returns the file the message must name.
DAMAGE: dict[str, Callable[[Path], Path]] = {
    "truncated-manifest": write(manifest, lambda raw: raw[: len(raw) // 3]),  # type: ignore
    "foreign-manifest": write(manifest, b'{"resources": [], "version": 4}\n'),
    "non-utf8-manifest": write(manifest, b'{"entries": [], "meta": {"\xff\xfe": 1}}'),
    "entry-missing-field": drop_field,
    "missing-backup": write(resolv_backup, None),
    "corrupt-backup": write(resolv_backup, b"nameserver 6.6.6.6\n"),
}


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if os.geteuid() != 0:
        skip_or_fail("needs root (chown of staged files)")
    if shutil.which("named-checkconf") is None or not Path("/etc/bind/named.conf").exists():
        skip_or_fail("needs bind9 (named-checkconf, /etc/bind) installed")
    base = tmp_path_factory.mktemp("damage")
    config = base / "agent.toml"
    config.write_text('[resolver]\nbackend = "static"\n')
    root = build_root(base / "applied")
    result = agent("apply", "--root", str(root), "--config", str(config))
    assert result.returncode == 0, result.stderr
    return root, config


def fresh(applied: tuple[Path, Path], dst: Path) -> Path:
    subprocess.run(["cp", "-a", str(applied[0]), str(dst)], check=True, timeout=60)
    return dst


def assert_one_line(result: subprocess.CompletedProcess[str], names: Path, *,
                    logged: tuple[str, ...] = ()) -> None:
    """Exit 11 and one error line naming the file; besides it, only the log lines `logged`
    (recovery's WARNING that it found a journal comes before the journal's backups are read)."""
    assert result.returncode == StateError.exit_code == 11, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    *before, last = result.stderr.splitlines()
    assert [line.split(": ", 1)[0].split()[-1] for line in before] == [
        f"dnscache_agent.{module}" for module in logged][: len(before)], result.stderr
    assert last.startswith(f"dnscache-agent: error: {names}: "), result.stderr
    assert "move it aside and rerun" in last


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_original_checkpoint(applied: tuple[Path, Path], tmp_path: Path,
                                     kind: str) -> None:
    root = fresh(applied, tmp_path / "root")
    damaged = DAMAGE[kind](root / STATE / "original")
    before = subprocess.run(["find", str(root), "-printf", "%p %s %m\n"], capture_output=True,
                            text=True, check=True).stdout
    for command in EVERY_COMMAND:
        result = agent(command, "--root", str(root), "--config", str(applied[1]))
        assert_one_line(result, damaged)
    after = subprocess.run(["find", str(root), "-printf", "%p %s %m\n"], capture_output=True,
                           text=True, check=True).stdout
    assert after == before  # nothing was touched


@pytest.mark.parametrize("kind", ["truncated-manifest", "entry-missing-field",
                                  "missing-backup", "corrupt-backup"])
def test_damaged_journal(applied: tuple[Path, Path], tmp_path: Path, kind: str) -> None:
    """A journal left by a killed run, then damaged: recovery (apply, rollback) refuses it in
    one line instead of restoring half of it or crashing."""
    root = fresh(applied, tmp_path / "root")
    state = root / STATE
    shutil.copytree(state / "original", state / "journal")
    damaged = DAMAGE[kind](state / "journal")
    for command in ("apply", "rollback"):
        result = agent(command, "--root", str(root), "--config", str(applied[1]))
        assert_one_line(result, damaged, logged=("transaction",))
