"""One change at a time: an exclusive `flock` on `<state_dir>/lock` serialises `apply`,
`rollback` and repair, and journal recovery runs only while holding it, so it never touches
the journal of a run that is still alive (the kernel drops a dead holder's lock at once, so a
kill -9 never leaves a stale lock behind).

The lock file holds the holder's pid, for the message a waiting caller gets. A rollback may
remove the whole state directory (lock file included) while holding the lock; a waiter that
then wins the lock on the removed file notices (the path no longer names the inode it locked)
and tries again on the new one, so two holders can never coexist.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from . import hostfs
from .errors import LockedError, StateError

log = logging.getLogger(__name__)

LOCK_NAME = "lock"
#: How long `apply`/`rollback` wait for another run before giving up (exit 75, EX_TEMPFAIL).
#: A transaction takes seconds (named-checkconf, a reload, two health checks); a minute
#: covers a slow one without hanging a provisioning run.
DEFAULT_TIMEOUT = 60.0
POLL_SECONDS = 0.1


def holder_pid(lock_file: Path) -> int | None:
    """The pid the current holder wrote into `lock_file` (None when unknown)."""
    try:
        text = lock_file.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class StateLock:
    """An exclusive lock on a state directory. Use `acquire`/`release`, or `with` (which
    acquires with the timeout given here). `clock` and `sleep` are injectable for tests."""

    def __init__(self, state_dir: Path, *, timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_NAME
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock, waiting at most `timeout` seconds (0: try once). Raises LockedError
        naming the holder's pid when another process keeps it, StateError when the lock file
        cannot be created."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this object")
        wait = self.timeout if timeout is None else timeout
        deadline = self.clock() + wait
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise StateError(f"{self.path}: cannot lock: {exc.strerror}") from None
                if self.clock() >= deadline:
                    raise self._locked_error(wait) from None
                self.sleep(min(POLL_SECONDS, max(deadline - self.clock(), 0.0)))
                continue
            if not self._still_named(fd):
                os.close(fd)  # the holder removed the state directory: lock the new file
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd = fd
            log.debug("locked %s", self.path)
            return

    def _open(self) -> int:
        try:
            # 0755: the daemon's user reads the checkpoints below (each 0750, its group).
            hostfs.mkdir_durable(self.state_dir, mode=0o755)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot create the lock file: {exc.strerror}; "
                             "the agent must run as root (or the state directory's owner)"
                             ) from None
        return fd

    def _still_named(self, fd: int) -> bool:
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def _locked_error(self, waited: float) -> LockedError:
        pid = holder_pid(self.path)
        who = f"pid {pid}" if pid is not None else "another process"
        return LockedError(f"{self.path}: another dnscache-agent run ({who}) is changing this "
                           f"host; waited {waited:g}s; try again when it has finished")

    def release(self) -> None:
        """Drop the lock. A state directory that holds nothing but the lock file and the
        tombstones of interrupted discards (a rollback with nothing left to do) is removed
        first, while still locked, so the agent leaves nothing behind."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            left = [n for n in os.listdir(self.state_dir)
                    if not n.startswith(hostfs.TOMBSTONE_PREFIX)]
            if self._still_named(fd) and left == [LOCK_NAME]:
                hostfs.sweep_tombstones(self.state_dir)
                os.unlink(self.path)
                self.state_dir.rmdir()
        except OSError:
            pass  # something else appeared meanwhile: keep the directory
        finally:
            os.close(fd)
        log.debug("unlocked %s", self.path)

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
