"""Whole-file replacement for the pacer's own small files (stats, warm list).

Why not `hostfs.atomic_write`: that one serves host configuration (backups, ownership,
SELinux labels, bind mounts) and reads the old bytes first; the pacer rewrites its stats file
every second under its own runtime directory, where none of that applies. A reader sees the
old file or the new one, never a partial one: write a temp file in the same directory, then
rename it over the target.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO


def replace_file(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = False) -> None:
    """Atomically replace `path` with `data` (creating its directory). `durable` fsyncs the
    file and the directory (the warm list must survive a power cut; the stats file under
    /run need not). Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), mode)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def read_source(source: str | Path | IO[bytes], cap: int) -> bytes | None:
    """`read_capped` for a path, or at most `cap` bytes of an open binary file (tests pass
    files). Raises ValueError when larger than `cap`, OSError on other read errors."""
    if isinstance(source, (str, Path)):
        return read_capped(Path(source), cap)
    data = source.read(cap + 1)
    if len(data) > cap:
        raise ValueError(f"larger than {cap} bytes")
    return data


def read_capped(path: Path, cap: int) -> bytes | None:
    """The file's bytes, or None when it does not exist. Raises ValueError when it is larger
    than `cap` bytes (read no further), OSError on other read errors."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(cap + 1)
    except FileNotFoundError:
        return None
    if len(data) > cap:
        raise ValueError(f"larger than {cap} bytes")
    return data
