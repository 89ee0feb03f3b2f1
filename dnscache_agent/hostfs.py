"""Writing host files safely: a temp file in the same directory, fsync, chmod/chown, the target's
SELinux label, rename, fsync the directory. Unchanged bytes are not rewritten. A failed write
(ENOSPC, read-only filesystem) leaves the original untouched and removes the temp file.

Every multi-step write takes an optional `step` callback, called with a short name after each
durable step. Production code passes none; the crash tests pass one that kills the process there,
so each step's crash is exercised for real (tests/integration/test_commit_crash.py)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ApplyError

log = logging.getLogger(__name__)

#: Called after each durable step of a write with the step's name (see the module docstring).
Step = Callable[[str], None]

#: Extended attributes that carry a file's security label. mkstemp + rename would give the new
#: file the directory's default label (etc_t), not the one the policy gave the old file
#: (net_conf_t for resolv.conf, named_conf_t for bind's config), so named could no longer read
#: its config under an enforcing policy.
LABEL_XATTRS: tuple[str, ...] = ("security.selinux",)

#: getxattr errors that mean "no label here": the attribute is unset, or the filesystem or
#: platform has no extended attributes.
_NO_LABEL = {errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT}


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


def gid_for(group: str | None) -> int:
    """The numeric id of `group` as the transaction assigns it (0 when unset or unknown)."""
    if not group:
        return 0
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return 0


def fsync_dir(directory: Path) -> None:
    """Make a rename, create or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_fsync_dir = fsync_dir  # the older private name


def mkdir_durable(directory: Path, mode: int = 0o700) -> None:
    """Create `directory` (and its missing parents) so that a crash cannot lose the entry:
    each new directory's parent is fsynced."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for new in reversed(missing):
        try:
            new.mkdir(mode=mode)
        except FileExistsError:
            continue
        fsync_dir(new.parent)


def read_labels(path: Path, names: tuple[str, ...] = LABEL_XATTRS) -> dict[str, bytes]:
    """The label attributes `path` carries (empty without SELinux or xattr support)."""
    if not hasattr(os, "getxattr"):
        return {}
    out = {}
    for name in names:
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in _NO_LABEL:
                continue
            raise ApplyError(f"{path}: cannot read its {name} label: {exc.strerror}") from None
    return out


def write_labels(path: Path, target: Path, labels: dict[str, bytes]) -> None:
    """Put `labels` (read from `target`) on `path`, the temp file about to replace it.
    Raises ApplyError naming `target`: a file named cannot read under its new label must not
    be swapped in."""
    for name, value in labels.items():
        try:
            os.setxattr(path, name, value, follow_symlinks=False)
        except OSError as exc:
            label = value.rstrip(b"\0").decode(errors="replace")
            raise ApplyError(f"{target}: cannot keep its {name} label {label}: "
                             f"{exc.strerror}") from None


def atomic_write(path: Path, data: bytes, meta: FileMeta, *, step: Step | None = None,
                 label_xattrs: tuple[str, ...] = LABEL_XATTRS) -> bool:
    """Replace `path` with `data` atomically; returns False when the bytes were already there.

    The target's label (`label_xattrs`, SELinux's by default) is copied onto the temp file
    before the rename, so the replacement keeps it. If `path` is a bind mount (containers
    mount /etc/resolv.conf; rename over it fails with EBUSY), fall back to rewriting it in
    place: the caller has already backed it up. `step` is called with "tmp-synced" (temp file
    complete and fsynced, not yet renamed) and "renamed" (rename and directory fsynced).
    Raises ApplyError naming the path on any I/O failure.
    """
    labels: dict[str, bytes] = {}
    if not path.is_symlink():
        try:
            if path.read_bytes() == data:
                return False
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ApplyError(f"{path}: cannot read: {exc.strerror}") from None
        if path.exists():
            labels = read_labels(path, label_xattrs)
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
                os.chmod(tmp, meta.mode)
                os.chown(tmp, meta.uid, meta.gid)
                write_labels(Path(tmp), path, labels)
                os.fsync(fh.fileno())
            if step:
                step("tmp-synced")
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
    fsync_dir(path.parent)
    if step:
        step("renamed")
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
        fsync_dir(path.parent)
    except OSError as exc:
        if tmp.is_symlink():
            tmp.unlink()
        raise ApplyError(f"{path}: cannot restore symlink to {target}: {exc.strerror}") from None


def remove(path: Path) -> None:
    try:
        path.unlink()
        fsync_dir(path.parent)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ApplyError(f"{path}: cannot remove: {exc.strerror}") from None


#: Name prefix of a directory that is being deleted. Renaming is atomic, deleting a tree is
#: not: whatever holds this prefix is garbage, never state.
TOMBSTONE_PREFIX = ".discarded-"


def discard_tree(directory: Path, *, step: Step | None = None) -> None:
    """Delete `directory` so that a crash at any moment leaves either all of it under its own
    name or none of it: rename it to a tombstone (fsync the parent), then delete the
    tombstone. `step` is called with "tombstoned" and "deleted"."""
    if not directory.exists():
        return
    tomb = directory.with_name(f"{TOMBSTONE_PREFIX}{directory.name}-{os.getpid()}-"
                               f"{os.urandom(3).hex()}")
    try:
        os.rename(directory, tomb)
        fsync_dir(directory.parent)
    except OSError as exc:
        raise ApplyError(f"{directory}: cannot discard: {exc.strerror}") from None
    if step:
        step("tombstoned")
    shutil.rmtree(tomb, ignore_errors=True)
    fsync_dir(directory.parent)
    if step:
        step("deleted")


def sweep_tombstones(directory: Path, name: str = "") -> list[Path]:
    """Finish deleting what a killed `discard_tree` left in `directory` (only tombstones of
    `name` when given); returns them."""
    prefix = f"{TOMBSTONE_PREFIX}{name}-" if name else TOMBSTONE_PREFIX
    try:
        found = [p for p in directory.iterdir() if p.name.startswith(prefix)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    for tomb in found:
        shutil.rmtree(tomb, ignore_errors=True)
        log.info("removed %s, left by an interrupted run", tomb)
    if found:
        fsync_dir(directory)
    return found
