"""Root-aware paths: every host path goes through a `Root`, so `--root DIR` relocates all reads and
writes, and tests and chroot image builds never touch the machine they run on."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Root:
    """A filesystem root. `Root("/")` is the live host; anything else is a staged tree."""

    base: Path = Path("/")

    @property
    def is_live(self) -> bool:
        """True when paths resolve on the running host, so services may be touched."""
        return self.base.resolve() == Path("/")

    def path(self, host_path: str | PurePosixPath) -> Path:
        """Map an absolute host path (as the platform profile names it) into this root."""
        p = PurePosixPath(host_path)
        if not p.is_absolute():
            raise ValueError(f"host paths are absolute, got {host_path!r}")
        return self.base.joinpath(*p.parts[1:])

    def resolve(self, host_path: str | PurePosixPath, max_links: int = 16) -> Path:
        """Like `path`, but symlinks are followed inside this root: an absolute link in a
        staged tree (/etc/resolv.conf -> /run/...) must not escape to the build host."""
        current = PurePosixPath(host_path)
        for _ in range(max_links):
            p = self.path(current)
            if not p.is_symlink():
                return p
            target = PurePosixPath(os.readlink(p))
            current = target if target.is_absolute() else current.parent / target
            current = PurePosixPath(os.path.normpath(str(current)))
        raise OSError(f"{host_path}: too many levels of symbolic links")

    def read_bytes(self, host_path: str | PurePosixPath) -> bytes | None:
        """The file's bytes (links followed inside the root), or None when it does not
        exist."""
        try:
            return self.resolve(host_path).read_bytes()
        except (FileNotFoundError, NotADirectoryError):  # a file where a directory should be
            return None

    def read_text(self, host_path: str | PurePosixPath) -> str | None:
        data = self.read_bytes(host_path)
        return None if data is None else data.decode("utf-8", errors="replace")

    def exists(self, host_path: str | PurePosixPath) -> bool:
        return self.path(host_path).exists() or self.path(host_path).is_symlink()

    def readlink(self, host_path: str | PurePosixPath) -> str | None:
        """The symlink target as written (not resolved), or None when not a symlink."""
        p = self.path(host_path)
        return str(p.readlink()) if p.is_symlink() else None
