"""Checkpoints, after certbot's reverter: a file is registered *before* it is changed, with a
byte-exact copy and its mode, owner and symlink target, in a manifest that is itself written
atomically. Two checkpoints exist:

- `original/`: the host before the agent first touched each path. `rollback` restores it, and
  planning reads it, so the plan is computed from the pre-agent state on every run.
- `journal/`: the transaction in flight. It is discarded on commit; if it is still there at the
  next start (kill -9, power loss), it is restored first.

Crash safety, in the order things reach the disk:
1. a backup is written and fsynced (file and directory) before the manifest names it;
2. the manifest is replaced atomically and fsynced before the host file is touched;
3. discarding a checkpoint (the commit) renames its directory to a tombstone in one atomic
   step, fsyncs the parent, then deletes the tombstone. A crash leaves the journal whole (the
   next run restores it: all old) or a tombstone (ignored, then swept: all new), never a
   journal whose manifest names backups that are gone.
Forgetting a path saves the manifest without it before its backup is deleted, for the same
reason.

A damaged state directory (truncated, foreign or non-UTF-8 manifest, an entry with missing or
mistyped fields, a missing or corrupt backup) raises `StateError` with one line naming the file
and what to do; every read of a backup checks its sha256, `pristine()` included, so a corrupt
backup can neither be restored nor become the base of a plan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from . import hostfs
from .errors import DnscacheError, RollbackError, StateError
from .hostfs import Step
from .rootfs import Root

log = logging.getLogger(__name__)

STATE_DIR = "/var/lib/dnscache-agent"
MANIFEST = "manifest.json"
#: Written into every manifest; a manifest without it (or with another value) is foreign,
#: except the unmarked form earlier versions wrote, recognised by its `entries` list.
FORMAT = "dnscache-agent-checkpoint/1"


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


# --- reading a manifest (pure: bytes in, entries out, StateError on anything else) ---------

_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "path": (str,), "existed": (bool,), "symlink": (str, type(None)), "mode": (int,),
    "uid": (int,), "gid": (int,), "sha256": (str,), "backup": (str,), "created_dirs": (list,),
}
_REQUIRED = ("path", "existed")


def damaged(where: Path | str, what: str, directory: Path | str) -> StateError:
    """The one line for a damaged checkpoint: the file, what is wrong, what to do."""
    return StateError(f"{where}: {what}; the agent's state in {directory} is damaged: restore "
                      f"it from a backup, or move it aside and rerun (rollback to the "
                      f"pre-agent state is then impossible)")


def _host_path(value: object) -> bool:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        return False
    return ".." not in PurePosixPath(value).parts


def _entry(raw: object, index: int, manifest: Path, directory: Path) -> Entry:
    def bad(what: str) -> StateError:
        return damaged(manifest, f"entry {index}: {what}", directory)

    if not isinstance(raw, dict):
        raise bad("not an object")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise bad(f"missing field {', '.join(missing)}")
    unknown = sorted(set(raw) - set(_FIELD_TYPES))
    if unknown:
        raise bad(f"unknown field {', '.join(unknown)} (written by a newer agent?)")
    for key, value in raw.items():
        negative = isinstance(value, int) and not isinstance(value, bool) and value < 0
        if not isinstance(value, _FIELD_TYPES[key]) or (
                key in ("mode", "uid", "gid") and (isinstance(value, bool) or negative)):
            raise bad(f"{key} is {value!r}")
    if not _host_path(raw["path"]):
        raise bad(f"path {raw['path']!r} is not an absolute host path")
    dirs = raw.get("created_dirs", [])
    if not all(_host_path(d) for d in dirs):
        raise bad(f"created_dirs {dirs!r} holds a path that is not an absolute host path")
    entry = Entry(**{**raw, "created_dirs": tuple(dirs)})
    if entry.existed and entry.symlink is None:
        if not entry.backup or not entry.sha256:
            raise bad(f"{entry.path} existed but has no backup or sha256")
        if "/" in entry.backup or entry.backup in (".", ".."):
            raise bad(f"backup name {entry.backup!r} is not a file name")
    return entry


def parse_manifest(data: bytes, manifest: Path, directory: Path
                   ) -> tuple[dict[str, Entry], dict[str, Any]]:
    """Entries and meta of a manifest's bytes. Raises StateError (one line, naming
    `manifest`) for anything the agent did not write."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise damaged(manifest, f"not UTF-8 (byte {exc.start})", directory) from None
    if not text.strip():
        raise damaged(manifest, "empty (truncated?)", directory)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise damaged(manifest, f"not valid JSON at line {exc.lineno} column {exc.colno} "
                      "(truncated?)", directory) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise damaged(manifest, "not a dnscache-agent checkpoint manifest", directory)
    if doc.get("format", FORMAT) != FORMAT:
        raise damaged(manifest, f"format {doc.get('format')!r}, expected {FORMAT!r}",
                      directory)
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise damaged(manifest, "meta is not an object", directory)
    entries: dict[str, Entry] = {}
    for i, raw in enumerate(doc["entries"]):
        entry = _entry(raw, i, manifest, directory)
        if entry.path in entries:
            raise damaged(manifest, f"entry {i}: {entry.path} is registered twice", directory)
        entries[entry.path] = entry
    return entries, meta


