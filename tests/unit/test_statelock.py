"""The state directory's lock in one process: flock locks belong to an open file, so two
`StateLock`s on one directory contend like two processes do. Two real processes are in
tests/integration/test_statelock_processes.py."""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
from pathlib import Path

import pytest

from dnscache_agent.errors import LockedError
from dnscache_agent.statelock import LOCK_NAME, StateLock, holder_pid


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_lock_file_is_private_and_names_the_holder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with StateLock(state) as lock:
        assert lock.held
        st = (state / LOCK_NAME).stat()
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert stat.S_IMODE(state.stat().st_mode) == 0o755
        assert holder_pid(state / LOCK_NAME) == os.getpid()
    assert not lock.held


def test_second_caller_waits_a_bounded_time_then_gets_a_one_line_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    clock = FakeClock()
    with StateLock(state):
        other = StateLock(state, clock=clock, sleep=clock.sleep)
        with pytest.raises(LockedError) as exc:
            other.acquire(timeout=2.0)
    text = str(exc.value)
    assert exc.value.exit_code == 75
    assert "\n" not in text
    assert f"(pid {os.getpid()})" in text and str(state / LOCK_NAME) in text
    assert "waited 2s" in text
    assert 1.9 <= sum(clock.slept) <= 2.0 + 1e-9 and len(clock.slept) >= 19
    assert not other.held


def test_timeout_zero_tries_once(tmp_path: Path) -> None:
    clock = FakeClock()
    with StateLock(tmp_path), pytest.raises(LockedError):
        StateLock(tmp_path, clock=clock, sleep=clock.sleep).acquire(timeout=0)
    assert clock.slept == []


def test_lock_is_free_again_after_release(tmp_path: Path) -> None:
    first = StateLock(tmp_path)
    first.acquire(0)
    first.release()
    second = StateLock(tmp_path)
    second.acquire(0)
    second.release()


def test_release_removes_a_state_directory_that_holds_only_the_lock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with StateLock(state):
        pass
    assert not state.exists()  # a rollback with nothing to do leaves nothing behind
    with StateLock(state):
        (state / "original").mkdir()
    assert sorted(p.name for p in state.iterdir()) == ["lock", "original"]


def test_a_waiter_never_shares_the_lock_when_the_holder_removes_the_directory(
        tmp_path: Path) -> None:
    """rollback clears the state directory (lock file included) while holding the lock. A
    waiter that opened the old lock file must not count the lock on that removed file as
    the lock: it retries on the new file, which a third caller may hold."""
    state = tmp_path / "state"
    holder = StateLock(state)
    holder.acquire(0)
    third_holds = threading.Event()

    polling = threading.Event()

    def gated_sleep(seconds: float) -> None:
        # The waiter keeps polling the old file only until the third caller holds the new
        # one; without the gate it could win the new file first, and the test would race.
        polling.set()
        third_holds.wait(10)
        time.sleep(seconds)

    waiter = StateLock(state, sleep=gated_sleep)
    got = threading.Event()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            waiter.acquire(timeout=20)
            got.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    assert polling.wait(10)  # the waiter found the old file locked, and polls
    try:
        # The waiter is polling on the old lock file; the holder removes everything...
        shutil.rmtree(state)
        # ...and a third caller takes the lock on a new file before the holder releases.
        third = StateLock(state)
        third.acquire(0)
        third_holds.set()
        holder.release()
        assert not got.wait(0.5), "the waiter took a lock on the removed file"
        third.release()
        assert got.wait(10)
    finally:
        thread.join(20)
    assert not errors
    assert waiter.held and holder_pid(state / LOCK_NAME) == os.getpid()
    assert os.stat(state / LOCK_NAME).st_ino == os.fstat(waiter._fd or -1).st_ino
    waiter.release()


def test_unwritable_state_directory_is_a_state_error(tmp_path: Path) -> None:
    from dnscache_agent.errors import StateError

    (tmp_path / "file").write_text("not a directory\n")
    with pytest.raises(StateError, match="cannot create the lock file"):
        StateLock(tmp_path / "file" / "state").acquire(0)
