"""The state directory's lock between real processes: a second caller waits a bounded time,
then exits 75 naming the holder's pid; a killed holder's lock is free at once; and a run that is
still alive keeps its journal: the real `dnscache-agent apply` waits for it instead of
"recovering" it under its feet.

The holder is a small driver: the real agent code under `StateLock`, blocked (on its stdin) at a
chosen step of the transaction through the checkpoint's step hook. Needs root and bind9's
named-checkconf for the transaction case.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnscache_agent.errors import LockedError
from tests.integration.test_commit_crash import build_root
from tests.machinery import skip_or_fail, tree_snapshot

REPO = Path(__file__).resolve().parents[2]
STATE = "/var/lib/dnscache-agent"
ENV = {**os.environ, "DNSCACHE_AGENT_IMDS_ENDPOINT": "http://127.0.0.1:9",
       "PYTHONPATH": str(REPO)}

HOLD = r'''
import sys
from pathlib import Path
from dnscache_agent.statelock import StateLock
with StateLock(Path(sys.argv[1])):
    print("HELD", flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills us)
'''

TRY = r'''
import sys
from pathlib import Path
from dnscache_agent.errors import DnscacheError
from dnscache_agent.statelock import StateLock
lock = StateLock(Path(sys.argv[1]))
try:
    lock.acquire(float(sys.argv[2]))
except DnscacheError as exc:
    print(f"dnscache-agent: error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
print("ACQUIRED", flush=True)
lock.release()
'''

# The real transaction under the lock, blocked after its first host file was written.
APPLY_AND_BLOCK = r'''
import sys
from dnscache_agent.app import Agent, Options
from dnscache_agent.checkpoint import StateStore
from dnscache_agent.health import Health
from dnscache_agent.services import NoService
from dnscache_agent.statelock import StateLock
from dnscache_agent.transaction import Transaction

root_dir, config, block_after = sys.argv[1], sys.argv[2], sys.argv[3]
seen = []


def step(name):
    seen.append(name)
    if name == block_after and seen.count(name) == 3:
        print("BLOCKED", flush=True)
        sys.stdin.read()


agent = Agent(Options(root=root_dir, config=config))
root, profile = agent.root, agent.facts.profile
store = StateStore(root, agent.settings.agent.state_dir, step=step)
with StateLock(store.base):
    Transaction(root, profile, runner=agent.runner,
                service=NoService(root, profile, agent.runner),
                health_check=lambda: Health(True, "driver"), store=store).apply(agent.plan())
print("COMMITTED", flush=True)
'''


def start(tmp_path: Path, name: str, code: str, *args: str, marker: str
          ) -> subprocess.Popen[str]:
    script = tmp_path / f"{name}.py"
    script.write_text(code)
    proc = subprocess.Popen([sys.executable, str(script), *args], env=ENV, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != marker:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"{name} did not reach {marker}: {line!r} {err}")
    return proc


def attempt(tmp_path: Path, state: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "try.py"
    script.write_text(TRY)
    return subprocess.run([sys.executable, str(script), str(state), str(timeout)], env=ENV,
                          capture_output=True, text=True, timeout=60, check=False)


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    out, err = proc.communicate(input="", timeout=60)  # closing stdin releases the holder
    return out, err


def test_second_process_waits_then_fails_with_the_holders_pid(tmp_path: Path) -> None:
    state = tmp_path / "state"
    holder = start(tmp_path, "hold", HOLD, str(state), marker="HELD")
    try:
        started = time.monotonic()
        result = attempt(tmp_path, state, 1.5)
        waited = time.monotonic() - started
        assert result.returncode == LockedError.exit_code == 75, result
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert f"(pid {holder.pid})" in result.stderr and str(state / "lock") in result.stderr
        assert waited >= 1.5  # it waited its bound before giving up
    finally:
        finish(holder)
    assert holder.returncode == 0
    result = attempt(tmp_path, state, 0)
    assert (result.returncode, result.stdout.strip()) == (0, "ACQUIRED"), result.stderr


def test_a_waiter_gets_the_lock_when_the_holder_finishes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    holder = start(tmp_path, "hold", HOLD, str(state), marker="HELD")
    script = tmp_path / "try.py"
    script.write_text(TRY)
    waiter = subprocess.Popen([sys.executable, str(script), str(state), "30"], env=ENV,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        assert waiter.poll() is None  # still waiting
    finally:
        finish(holder)
    out, err = waiter.communicate(timeout=30)
    assert (waiter.returncode, out.strip()) == (0, "ACQUIRED"), err


def test_a_killed_holders_lock_is_free_at_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    holder = start(tmp_path, "hold", HOLD, str(state), marker="HELD")
    holder.kill()
    holder.communicate(timeout=10)
    assert holder.returncode == -signal.SIGKILL
    assert (state / "lock").read_text().strip() == str(holder.pid)  # a stale pid is harmless
    result = attempt(tmp_path, state, 0)
    assert (result.returncode, result.stdout.strip()) == (0, "ACQUIRED"), result.stderr


def test_apply_never_recovers_the_journal_of_a_live_run(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        skip_or_fail("needs root (chown of staged files)")
    if shutil.which("named-checkconf") is None or not Path("/etc/bind/named.conf").exists():
        skip_or_fail("needs bind9 (named-checkconf, /etc/bind) installed")
    config = tmp_path / "agent.toml"
    config.write_text('[resolver]\nbackend = "static"\n')
    root = build_root(tmp_path / "root")
    journal = root / STATE.lstrip("/") / "journal" / "manifest.json"
    before = tree_snapshot(root, skip=STATE)
    # Blocked at the third journal manifest write (registering the second file): the first
    # host file is already replaced.
    holder = start(tmp_path, "apply", APPLY_AND_BLOCK, str(root), str(config),
                   "journal:manifest-renamed", marker="BLOCKED")
    try:
        mid_run = tree_snapshot(root)
        assert journal.exists() and tree_snapshot(root, skip=STATE) != before
        cli = subprocess.Popen([sys.executable, "-m", "dnscache_agent", "apply", "--root",
                                str(root), "--config", str(config)], env=ENV, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(3.0)
        assert cli.poll() is None, cli.communicate()
        # The live run's journal and half-written host are exactly as it left them.
        assert tree_snapshot(root) == mid_run
    finally:
        out, err = finish(holder)
    assert holder.returncode == 0 and "COMMITTED" in out, err
    out, err = cli.communicate(timeout=90)
    assert cli.returncode == 0, err
    assert "recovered" not in out
    assert out.startswith("nothing to do: the host already matches the plan"), out