#: The group that may read the checkpoints: the daemon's user. The daemon plans (the pristine
#: files it plans from are here) and judges modes from the records, without being root; it
#: can read them, never change them (they are what the privileged repair restores from).
READER_GROUP = "dnscache-agent"


def reader_gid() -> int:
    """The gid checkpoint files get: READER_GROUP's when it exists and we are root, else
    our own (root's group on a host without the daemon's user: root-only in effect)."""
    if os.getuid() != 0:
        return os.getgid()
    gid = hostfs.gid_for(READER_GROUP)
    return gid if gid else os.getgid()


class Checkpoint:
    """A directory holding backups and a manifest of registered host paths, plus free-form
    `meta` (e.g. whether named was running before). Raises StateError when the manifest on
    disk is damaged. `step` (tests only) is called after each durable step."""

    def __init__(self, root: Root, directory: Path, *, step: Step | None = None) -> None:
        self.root = root
        self.dir = directory
        self.step = step
        self.entries: dict[str, Entry] = {}
        self.meta: dict[str, Any] = {}
        manifest = directory / MANIFEST
        try:
            data = manifest.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise damaged(manifest, f"cannot read: {exc.strerror}", directory) from None
        self.entries, self.meta = parse_manifest(data, manifest, directory)

    def _step(self, name: str) -> None:
        if self.step:
            self.step(f"{self.dir.name}:{name}")

    @property
    def exists(self) -> bool:
        return (self.dir / MANIFEST).exists()

    def has(self, path: str) -> bool:
        return path in self.entries

    def _own_meta(self) -> hostfs.FileMeta:
        return hostfs.FileMeta(0o640, os.getuid(), reader_gid())

    def _mkdir(self, directory: Path) -> None:
        """A checkpoint directory: root's, readable by the daemon's group (mode 0750)."""
        hostfs.mkdir_durable(directory, mode=0o750)
        if os.getuid() == 0:
            os.chown(directory, 0, reader_gid())
        os.chmod(directory, 0o750)

    def _save(self) -> None:
        self._mkdir(self.dir)
        data = {"format": FORMAT, "entries": [asdict(e) for e in self.entries.values()],
                "meta": self.meta}
        hostfs.atomic_write(self.dir / MANIFEST,
                            json.dumps(data, indent=2, sort_keys=True).encode(),
                            self._own_meta(),
                            step=lambda s: self._step(f"manifest-{s}"))

    def set_meta(self, key: str, value: Any) -> None:
        self.meta[key] = value
        self._save()

    def register(self, path: str) -> Entry:
        """Record `path` as it is now (once; later calls keep the first record). The backup
        is on disk before the manifest names it."""
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
            self._mkdir(files)
            hostfs.atomic_write(files / name, data, self._own_meta(), label_xattrs=())
            self._step(f"backup-synced:{path}")
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
        """Drop registrations (and their backups): the paths are no longer the agent's. The
        manifest stops naming a backup before the backup is deleted."""
        dropped = [e for e in (self.entries.pop(p, None) for p in paths) if e is not None]
        self._save()
        for entry in dropped:
            if entry.backup:
                (self.dir / "files" / entry.backup).unlink(missing_ok=True)

    def original_bytes(self, path: str) -> bytes | None:
        """The registered content of `path` (None if it did not exist or was a symlink),
        checked against its sha256. Raises StateError for a missing or corrupt backup."""
        entry = self.entries[path]
        if not entry.existed or entry.symlink is not None:
            return None
        backup = self.dir / "files" / entry.backup
        try:
            data = backup.read_bytes()
        except FileNotFoundError:
            raise damaged(backup, f"backup of {entry.path} is missing", self.dir) from None
        except OSError as exc:
            raise damaged(backup, f"cannot read the backup of {entry.path}: {exc.strerror}",
                          self.dir) from None
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise damaged(backup, f"backup of {entry.path} is corrupt; not restoring it or "
                          "planning from it (sha256 mismatch)", self.dir)
        return data

    def restore(self) -> list[str]:
        """Put every registered path back byte for byte; returns the paths that changed.
        Every backup is checked before the first file is touched, so a damaged checkpoint
        restores nothing. Raises StateError for a damaged checkpoint, RollbackError naming
        the first file that could not be restored."""
        backups = {e.path: self.original_bytes(e.path) for e in self.entries.values()}
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
                    data = backups[entry.path]
                    assert data is not None
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
            except DnscacheError as exc:
                if isinstance(exc, RollbackError):
                    raise
                raise RollbackError(f"{entry.path}: could not restore: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - report which file, whatever failed
                raise RollbackError(f"{entry.path}: could not restore: {exc}") from exc
            self._step(f"restored:{entry.path}")
        return changed

    def discard(self) -> None:
        """Remove the checkpoint atomically (the commit of a journal): see the module
        docstring. Tombstones of earlier interrupted discards are swept first."""
        hostfs.sweep_tombstones(self.dir.parent)
        hostfs.discard_tree(self.dir, step=lambda s: self._step(f"discard-{s}"))


class StateStore:
    """The agent's state directory under the root. `step` (tests only) is passed to each
    checkpoint and called after each durable step."""

    def __init__(self, root: Root, state_dir: str = STATE_DIR, *,
                 step: Step | None = None) -> None:
        self.root = root
        self.state_dir = state_dir
        self.base = root.path(state_dir)
        self.step = step

    @property
    def original(self) -> Checkpoint:
        return Checkpoint(self.root, self.base / "original", step=self.step)

    @property
    def journal(self) -> Checkpoint:
        return Checkpoint(self.root, self.base / "journal", step=self.step)

    def share_with_readers(self) -> None:
        """Give READER_GROUP read access to the checkpoints (0750 directories, 0640 files):
        for state written before the daemon's user existed. The lock file stays root's."""
        if os.getuid() != 0 or not self.base.is_dir():
            return
        gid = reader_gid()
        os.chmod(self.base, 0o755)
        for name in ("original", "journal"):
            top = self.base / name
            if not top.is_dir():
                continue
            for path in [top, *top.rglob("*")]:
                if path.is_symlink():
                    continue
                os.chown(path, 0, gid)
                os.chmod(path, 0o750 if path.is_dir() else 0o640)

    def pristine(self, path: str) -> bytes | None:
        """The pre-agent content of `path`: the original backup if the agent changed it
        (sha256-checked: StateError if missing or corrupt)."""
        original = self.original
        if original.has(path):
            return original.original_bytes(path)
        return self.root.read_bytes(path)

    def pristine_link(self, path: str) -> str | None:
        original = self.original
        if original.has(path):
            return original.entries[path].symlink
        return self.root.readlink(path)

    def sweep(self) -> list[Path]:
        """Finish deleting checkpoints (or a whole state directory) whose discard was
        interrupted: the tombstones `hostfs.discard_tree` leaves."""
        return (hostfs.sweep_tombstones(self.base)
                + hostfs.sweep_tombstones(self.base.parent, self.base.name))

    def clear(self) -> None:
        """Remove all state once a rollback has restored the host. Each checkpoint goes
        atomically (a tombstone rename), so a crash here leaves either a complete checkpoint
        (the next rollback restores it again, a no-op) or none; never a manifest without its
        backups. The directory itself goes when nothing else is left in it; a held lock file
        stays until `StateLock.release` removes it with the directory."""
        self.sweep()
        for name in ("journal", "original"):
            hostfs.discard_tree(self.base / name, step=self._prefixed(f"{name}:discard-"))
        try:
            self.base.rmdir()
        except FileNotFoundError:
            return
        except OSError:
            return  # not empty: the lock file of the run that holds it
        hostfs.fsync_dir(self.base.parent)
        if self.step:
            self.step("state-removed")

    def _prefixed(self, prefix: str) -> Step | None:
        step = self.step
        if step is None:
            return None
        return lambda name: step(prefix + name)
