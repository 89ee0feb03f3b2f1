"""Checkpoints, after certbot's reverter: a file is registered *before* it is changed, with a
byte-exact copy and its mode, owner and symlink target, in a manifest that is itself written
atomically. Two checkpoints exist:

- `original/`: the host before the agent first touched each path. `rollback` restores it, and
  planning reads it, so the plan is computed from the pre-agent state on every run.
- `journal/`: the transaction in flight. It is removed on commit; if it is still there at the
  next start (kill -9, power loss), it is restored first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from . import hostfs
from .errors import RollbackError
from .rootfs import Root

log = logging.getLogger(__name__)

STATE_DIR = "/var/lib/dnscache-agent"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Entry:
    path: str
    existed: bool
    symlink: str | None = None
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    sha256: str = ""
    backup: str = ""
    # Directories that did not exist either (deepest first): removed again on restore, so a
    # rollback leaves no empty directory behind.
    created_dirs: tuple[str, ...] = ()


class Checkpoint:
    """A directory holding backups and a manifest of registered host paths, plus free-form
    `meta` (e.g. whether named was running before)."""

    def __init__(self, root: Root, directory: Path) -> None:
        self.root = root
        self.dir = directory
        self.entries: dict[str, Entry] = {}
        self.meta: dict[str, Any] = {}
        manifest = directory / MANIFEST
        if manifest.exists():
            data = json.loads(manifest.read_text())
            self.entries = {
                e["path"]: Entry(**{**e, "created_dirs": tuple(e.get("created_dirs", ()))})
                for e in data.get("entries", [])}
            self.meta = data.get("meta", {})

    @property
    def exists(self) -> bool:
        return (self.dir / MANIFEST).exists()

    def has(self, path: str) -> bool:
        return path in self.entries

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {"entries": [asdict(e) for e in self.entries.values()], "meta": self.meta}
        hostfs.atomic_write(self.dir / MANIFEST,
                            json.dumps(data, indent=2, sort_keys=True).encode(),
                            hostfs.FileMeta(0o600, os.getuid(), os.getgid()))

    def set_meta(self, key: str, value: Any) -> None:
        self.meta[key] = value
        self._save()

    def register(self, path: str) -> Entry:
        """Record `path` as it is now (once; later calls keep the first record)."""
        if path in self.entries:
            return self.entries[path]
        host = self.root.path(path)
        meta = hostfs.meta_of(host)
        if meta is None:
            entry = Entry(path=path, existed=False, created_dirs=self._missing_dirs(path))
        elif host.is_symlink():
            entry = Entry(path=path, existed=True, symlink=os.readlink(host), mode=meta.mode,
                          uid=meta.uid, gid=meta.gid)
        else:
            data = host.read_bytes()
            name = f"{len(self.entries):03d}-" + path.strip("/").replace("/", "__")
            files = self.dir / "files"
            files.mkdir(parents=True, exist_ok=True, mode=0o700)
            hostfs.atomic_write(files / name, data, hostfs.FileMeta(0o600, 0, 0)
                                if os.getuid() == 0 else hostfs.FileMeta(0o600, os.getuid(),
                                                                         os.getgid()))
            entry = Entry(path=path, existed=True, mode=meta.mode, uid=meta.uid, gid=meta.gid,
                          sha256=hashlib.sha256(data).hexdigest(), backup=name)
        self.entries[path] = entry
        self._save()
        log.debug("checkpoint %s: registered %s", self.dir.name, path)
        return entry

    def _missing_dirs(self, path: str) -> tuple[str, ...]:
        out = []
        parent = PurePosixPath(path).parent
        while parent != parent.parent and not self.root.path(parent).exists():
            out.append(str(parent))
            parent = parent.parent
        return tuple(out)

    def forget(self, paths: list[str]) -> None:
        """Drop registrations (and their backups): the paths are no longer the agent's."""
        for path in paths:
            entry = self.entries.pop(path, None)
            if entry is not None and entry.backup:
                (self.dir / "files" / entry.backup).unlink(missing_ok=True)
        self._save()

    def original_bytes(self, path: str) -> bytes | None:
        """The registered content of `path` (None if it did not exist or was a symlink)."""
        entry = self.entries[path]
        if not entry.existed or entry.symlink is not None:
            return None
        return (self.dir / "files" / entry.backup).read_bytes()

    def restore(self) -> list[str]:
        """Put every registered path back byte for byte; returns the paths that changed.
        Raises RollbackError naming the first file that could not be restored."""
        changed = []
        for entry in reversed(list(self.entries.values())):
            host = self.root.path(entry.path)
            try:
                if not entry.existed:
                    if host.exists() or host.is_symlink():
                        hostfs.remove(host)
                        changed.append(entry.path)
                    for directory in entry.created_dirs:
                        try:
                            self.root.path(directory).rmdir()
                        except FileNotFoundError:
                            continue
                        except OSError:  # not empty: something else lives there now
                            break
                elif entry.symlink is not None:
                    if not host.is_symlink() or os.readlink(host) != entry.symlink:
                        hostfs.atomic_symlink(host, entry.symlink)
                        changed.append(entry.path)
                else:
                    data = self.original_bytes(entry.path)
                    assert data is not None
                    if hashlib.sha256(data).hexdigest() != entry.sha256:
                        raise RollbackError(f"{self.dir / 'files' / entry.backup}: backup of "
                                            f"{entry.path} is corrupt; not restoring it")
                    if host.is_symlink():
                        hostfs.remove(host)
                    meta = hostfs.FileMeta(entry.mode, entry.uid, entry.gid)
                    if hostfs.atomic_write(host, data, meta):
                        changed.append(entry.path)
                    # Only when they differ: an untouched file on a read-only mount (the
                    # write that failed) must not turn the rollback into an error.
                    if hostfs.meta_of(host) != meta:
                        os.chmod(host, entry.mode)
                        os.chown(host, entry.uid, entry.gid)
            except RollbackError:
                raise
            except Exception as exc:  # noqa: BLE001 - report which file, whatever failed
                raise RollbackError(f"{entry.path}: could not restore: {exc}") from exc
        return changed

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class StateStore:
    """The agent's state directory under the root."""

    def __init__(self, root: Root, state_dir: str = STATE_DIR) -> None:
        self.root = root
        self.base = root.path(state_dir)

    @property
    def original(self) -> Checkpoint:
        return Checkpoint(self.root, self.base / "original")

    @property
    def journal(self) -> Checkpoint:
        return Checkpoint(self.root, self.base / "journal")

    def pristine(self, path: str) -> bytes | None:
        """The pre-agent content of `path`: the original backup if the agent changed it."""
        original = self.original
        if original.has(path):
            return original.original_bytes(path)
        return self.root.read_bytes(path)

    def pristine_link(self, path: str) -> str | None:
        original = self.original
        if original.has(path):
            return original.entries[path].symlink
        return self.root.readlink(path)

    def clear(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
