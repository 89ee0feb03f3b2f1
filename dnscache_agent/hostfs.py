"""Writing host files safely: a temp file in the same directory, fsync, chmod/chown, rename,
fsync the directory. Unchanged bytes are not rewritten. A failed write (ENOSPC, read-only
filesystem) leaves the original untouched and removes the temp file."""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ApplyError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileMeta:
    """What must be put back besides the bytes."""

    mode: int
    uid: int
    gid: int


def meta_of(path: Path) -> FileMeta | None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    return FileMeta(mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, meta: FileMeta) -> bool:
    """Replace `path` with `data` atomically; returns False when the bytes were already there.

    If `path` is a bind mount (containers mount /etc/resolv.conf; rename over it fails with
    EBUSY), fall back to rewriting it in place: the caller has already backed it up.
    Raises ApplyError naming the path on any I/O failure.
    """
    if not path.is_symlink():
        try:
            if path.read_bytes() == data:
                return False
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ApplyError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".dnscache-tmp",
                                   dir=path.parent)
    except OSError as exc:
        raise ApplyError(f"{path}: cannot create a temporary file: {exc.strerror}") from None
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, meta.mode)
            os.chown(tmp, meta.uid, meta.gid)
            os.rename(tmp, path)
        except OSError as exc:
            if exc.errno in (errno.EBUSY, errno.EXDEV) and path.is_file():
                _rewrite_in_place(path, data, meta)
                log.info("%s is a mount point; rewrote it in place", path)
                return True
            raise ApplyError(f"{path}: cannot write: {exc.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return True


def _rewrite_in_place(path: Path, data: bytes, meta: FileMeta) -> None:
    try:
        with open(path, "r+b") as fh:
            fh.write(data)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(path, meta.mode)
    except OSError as exc:
        raise ApplyError(f"{path}: cannot write: {exc.strerror}") from None


def atomic_symlink(path: Path, target: str) -> None:
    """Point `path` at `target` atomically (a temp link renamed over it)."""
    tmp = path.with_name(f".{path.name}.dnscache-link")
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)
        os.rename(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if tmp.is_symlink():
            tmp.unlink()
        raise ApplyError(f"{path}: cannot restore symlink to {target}: {exc.strerror}") from None


def remove(path: Path) -> None:
    try:
        path.unlink()
        _fsync_dir(path.parent)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ApplyError(f"{path}: cannot remove: {exc.strerror}") from None
